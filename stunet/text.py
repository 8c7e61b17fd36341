"""Text: a sentencepiece tokenizer and the T5 v1.1 encoder.

The paper conditions on a frozen T5-XXL. ``config.model.text.pretrained`` names a
local HuggingFace T5 v1.1 checkpoint (read by ``stunet.t5``; nothing is downloaded),
whose weights are then loaded and frozen. Without one, a small encoder of the same
architecture reads captions tokenized by the sentencepiece model shipped under
``data/``; it trains with the network unless ``config.train.freeze_text`` (the tiny
config's T2I and STUNet stages leave it at its random init) or the spatial weights
are frozen.
"""

import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

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

  def check(self, texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """What encode() would lose, as (warnings, errors), one line per prompt.

    Warnings: words past max_length - 1 tokens (encode cuts them); words the vocabulary
    does not know (they become <unk>). Errors: a non-empty prompt with no known word at
    all, whose video could not follow it.
    """
    warnings, errors = [], []
    unk = self.sp.unk_id()
    for text, ids in zip(texts, self.sp.encode(list(texts))):
      if ids and all(i == unk for i in ids):
        errors.append(f'"{text}": no word of it is in the tokenizer\'s vocabulary '
                      f'({self.vocab_size} pieces), so the model would ignore it.')
        continue
      if unk in ids:
        words = [w for w in text.split() if unk in self.sp.encode(w)]
        warnings.append(f'"{text}": {len(words)} word(s) the tokenizer does not know '
                        f'become <unk>: {" ".join(words)}')
      if len(ids) > self.max_length - 1:
        kept = self.sp.decode(ids[:self.max_length - 1])
        warnings.append(f'"{text}": {len(ids)} tokens, the model reads '
                        f'{self.max_length - 1}: only "{kept}" is used.')
    return warnings, errors

  def coverage(self, texts: Sequence[str]) -> dict:
    """How well this tokenizer covers a sample of captions: the fraction of their
    tokens that are <unk> and of captions that encode() cuts."""
    ids = self.sp.encode(list(texts))
    tokens = sum(map(len, ids))
    unk = sum(i == self.sp.unk_id() for x in ids for i in x)
    cut = sum(len(x) > self.max_length - 1 for x in ids)
    return dict(unk_fraction=unk / max(tokens, 1), cut_fraction=cut / max(len(ids), 1),
                n=len(ids))


def train_tokenizer(captions: Sequence[str], model_prefix: str, vocab_size: int = 64,
                    model_type: str = 'word'):
  """Trains a sentencepiece model with T5's special ids on captions (deterministic):
  the shipped word model of the shapes captions, or a unigram model of ingested real
  captions (``data/ingest.py``). vocab_size is an upper bound for small corpora."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(captions), model_prefix=model_prefix, vocab_size=vocab_size,
      model_type=model_type, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=2, bos_id=-1,
      character_coverage=1.0 if model_type == 'word' else 0.9995, hard_vocab_limit=False,
      num_threads=1, minloglevel=2)


class RMSNorm(nn.Module):
  """T5's layer norm: x / rms(x) * scale, no mean subtraction and no bias (in float32)."""
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', L.partitioned(nn.initializers.ones, L.NORM), (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 ** 2, -1, keepdims=True) + self.eps)
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
  """The T5 v1.1 encoder: tokens [b, L], mask [b, L] -> embeddings [b, L, width].

  Pre-RMSNorm blocks, self-attention with a learned relative-position bias (shared by
  every layer, computed from the first layer's buckets), unscaled dot products (T5
  folds the 1/sqrt(d) into its initialisation), a gated-GELU MLP, no biases, a final
  RMSNorm. ``stunet.t5`` loads real checkpoints into it. Padding positions of the
  output are zeroed.
  """
  vocab_size: int
  width: int = 64          # d_model
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 128       # d_ff
  head_dim: int = 0        # d_kv; 0 = width // num_heads
  num_buckets: int = 32
  max_distance: int = 128
  eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, mask):
    b, n = tokens.shape
    heads, hd = self.num_heads, self.head_dim or self.width // self.num_heads
    inner = heads * hd
    embed = self.param('token_embed', L.partitioned(nn.initializers.normal(1.0), ('vocab', 'embed')),
                       (self.vocab_size, self.width))
    x = jnp.take(embed, tokens, axis=0).astype(self.dtype)
    pos = jnp.arange(n)
    buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets,
                                       self.max_distance)
    rel = self.param('relpos_bias', L.partitioned(nn.initializers.normal(0.1), (None, 'heads')),
                     (self.num_buckets, heads))
    bias = jnp.transpose(rel[buckets], (2, 0, 1))[None].astype(self.dtype)  # [1, H, L, L]
    attn_mask = mask[:, None, None, :].astype(bool)
    dense = lambda f, name, names=L.DENSE: L.dense(f, f'layer_{i}_{name}', self.dtype,
                                                   use_bias=False, names=names)
    for i in range(self.num_layers):
      y = RMSNorm(self.eps, name=f'layer_{i}_attn_norm')(x)
      q, k, v = (dense(inner, c)(y).reshape(b, n, heads, hd) for c in 'qkv')
      y = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=attn_mask, scale=1.0)
      x = x + dense(self.width, 'o', L.DENSE_OUT)(y.reshape(b, n, inner))
      y = RMSNorm(self.eps, name=f'layer_{i}_mlp_norm')(x)
      gated = nn.gelu(dense(self.mlp_dim, 'wi_0')(y), approximate=True)
      x = x + dense(self.width, 'wo', L.DENSE_OUT)(gated * dense(self.mlp_dim, 'wi_1')(y))
    x = RMSNorm(self.eps, name='final_norm')(x)
    return x * mask[..., None].astype(x.dtype)


def resolve(config) -> None:
  """Fills the config fields that files determine (configs/ only describe; this reads
  them): a pretrained T5's architecture (and its spiece.model as the tokenizer, unless
  one is set), the tokenizer's vocabulary size. Entry points call it before validate."""
  text, d = config.model.text, config.data
  if text.pretrained:
    from stunet import t5  # pylint: disable=g-import-not-at-top
    spm = os.path.join(text.pretrained, 'spiece.model')
    with config.unlocked():
      text.update(t5.read_config(text.pretrained))
      if not d.tokenizer and os.path.exists(spm):
        d.tokenizer = spm
    if not d.tokenizer:
      raise ValueError(f'config.model.text.pretrained={text.pretrained!r} has no '
                       f'spiece.model: set config.data.tokenizer to the T5 sentencepiece '
                       f'model its weights were trained with.')
  if not text.vocab_size:
    with config.unlocked():
      text.vocab_size = Tokenizer.from_config(d).vocab_size
  elif text.pretrained and Tokenizer.from_config(d).vocab_size > text.vocab_size:
    raise ValueError(f'the tokenizer {d.tokenizer!r} has more pieces than the T5 '
                     f'vocabulary ({text.vocab_size}): it is not this checkpoint\'s.')
