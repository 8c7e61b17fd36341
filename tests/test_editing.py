"""Video-to-video editing (SDEdit) and style interpolation: their ends and errors."""

import numpy as np
import pytest

from conftest import FixedTokens
from conftest import perturbed_params
from conftest import real_batch
from conftest import small_config
from stunet import editing
from stunet.generator import Generator
from stunet import train_step
from stunet.models import build_model


@pytest.fixture(scope='module')
def generator():
  cfg = small_config()
  model = build_model(cfg.model)
  params = perturbed_params(model, train_step.example_inputs(cfg))
  return Generator.from_config(model, params, FixedTokens(), cfg, num_steps=4)


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
  # Same seed, same videos (what sample.py's --seed promises); another seed, others.
  np.testing.assert_array_equal(generator(prompts, guidance=1., seed=3), text_to_video)
  assert np.abs(generator(prompts, guidance=1., seed=4) - text_to_video).mean() > 1e-3


@pytest.mark.parametrize('sampler', ['ddim', 'dpm++2m'])
def test_intermediate_strength_stays_nearer_the_input_the_lower_it_is(generator, clips,
                                                                      sampler):
  # SDEdit starts the sampler at t = strength (a multistep solver with no history there).
  generator = Generator.from_config(generator.model, generator.params, FixedTokens(),
                                    small_config(), num_steps=4, sampler=sampler)
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


def test_style_alpha_0_is_the_original_exactly_and_1_the_style():
  rng = np.random.default_rng(0)
  orig = {'a': {'w': rng.normal(size=(3, 2)).astype(np.float32)},
          'temporal': {'w': np.ones(4, np.float32)}}
  style = {'a': {'w': rng.normal(size=(3, 2)).astype(np.float32)},
           'temporal': {'w': np.ones(4, np.float32)}}
  same = editing.interpolate_style(orig, style, 0.)
  np.testing.assert_array_equal(same['a']['w'], orig['a']['w'])
  np.testing.assert_array_equal(editing.interpolate_style(orig, style, 1.)['a']['w'],
                                style['a']['w'])
  half = editing.interpolate_style(orig, style, 0.25)
  np.testing.assert_allclose(half['a']['w'], 0.25 * style['a']['w'] + 0.75 * orig['a']['w'],
                             rtol=1e-6)
  np.testing.assert_array_equal(half['temporal']['w'], 1.)
  with pytest.raises(ValueError, match=r'style alpha 1.5 is outside \[0, 1\]'):
    editing.interpolate_style(orig, style, 1.5)
  with pytest.raises(ValueError, match='not of this model'):
    editing.interpolate_style(orig, {'a': style['a']}, 0.5)
  with pytest.raises(ValueError, match='where the model has'):
    editing.interpolate_style(orig, {**style, 'a': {'w': np.ones(2)}}, 0.5)
