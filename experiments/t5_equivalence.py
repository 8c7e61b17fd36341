r"""Checks stunet's T5 v1.1 encoder against HuggingFace transformers' T5EncoderModel.

A small T5 v1.1 with random weights (d_kv * heads != d_model, a short max_distance
so the logarithmic position buckets are used, random norm scales) is written in the
HuggingFace layout by stunet.t5.save_checkpoint, read back by transformers (PyTorch)
and by stunet.t5.load_t5, and both encode the same padded token batch:

  pip install torch transformers   # not project dependencies; only for this check
  python experiments/t5_equivalence.py

prints the max abs difference of the embeddings at the valid positions.
tests/test_t5.py runs it when transformers is installed.
"""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('HF_HUB_OFFLINE', '1')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from flax import linen as nn  # pylint: disable=wrong-import-position

from stunet import t5  # pylint: disable=wrong-import-position
from stunet.text import TextEncoder  # pylint: disable=wrong-import-position

ARCH = dict(vocab_size=101, width=48, num_layers=3, num_heads=4, head_dim=16, mlp_dim=96,
            num_buckets=32, max_distance=20, eps=1e-6)


def random_checkpoint(directory: str, seed: int = 0) -> dict:
  """Writes a random T5 v1.1 encoder (HF layout) to directory; returns its params."""
  enc = TextEncoder(**ARCH)
  tokens = np.zeros((1, 8), np.int32)
  params = nn.meta.unbox(jax.jit(enc.init)(jax.random.key(seed), tokens, tokens >= 0))
  params = params['params']
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: np.asarray(x) * (1 + 0.2 * rng.standard_normal(x.shape, np.float32))
      if 'scale' in jax.tree_util.keystr(p) else np.asarray(x), params)
  t5.save_checkpoint(directory, ARCH, params)
  return params


def max_abs_difference(seed: int = 0, length: int = 24) -> tuple[float, float]:
  """(max |ours - transformers|, max |transformers|) over the valid positions."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as d:
    random_checkpoint(d, seed)
    ref = transformers.T5EncoderModel.from_pretrained(d).eval()
    arch, params = t5.load_t5(d)
  rng = np.random.default_rng(seed + 1)
  lengths = np.array([length, length // 2, 3, 1])
  tokens = rng.integers(2, ARCH['vocab_size'], (len(lengths), length)).astype(np.int32)
  mask = np.arange(length)[None] < lengths[:, None]
  tokens = np.where(mask, tokens, 0)
  ours = np.asarray(jax.jit(TextEncoder(**arch).apply)({'params': params}, tokens, mask))
  with torch.no_grad():
    theirs = ref(input_ids=torch.tensor(tokens, dtype=torch.long),
                 attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
  diff = np.abs(ours - theirs)[mask]
  return float(diff.max()), float(np.abs(theirs[mask]).max())


if __name__ == '__main__':
  import transformers  # pylint: disable=g-import-not-at-top
  for s in range(3):
    d, scale = max_abs_difference(seed=s)
    print(f'seed {s}: max |stunet - transformers {transformers.__version__} '
          f'T5EncoderModel| = {d:.3e} (outputs up to {scale:.2f}) over {ARCH}')
