"""T5 v1.1 checkpoints: the HF safetensors layout, loading errors, and (when transformers
is installed) numerical equivalence with transformers' T5EncoderModel."""

import importlib.util
import json
import os

import jax
import ml_dtypes
import numpy as np
import pytest
from flax import traverse_util

from stunet import t5
from stunet.text import TextEncoder


_spec = importlib.util.spec_from_file_location(
    't5_equivalence', os.path.join(os.path.dirname(__file__), '..', 'experiments',
                                   't5_equivalence.py'))
eq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(eq)


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('t5'))
  return d, eq.random_checkpoint(d)


def _flat(tree):
  return traverse_util.flatten_dict(tree, sep='/')


def test_round_trip_and_encoder_output(ckpt):
  d, params = ckpt
  arch, loaded = t5.load_t5(d)
  assert arch == eq.ARCH
  want = _flat(params)
  assert set(_flat(loaded)) == set(want)
  for k, v in _flat(loaded).items():
    np.testing.assert_array_equal(v, want[k])
  tokens = np.array([[5, 9, 1, 0]], np.int32)
  out = jax.jit(TextEncoder(**arch).apply)({'params': loaded}, tokens, tokens > 0)
  assert out.shape == (1, 4, arch['width']) and float(np.abs(out[0, 3]).max()) == 0.


def test_sharded_bf16_checkpoint_loads(ckpt, tmp_path):
  d, _ = ckpt
  src = t5.SafetensorsFile(os.path.join(d, 'model.safetensors'))
  names = src.names()
  half = len(names) // 2
  cast = lambda n: np.asarray(src.get(n)).astype(ml_dtypes.bfloat16)
  t5.save_safetensors(str(tmp_path / 'a.safetensors'), {n: cast(n) for n in names[:half]})
  # An encoder-only export: the embedding under encoder.embed_tokens, not shared.
  rest = {('encoder.embed_tokens.weight' if n == 'shared.weight' else n): cast(n)
          for n in names[half:]}
  t5.save_safetensors(str(tmp_path / 'b.safetensors'), rest)
  weight_map = {n: 'a.safetensors' for n in names[:half]}
  weight_map.update({n: 'b.safetensors' for n in rest})
  (tmp_path / 'model.safetensors.index.json').write_text(json.dumps({'weight_map': weight_map}))
  (tmp_path / 'config.json').write_text(open(os.path.join(d, 'config.json')).read())
  _, loaded = t5.load_t5(str(tmp_path))
  _, full = t5.load_t5(d)
  for k, v in _flat(full).items():
    np.testing.assert_allclose(_flat(loaded)[k], v, rtol=1e-2, atol=1e-2)


def test_wrong_paths_and_formats_are_refused(ckpt, tmp_path):
  d, _ = ckpt
  with pytest.raises(FileNotFoundError, match='nothing is downloaded'):
    t5.load_t5(str(tmp_path / 'nope'))
  with pytest.raises(FileNotFoundError, match='config.json is missing'):
    t5.load_t5(str(tmp_path))
  cfg = json.load(open(os.path.join(d, 'config.json')))
  (tmp_path / 'config.json').write_text(json.dumps(cfg))
  (tmp_path / 'pytorch_model.bin').write_bytes(b'x')
  with pytest.raises(FileNotFoundError, match='safe_serialization'):
    t5.load_t5(str(tmp_path))
  (tmp_path / 'model.safetensors').write_bytes(b'\xff' * 64)
  with pytest.raises(ValueError, match='not a readable .safetensors'):
    t5.load_t5(str(tmp_path))
  os.symlink(os.path.join(d, 'model.safetensors'), tmp_path / 'real.safetensors')
  os.remove(tmp_path / 'model.safetensors')
  (tmp_path / 'config.json').write_text(json.dumps({**cfg, 'num_layers': 4}))
  with pytest.raises(ValueError, match=r'encoder\.block\.3.*missing'):
    t5.load_t5(str(tmp_path))
  (tmp_path / 'config.json').write_text(json.dumps({**cfg, 'feed_forward_proj': 'relu'}))
  with pytest.raises(ValueError, match='v1.1'):
    t5.load_t5(str(tmp_path))


def test_matches_transformers_t5_encoder():
  """Optional: needs torch + transformers (not project dependencies)."""
  pytest.importorskip('torch')
  pytest.importorskip('transformers')
  diff, scale = eq.max_abs_difference(seed=0)
  assert diff < 1e-4 * max(1., scale), diff
