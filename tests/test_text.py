"""Tokenizer and T5-style encoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from data import shapes
from stunet import text


@pytest.fixture(scope='module')
def tok():
  return text.Tokenizer(max_length=8)


def test_every_caption_is_a_few_known_words(tok):
  tokens, mask = tok.encode(shapes.all_captions())
  unk = tok.sp.unk_id()
  assert not (tokens == unk).any()
  lengths = mask.sum(1)
  assert lengths.max() <= 8
  # Each caption ends with EOS and is padded after it.
  for row, n in zip(tokens, lengths):
    assert row[n - 1] == text.EOS_ID and (row[n:] == text.PAD_ID).all()
  # Different captions, different token rows.
  assert len({tuple(r) for r in tokens}) == len(tokens)


def test_null_prompt_truncation_and_unknown_words(tok):
  tokens, mask = tok.null(2)
  np.testing.assert_array_equal(tokens[:, 0], text.EOS_ID)
  assert mask.sum() == 2
  tokens, mask = tok.encode(['a red square ' * 10])
  assert mask.all() and tokens[0, -1] == text.EOS_ID
  tokens, _ = tok.encode(['a purple dog'])
  # Unknown words map to <unk> (consecutive ones merge into one).
  assert (tokens[0, :3] == [tok.sp.piece_to_id('▁a'), tok.sp.unk_id(), text.EOS_ID]).all()


def test_missing_tokenizer_file_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='sentencepiece model'):
    text.Tokenizer(str(tmp_path / 'nope.model'))


def _encoder_and_params():
  enc = text.TextEncoder(vocab_size=24, width=16, num_layers=2, num_heads=2, mlp_dim=32)
  tokens = jnp.array([[3, 5, 7, 1, 0, 0], [3, 1, 0, 0, 0, 0]])
  params = nn.meta.unbox(enc.init(jax.random.key(0), tokens, tokens > 0))
  return enc, params, tokens


def test_encoder_masks_padding():
  enc, params, tokens = _encoder_and_params()
  out = enc.apply(params, tokens, tokens > 0)
  assert out.shape == (2, 6, 16)
  # Padding positions are zeroed; every valid position carries features.
  assert float(jnp.abs(out[0, 4:]).max()) == 0. and float(jnp.abs(out[0, :4]).max(-1).min()) > 0.
  # Padding content must not leak into valid positions.
  out2 = enc.apply(params, tokens.at[0, 5].set(9), tokens > 0)
  np.testing.assert_allclose(out2[0, :4], out[0, :4], atol=1e-6)
  # Order matters (relative position bias).
  swapped = tokens.at[0, 1].set(7).at[0, 2].set(5)
  assert float(jnp.abs(enc.apply(params, swapped, swapped > 0)[0, 0] - out[0, 0]).max()) > 1e-4


def test_relative_position_buckets():
  rel = jnp.arange(-20, 21)
  b = text.relative_position_bucket(rel, num_buckets=32, max_distance=128)
  assert int(b[20]) == 0  # rel = 0
  assert len(set(np.asarray(b[21:]).tolist()) & set(np.asarray(b[:20]).tolist())) == 0
  assert bool(jnp.all(jnp.diff(b[21:]) >= 0))


def test_check_names_what_encode_would_lose(tok):
  warnings, errors = tok.check(['a red square moves left', 'a purple dog moves left',
                                'a red square ' * 4, 'ein roter Hund'])
  assert len(warnings) == 2 and len(errors) == 1, (warnings, errors)
  assert 'a purple dog moves left": 2 word(s)' in warnings[0] and 'purple dog' in warnings[0]
  assert '12 tokens, the model reads 7' in warnings[1]
  assert 'ein roter Hund": no word of it' in errors[0]
  assert tok.check(['', 'a blue circle grows']) == ([], [])  # the null prompt is fine
