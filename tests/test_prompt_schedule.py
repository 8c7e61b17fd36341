"""Prompt schedules (stunet.prompt_schedule): frames -> prompts -> windows, and the
sampler's per-window text."""

import jax.numpy as jnp
import numpy as np
import pytest

from stunet import multidiffusion
from stunet import prompt_schedule
from test_sampling import TextDenoiser
from test_sampling import _text_generator


def test_frames_map_to_their_prompts_and_windows_to_their_shares():
  np.testing.assert_array_equal(prompt_schedule.segment_of_frames((0, 3, 5), 7),
                                [0, 0, 0, 1, 1, 2, 2])
  # 80 frames in windows of 16 overlapping by 2, prompts from frames 0 and 40: the
  # windows inside a segment have it alone, the one across frame 40 both, by frames.
  starts = multidiffusion.window_starts(80, 16, 2)
  assert starts == (0, 14, 28, 42, 56, 64)
  shares = prompt_schedule.shares((0, 40), 80, [(s, 16) for s in starts])
  np.testing.assert_array_equal(shares, [[1, 0], [1, 0], [12 / 16, 4 / 16], [0, 1], [0, 1],
                                         [0, 1]])
  np.testing.assert_array_equal(prompt_schedule.shares((0,), 80, [(0, 80)]), [[1.]])


@pytest.mark.parametrize('first,prompts,frames,message', [
    ((0, 32), 3, 64, 'a prompt schedule of 3 prompts needs 3 first frames'),
    ((8, 32), 2, 64, 'starts at frame 0'),
    ((0, 32, 16), 3, 64, 'must increase'),
    ((0, 32, 32), 3, 64, 'must increase'),
    ((0, 64), 2, 64, 'starts a prompt at frame 64, past the clip of 64 frames (0-63)'),
    ((0, 1.5), 2, 64, 'whole numbers'),
])
def test_bad_schedules_get_one_line_errors(first, prompts, frames, message):
  with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')) as e:
    prompt_schedule.check(first, prompts, frames)
  assert '\n' not in str(e.value)
  assert prompt_schedule.check((0, 10, 63), 3, 64) == (0, 10, 63)


def test_a_window_text_is_its_prompts_mixed_by_share_and_one_prompt_is_exact():
  rng = np.random.default_rng(0)
  text = jnp.asarray(rng.normal(size=(2, 3, 5, 4)), jnp.float32)  # b=2, K=3, L=5, d=4
  mask = jnp.asarray(rng.random((2, 3, 5)) > 0.3)
  shares = jnp.asarray([[1., 0., 0.], [0., 0.25, 0.75], [0., 1., 0.]])
  got, got_mask = prompt_schedule.mix(text, mask, shares)
  assert got.shape == (3, 2, 5, 4) and got_mask.shape == (3, 2, 5)
  np.testing.assert_array_equal(got[0], text[:, 0])
  np.testing.assert_allclose(got[1], 0.25 * text[:, 1] + 0.75 * text[:, 2], atol=1e-6)
  np.testing.assert_allclose(got[2], text[:, 1], atol=1e-6)
  np.testing.assert_array_equal(got_mask[1], mask[:, 1] | mask[:, 2])
  np.testing.assert_array_equal(got_mask[0], mask[:, 0])
  same = jnp.repeat(text[:, :1], 3, axis=1)  # one prompt repeated: exactly its text
  np.testing.assert_array_equal(prompt_schedule.mix(same, mask[:, :1].repeat(3, 1), shares)[0],
                                jnp.broadcast_to(text[None, :, 0], (3, 2, 5, 4)))


def test_each_frame_gets_the_fused_prediction_of_its_windows_prompts():
  """With an exact denoiser whose clean video is a number read from the prompt, the
  sample at every frame is the MultiDiffusion average, over the windows holding the
  frame, of each window's prompts mixed by their shares of the window's frames."""
  gen = _text_generator()  # windows of 4 frames, overlap 2
  frames, first = 12, (0, 6)
  pairs = [['a red square moves left', 'a blue square moves up'],
           ['a green circle grows', 'a green circle shrinks']]
  flat = [p for pair in pairs for p in pair]
  _, masks = gen.tokenizer.encode(flat)
  assert (masks[0::2] == masks[1::2]).all()  # same token counts: the mix is linear
  points = TextDenoiser.point(gen.tokenizer, flat).reshape(2, 2)
  out = gen(pairs, guidance=0., num_frames=frames, prompt_frames=first)
  starts = gen.windows(frames).starts
  shares = prompt_schedule.shares(first, frames, [(s, 4) for s in starts])
  values = shares @ points.T  # [windows, b]
  want = np.stack([values[[w for w, s in enumerate(starts) if s <= f < s + 4]].mean(0)
                   for f in range(frames)], 1)  # [b, frames]
  np.testing.assert_allclose(out[:, :, 0, 0, 0], want, atol=1e-4)
  assert abs(want[0, 0] - points[0, 0]) < 1e-6 and abs(want[0, -1] - points[0, 1]) < 1e-6


def test_one_prompt_repeated_in_a_schedule_is_the_plain_long_clip():
  """The same noise, and the same text reaching the network in every window (``mix``
  is exact for one prompt, above): the same clip, up to the rounding of the compiled
  programs, which differ in where the text comes from."""
  gen = _text_generator('ddpm')
  prompt = 'a red square moves left'
  plain = gen([prompt, 'a blue circle grows'], guidance=1.5, seed=3, num_frames=12)
  scheduled = gen([[prompt] * 3, ['a blue circle grows'] * 3], guidance=1.5, seed=3,
                  num_frames=12, prompt_frames=[0, 5, 9])
  np.testing.assert_allclose(plain, scheduled, rtol=0, atol=2e-6)
  assert np.abs(plain).max() > 0.1


def test_the_generator_refuses_prompts_that_do_not_match_the_schedule():
  gen = _text_generator()
  with pytest.raises(ValueError, match='every video needs a list of 2 prompts'):
    gen(['a red square moves left'], guidance=0., num_frames=12, prompt_frames=[0, 6])
  with pytest.raises(ValueError, match='past the clip of 12 frames'):
    gen([['a red square moves left'] * 2], guidance=0., num_frames=12, prompt_frames=[0, 12])
  with pytest.raises(ValueError, match='non-empty text'):
    gen([['a red square moves left', ' ']], guidance=0., num_frames=12, prompt_frames=[0, 6])
