"""Local T5 v1.1 checkpoints -> ``TextEncoder`` parameters. Nothing is downloaded.

Reads the HuggingFace layout of ``google/t5-v1_1-{small,base,large,xl,xxl}`` and of
the encoder-only T5-XXL copies that text-to-image projects ship: a directory with

    config.json                          d_model, d_kv, d_ff, num_layers, num_heads, ...
    model.safetensors                    or model.safetensors.index.json + shards
    spiece.model                         the standard T5 sentencepiece model (optional)

Only the encoder's tensors are read (a full encoder-decoder checkpoint works), and
they are memory-mapped, so a T5-XXL encoder costs its own bytes, not the file's.
A checkpoint that is only ``pytorch_model.bin`` or a TensorFlow one must first be
re-saved as safetensors (``save_pretrained(dir, safe_serialization=True)``).

``save_checkpoint`` writes the same layout (tests and ``experiments/t5_equivalence.py``
use it for small random models).
"""

import json
import os
from typing import Any

import ml_dtypes
import numpy as np
from flax import traverse_util

_DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16,
           'BF16': ml_dtypes.bfloat16, 'I64': np.int64, 'I32': np.int32}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class SafetensorsFile:
  """A memory-mapped ``.safetensors`` file: ``names()``, ``get(name)`` (numpy)."""

  def __init__(self, path: str):
    self.path = path
    try:
      with open(path, 'rb') as f:
        n = int.from_bytes(f.read(8), 'little')
        if not 2 <= n <= os.path.getsize(path) - 8:
          raise ValueError(f'header length {n} does not fit the file')
        self.header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
      raise ValueError(f'{path} is not a readable .safetensors file: {e}') from e
    self.header.pop('__metadata__', None)
    self.offset = 8 + n

  def names(self):
    return list(self.header)

  def get(self, name: str) -> np.ndarray:
    entry = self.header[name]
    if entry['dtype'] not in _DTYPES:
      raise ValueError(f'{self.path}: {name} has unsupported dtype {entry["dtype"]}.')
    begin, end = entry['data_offsets']
    dtype = np.dtype(_DTYPES[entry['dtype']])
    shape = tuple(entry['shape'])
    if end - begin != int(np.prod(shape)) * dtype.itemsize:
      raise ValueError(f'{self.path}: {name} holds {end - begin} bytes, not {shape} '
                       f'{dtype}; the file is corrupt.')
    return np.memmap(self.path, dtype, 'r', self.offset + begin, shape)


def save_safetensors(path: str, tensors: dict) -> None:
  header, chunks, pos = {}, [], 0
  for name, x in tensors.items():
    x = np.ascontiguousarray(x)
    header[name] = {'dtype': _NAMES[x.dtype], 'shape': list(x.shape),
                    'data_offsets': [pos, pos + x.nbytes]}
    chunks.append(x.tobytes())
    pos += x.nbytes
  raw = json.dumps(header).encode()
  raw += b' ' * (-len(raw) % 8)
  with open(path, 'wb') as f:
    f.write(len(raw).to_bytes(8, 'little') + raw + b''.join(chunks))


def _config_path(path: str) -> str:
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'T5 checkpoint {path!r} not found. config.model.text.pretrained must be a local '
        f'directory with config.json and model.safetensors (e.g. a copy of '
        f'google/t5-v1_1-xxl); nothing is downloaded.')
  d = path if os.path.isdir(path) else os.path.dirname(path)
  cfg = os.path.join(d, 'config.json')
  if not os.path.exists(cfg):
    raise FileNotFoundError(f'{path!r} is not a HuggingFace T5 checkpoint: {cfg} is missing.')
  return cfg


def read_config(path: str) -> dict:
  """The ``TextEncoder`` fields of a checkpoint's config.json (refuses T5 v1.0)."""
  cfg_path = _config_path(path)
  with open(cfg_path) as f:
    cfg = json.load(f)
  if cfg.get('model_type', 't5') not in ('t5', 'umt5'):
    raise ValueError(f'{cfg_path}: model_type {cfg.get("model_type")!r} is not a T5.')
  proj = cfg.get('feed_forward_proj', 'relu')
  if proj != 'gated-gelu':
    raise ValueError(f'{cfg_path}: feed_forward_proj={proj!r}; the encoder is T5 v1.1 '
                     f'(gated-gelu). Use a google/t5-v1_1-* checkpoint, not T5 v1.0.')
  try:
    return dict(vocab_size=cfg['vocab_size'], width=cfg['d_model'],
                num_layers=cfg['num_layers'], num_heads=cfg['num_heads'],
                head_dim=cfg['d_kv'], mlp_dim=cfg['d_ff'],
                num_buckets=cfg.get('relative_attention_num_buckets', 32),
                max_distance=cfg.get('relative_attention_max_distance', 128),
                eps=cfg.get('layer_norm_epsilon', 1e-6))
  except KeyError as e:
    raise ValueError(f'{cfg_path} lacks {e}; is it a T5 config?') from e


