"""The shipped model (pretrained/stunet_tiny): found, loaded, and sampled by default."""

import os

import numpy as np
import pytest

from configs import common
from stunet import checkpoints
from data import shapes_metrics as metrics
from stunet import sampling


def test_default_workdir_is_the_shipped_stunet():
  workdir = checkpoints.default_workdir()
  assert workdir == checkpoints.PRETRAINED
  config = checkpoints.load_config(workdir)
  assert config.model.temporal and config.model.temporal_cond == 'film'
  steps = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert len(steps) == 1 and steps[0].isdigit(), steps  # one checkpoint, not a history


def test_missing_shipped_model_names_the_fix(monkeypatch, tmp_path):
  monkeypatch.setattr(checkpoints, 'PRETRAINED', str(tmp_path / 'gone'))
  with pytest.raises(FileNotFoundError, match='pass --workdir'):
    checkpoints.default_workdir()


def test_shipped_model_samples_the_prompted_colour():
  """Loads into the current model code as sample.py does (its config.json merged over
  today's defaults; a renamed or reshaped parameter fails here) and generates, with
  the shipped sampler settings, videos of the prompted colour."""
  gen, config = sampling.Generator.from_workdir(checkpoints.default_workdir(),
                                                defaults=common.base_config())
  prompts = ['a red square moves left', 'a blue circle grows']
  videos = gen(prompts, guidance=config.sample.guidance, seed=0)
  assert videos.shape == (2, config.data.num_frames, config.data.size, config.data.size, 3)
  assert np.all(np.abs(videos) <= 1.)
  got = [metrics.detect(v)['color'] for v in videos]
  assert got == ['red', 'blue'], got
  # Same seed, same videos (what sample.py's --seed promises).
  np.testing.assert_array_equal(gen(prompts, guidance=config.sample.guidance, seed=0), videos)
