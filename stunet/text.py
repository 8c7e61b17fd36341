"""Text: a sentencepiece tokenizer and a small T5-style encoder.

The paper conditions on a frozen T5-XXL. We cannot download one, so the project
trains a sentencepiece model on its dataset's captions (shipped under ``data/``) and
a small T5-style encoder (pre-RMSNorm, relative position buckets, gated-GELU MLP,
no biases) jointly with the T2I stage; it is frozen with the spatial weights when
the STUNet is trained. Existing T5 encoder weights in the same layout can be read
from a local ``.npz`` file with ``load_encoder_params``.
"""

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from stunet import layers as L

PAD_ID, EOS_ID = 0, 1
DEFAULT_SPM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           'data', 'captions_spm.model')


class Tokenizer:
  """Sentencepiece tokenizer with T5's conventions: pad=0, eos=1, unk=2, no bos."""

  def __init__(self, model_path: str = DEFAULT_SPM, max_length: int = 16):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    if not os.path.exists(model_path):
      raise FileNotFoundError(
          f'sentencepiece model {model_path!r} not found; pass the path of a .model '
          f'file (the project ships data/captions_spm.model).')
    self.sp = spm.SentencePieceProcessor(model_file=model_path)
    if self.sp.pad_id() != PAD_ID or self.sp.eos_id() != EOS_ID:
      raise ValueError(f'{model_path}: expected pad_id={PAD_ID}, eos_id={EOS_ID} (T5 '
                       f'convention), got {self.sp.pad_id()}, {self.sp.eos_id()}.')
    self.max_length = max_length
    self.vocab_size = self.sp.get_piece_size()

  @classmethod
  def from_config(cls, data_config) -> 'Tokenizer':
    """The tokenizer of ``config.data`` ('' = the shipped model)."""
    return cls(data_config.tokenizer or DEFAULT_SPM, data_config.max_text_len)

  def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Captions -> (tokens int32 [b, L], mask bool [b, L]); each ends with EOS.

    The empty string encodes to [EOS]: that is the null prompt of
    classifier-free guidance. Longer captions are truncated (keeping EOS).
    """
    n = self.max_length
    tokens = np.full((len(texts), n), PAD_ID, np.int32)
    for i, ids in enumerate(self.sp.encode(list(texts))):
      ids = ids[:n - 1] + [EOS_ID]
      tokens[i, :len(ids)] = ids
    return tokens, tokens != PAD_ID

  def null(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
    return self.encode([''] * batch)


def train_tokenizer(captions: Sequence[str], model_prefix: str, vocab_size: int = 64):
  """Train the shipped sentencepiece model on captions (one-off, deterministic)."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(captions), model_prefix=model_prefix, vocab_size=vocab_size,
      model_type='word', pad_id=PAD_ID, eos_id=EOS_ID, unk_id=2, bos_id=-1,
      character_coverage=1.0, hard_vocab_limit=False, num_threads=1,
      minloglevel=2)


class RMSNorm(nn.Module):
  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', L._p(nn.initializers.ones, L.NORM), (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 ** 2, -1, keepdims=True) + 1e-6)
    return (y * scale).astype(x.dtype)


def relative_position_bucket(rel, num_buckets=32, max_distance=128):
  """T5's bidirectional bucketing of relative positions (key - query)."""
  num_buckets //= 2
  ret = (rel > 0).astype(jnp.int32) * num_buckets
  n = jnp.abs(rel)
  max_exact = num_buckets // 2
  large = max_exact + (jnp.log(jnp.maximum(n, 1) / max_exact) / np.log(max_distance / max_exact)
                       * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return ret + jnp.where(n < max_exact, n, large)


class TextEncoder(nn.Module):
  """T5-style encoder: tokens [b, L], mask [b, L] -> embeddings [b, L, width]."""
  vocab_size: int
  width: int = 64
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  num_buckets: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, mask):
    b, n = tokens.shape
    heads, hd = self.num_heads, self.width // self.num_heads
    embed = self.param('token_embed', L._p(nn.initializers.normal(1.0), ('vocab', 'embed')),
                       (self.vocab_size, self.width))
    x = jnp.take(embed, tokens, axis=0).astype(self.dtype)
    pos = jnp.arange(n)
    buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets)
    rel = self.param('relpos_bias', L._p(nn.initializers.normal(0.1), (None, 'heads')),
                     (self.num_buckets, heads))
    bias = jnp.transpose(rel[buckets], (2, 0, 1))[None].astype(self.dtype)  # [1, H, L, L]
    attn_mask = mask[:, None, None, :]
    for i in range(self.num_layers):
      y = RMSNorm(name=f'layer_{i}_attn_norm')(x)
      qkv = L.dense(3 * self.width, f'layer_{i}_qkv', self.dtype, use_bias=False)(y)
      q, k, v = jnp.split(qkv.reshape(b, n, 3 * heads, hd), 3, axis=2)
      y = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=attn_mask)
      x = x + L.dense(self.width, f'layer_{i}_attn_out', self.dtype, use_bias=False,
                      names=L.DENSE_OUT)(y.reshape(b, n, self.width))
      y = RMSNorm(name=f'layer_{i}_mlp_norm')(x)
      gate = L.dense(self.mlp_dim, f'layer_{i}_wi_0', self.dtype, use_bias=False)(y)
      up = L.dense(self.mlp_dim, f'layer_{i}_wi_1', self.dtype, use_bias=False)(y)
      x = x + L.dense(self.width, f'layer_{i}_wo', self.dtype, use_bias=False,
                      names=L.DENSE_OUT)(nn.gelu(gate) * up)
    x = RMSNorm(name='final_norm')(x)
    return x * mask[..., None].astype(x.dtype)


def load_encoder_params(path: str, like: Any) -> Any:
  """Reads text-encoder weights from a local ``.npz`` with '/'-joined parameter names.

  ``like`` is this encoder's (abstract or concrete) parameter tree; every name and
  shape must match, and a mismatch names the offending parameter.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f'text encoder weights {path!r} not found.')
  flat_like = traverse_util.flatten_dict(like, sep='/')
  with np.load(path) as f:
    stored = dict(f)
  missing = sorted(set(flat_like) - set(stored))
  extra = sorted(set(stored) - set(flat_like))
  if missing or extra:
    raise ValueError(f'{path}: parameter names differ from the encoder: missing '
                     f'{missing[:5]}, unexpected {extra[:5]}.')
  for k, v in flat_like.items():
    if tuple(stored[k].shape) != tuple(v.shape):
      raise ValueError(f'{path}: {k} has shape {stored[k].shape}, the encoder '
                       f'expects {tuple(v.shape)}; check config.model.text.')
  return traverse_util.unflatten_dict({k: jnp.asarray(stored[k]) for k in flat_like}, sep='/')
