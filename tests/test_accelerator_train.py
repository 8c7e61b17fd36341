"""experiments/accelerator_train.py: train.py's input without TensorFlow."""

import importlib.util
import os

import numpy as np
import pytest

from configs import tiny
from data import shapes

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def mod():
  spec = importlib.util.spec_from_file_location(
      'accelerator_train', os.path.join(_ROOT, 'experiments', 'accelerator_train.py'))
  m = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(m)
  return m


def test_importing_it_defines_no_flags(mod):
  """The suite imports it in workers that already hold train.py's --config."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  before = set(flags.FLAGS)
  spec = importlib.util.spec_from_file_location(
      'accelerator_train_again', os.path.join(_ROOT, 'experiments', 'accelerator_train.py'))
  spec.loader.exec_module(importlib.util.module_from_spec(spec))  # a second import
  assert set(flags.FLAGS) == before


def _config(num_train=8):
  config = tiny.get_config('stage=stunet')
  config.data.num_train = num_train
  return config


def test_rendered_split_is_the_tfds_builders_examples(mod):
  config = _config()
  videos, captions = mod.render_train_split(config.data, workers=1)
  assert videos.shape == (8, 16, 32, 32, 3) and videos.dtype == np.uint8
  for i in (0, 7):
    ex = shapes.example(config.data.dataset_seed, i, 16, 32)
    np.testing.assert_array_equal(videos[i], ex['video'])
    assert captions[i] == ex['caption']


def test_batches_cover_each_epoch_once_and_resume_where_they_left_off(mod):
  config = _config()
  videos, captions = mod.render_train_split(config.data, workers=1)
  inputs = mod.RenderedInputs(config, videos, captions)
  stream = inputs.batches()
  first = [next(stream) for _ in range(4)]
  b = first[0]
  assert b['video'].shape == (4, 16, 32, 32, 3) and b['video'].dtype == np.float32
  assert -1. <= b['video'].min() and b['video'].max() <= 1.
  assert b['tokens'].shape == b['mask'].shape == (4, config.data.max_text_len)
  epoch = sorted(c for batch in first[:2] for c in batch['caption'])
  assert epoch == sorted(captions)                  # 8 clips: two batches, each clip once
  resumed = next(inputs.batches(start_step=3))
  np.testing.assert_array_equal(resumed['video'], first[3]['video'])
  tokens, mask = inputs.null_text()
  assert tokens.shape == mask.shape == (config.data.max_text_len,)


def test_other_data_is_refused(mod):
  config = _config()
  config.data.stationary_frames = 64
  with pytest.raises(ValueError, match='use train.py'):
    mod.render_train_split(config.data, workers=1)