def _weight_files(path: str) -> list:
  if os.path.isfile(path):
    return [path]
  index = os.path.join(path, 'model.safetensors.index.json')
  if os.path.exists(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)['weight_map'].values()))
    return [os.path.join(path, s) for s in shards]
  files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith('.safetensors'))
  if not files:
    others = [f for f in os.listdir(path) if f.endswith(('.bin', '.h5', '.msgpack', '.index'))]
    raise FileNotFoundError(
        f'{path!r} holds no .safetensors weights (found {others or "nothing"}). Re-save '
        f'the model with save_pretrained(dir, safe_serialization=True).')
  return files


def _hf_names(num_layers: int) -> dict:
  """Our flat parameter name -> (HuggingFace name, transpose: torch Linear is [out, in])."""
  names = {'token_embed': ('shared.weight', False),
           'relpos_bias': ('encoder.block.0.layer.0.SelfAttention.relative_attention_bias'
                           '.weight', False),
           'final_norm/scale': ('encoder.final_layer_norm.weight', False)}
  for i in range(num_layers):
    blk = f'encoder.block.{i}.layer'
    names[f'layer_{i}_attn_norm/scale'] = (f'{blk}.0.layer_norm.weight', False)
    for c in 'qkvo':
      names[f'layer_{i}_{c}/kernel'] = (f'{blk}.0.SelfAttention.{c}.weight', True)
    names[f'layer_{i}_mlp_norm/scale'] = (f'{blk}.1.layer_norm.weight', False)
    for c in ('wi_0', 'wi_1', 'wo'):
      names[f'layer_{i}_{c}/kernel'] = (f'{blk}.1.DenseReluDense.{c}.weight', True)
  return names


def load_t5(path: str, dtype=np.float32) -> tuple[dict, Any]:
  """(TextEncoder fields, parameter tree) of a local HF T5 v1.1 checkpoint."""
  arch = read_config(path)
  tensors = {}
  for f in _weight_files(path):
    st = SafetensorsFile(f)
    tensors.update({n: st for n in st.names()})
  if 'shared.weight' not in tensors and 'encoder.embed_tokens.weight' in tensors:
    tensors['shared.weight'] = tensors['encoder.embed_tokens.weight']
  flat = {}
  for ours, (theirs, transpose) in _hf_names(arch['num_layers']).items():
    if theirs not in tensors:
      raise ValueError(f'{path}: tensor {theirs!r} is missing; the checkpoint does not '
                       f'match its config.json ({arch["num_layers"]} layers).')
    src = theirs if theirs in tensors[theirs].header else 'encoder.embed_tokens.weight'
    x = np.asarray(tensors[theirs].get(src), dtype)
    flat[ours] = x.T if transpose else x
  inner = arch['num_heads'] * arch['head_dim']
  expect = {'token_embed': (arch['vocab_size'], arch['width']),
            'layer_0_q/kernel': (arch['width'], inner),
            'layer_0_wi_0/kernel': (arch['width'], arch['mlp_dim']),
            'relpos_bias': (arch['num_buckets'], arch['num_heads'])}
  for k, shape in expect.items():
    if flat[k].shape != shape:
      raise ValueError(f'{path}: {k} has shape {flat[k].shape}, config.json implies {shape}.')
  return arch, traverse_util.unflatten_dict(flat, sep='/')


def with_t5_encoder(model_config, params: dict) -> dict:
  """``params`` with the text encoder's weights read from ``model.text.pretrained``."""
  path = model_config.text.pretrained
  arch, enc = load_t5(path)
  ours = {k: model_config.text[k] for k in arch}
  if ours != arch:
    raise ValueError(f'config.model.text {ours} does not describe the checkpoint {path} '
                     f'({arch}); run stunet.text.resolve(config) on it.')
  return {**params, 'text_encoder': enc}


def save_checkpoint(directory: str, arch: dict, params: Any) -> str:
  """Writes TextEncoder params in the HF layout (config.json + model.safetensors)."""
  os.makedirs(directory, exist_ok=True)
  flat = traverse_util.flatten_dict(params, sep='/')
  out = {}
  for ours, (theirs, transpose) in _hf_names(arch['num_layers']).items():
    x = np.asarray(flat[ours], np.float32)
    out[theirs] = x.T if transpose else x
  save_safetensors(os.path.join(directory, 'model.safetensors'), out)
  cfg = dict(model_type='t5', architectures=['T5EncoderModel'],
             feed_forward_proj='gated-gelu', is_gated_act=True, dense_act_fn='gelu_new',
             vocab_size=arch['vocab_size'], d_model=arch['width'],
             num_layers=arch['num_layers'], num_heads=arch['num_heads'],
             d_kv=arch['head_dim'], d_ff=arch['mlp_dim'],
             relative_attention_num_buckets=arch['num_buckets'],
             relative_attention_max_distance=arch['max_distance'],
             layer_norm_epsilon=arch['eps'], dropout_rate=0.0, pad_token_id=0,
             eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False)
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump(cfg, f, indent=1)
  return directory
