"""Video-to-video editing (SDEdit): the strength's ends, the input video's loading."""

import numpy as np
import pytest

from conftest import perturbed_params
from conftest import real_batch
from conftest import small_config
from stunet import editing
from stunet import sampling
from stunet import train_lib
from stunet import video_io
from stunet.models import build_model


class _Tokens:
  """Fixed token ids (the small model's vocabulary is not the shipped tokenizer's)."""

  def encode(self, texts):
    tokens = np.zeros((len(texts), 8), np.int32)
    tokens[:, :3] = [[3 + len(t) % 5, 9, 1] for t in texts]
    return tokens, tokens > 0

  def null(self, b):
    tokens = np.zeros((b, 8), np.int32)
    tokens[:, 0] = 1
    return tokens, tokens > 0


@pytest.fixture(scope='module')
def generator():
  cfg = small_config()
  model = build_model(cfg.model)
  params = perturbed_params(model, train_lib.example_inputs(cfg))
  return sampling.Generator.from_config(model, params, _Tokens(), cfg, num_steps=4)


@pytest.fixture(scope='module')
def clips():
  return real_batch(small_config())['video'].astype(np.float32)  # [2, 8, 16, 16, 3]


def test_strength_0_returns_the_input_and_1_ignores_it(generator, clips):
  prompts = ['a red square moves left', 'a blue circle grows']
  np.testing.assert_array_equal(
      editing.sdedit(generator, prompts, clips, strength=0., guidance=1.), clips)
  text_to_video = generator(prompts, guidance=1., seed=3)
  np.testing.assert_array_equal(
      editing.sdedit(generator, prompts, clips, strength=1., guidance=1., seed=3),
      text_to_video)


def test_intermediate_strength_stays_nearer_the_input_the_lower_it_is(generator, clips):
  prompts = ['a red square moves left', 'a blue circle grows']
  dist = {}
  for strength in (0.25, 0.75):
    out = editing.sdedit(generator, prompts, clips, strength=strength, guidance=1., seed=3)
    assert out.shape == clips.shape and np.all(np.abs(out) <= 1.)
    dist[strength] = float(np.abs(out - clips).mean())
  # 2 of 4 steps from t = 0.25 barely move a clip; 3 steps from t = 0.75 rewrite most of it.
  assert generator.last_times and 0. < dist[0.25] < dist[0.75], dist


@pytest.mark.parametrize('strength,videos,match', [
    (1.5, None, r'outside \[0, 1\]'),
    (-0.1, None, r'outside \[0, 1\]'),
    (0.5, np.zeros((2, 8, 8, 8, 3)), r'need \[2, frames, 16, 16, 3\]'),
    (0.5, np.zeros((1, 8, 16, 16, 3)), 'one per prompt'),
])
def test_bad_edits_name_the_problem(generator, clips, strength, videos, match):
  with pytest.raises(ValueError, match=match):
    editing.sdedit(generator, ['a', 'b'], clips if videos is None else videos,
                   strength=strength, guidance=1.)


def test_load_video_resizes_and_cuts_and_says_so(tmp_path):
  video = np.random.default_rng(0).integers(0, 255, (12, 24, 40, 3), np.uint8)
  path = video_io.write_video(str(tmp_path / 'in.gif'), video)
  out, notes = editing.load_video(path, frames=8, size=16)
  assert out.shape == (8, 16, 16, 3) and out.dtype == np.float32
  assert -1. <= out.min() and out.max() <= 1.
  assert any('resized its 40x24 frames to 16x16' in n for n in notes), notes
  assert any('first 8 frames' in n for n in notes), notes
  exact, notes = editing.load_video(path, frames=12, size=24)  # 24 px: cropped, 12: all
  assert exact.shape == (12, 24, 24, 3) and len(notes) == 1, notes
  with pytest.raises(ValueError, match='has 12 frames; the model edits clips of 16'):
    editing.load_video(path, frames=16, size=16)
