"""The shipped models (pretrained/): found, loaded, and sampled by default; the shipped
T2I model is where the quick start's STUNet starts."""

import os

import numpy as np
import pytest

from data import shapes_metrics as metrics
from stunet import checkpoints
from stunet import config as config_lib
from stunet.generator import Generator


def test_default_workdir_is_the_shipped_stunet():
  workdir = checkpoints.default_workdir()
  assert workdir == checkpoints.PRETRAINED
  config = config_lib.load(workdir)
  assert config.model.temporal and config.model.temporal_cond == 'film'
  steps = os.listdir(os.path.join(workdir, 'checkpoints'))
  assert len(steps) == 1 and steps[0].isdigit(), steps  # one checkpoint, not a history


def test_missing_shipped_model_names_the_fix(monkeypatch, tmp_path):
  monkeypatch.setattr(checkpoints, 'PRETRAINED', str(tmp_path / 'gone'))
  with pytest.raises(FileNotFoundError, match='pass --workdir'):
    checkpoints.default_workdir()


def test_shipped_t2i_model_inflates_into_the_quick_starts_stunet():
  """pretrained/t2i_tiny_7200 is what configs/tiny.py:stage=stunet starts from by
  default: one checkpoint, pretrained/t2i_tiny (trained with the stage=t2i recipe it
  documents: the text encoder left at its init, coordinate channels) trained twice 2400
  steps more at a constant 3e-4 (docs/models.md: the first continuation is
  workdir/t2i_4800), whose weights fit the STUNet (checked from its config.json and the
  parameter shapes, as train.py does first)."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  from stunet import text  # pylint: disable=g-import-not-at-top
  from stunet import train_loop  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config = tiny.get_config('stage=stunet')
  assert config.train.init_from == 'pretrained/t2i_tiny_7200'
  recipe = tiny.get_config('stage=t2i')
  base = config_lib.load(os.path.join(root, 'pretrained/t2i_tiny'))
  longer = config_lib.load(os.path.join(root, config.train.init_from))
  for t2i in (base, longer):
    assert not t2i.model.temporal
    for section, field in (('train', 'freeze_text'), ('model', 'coord_channels'),
                           ('train', 'batch_size')):
      assert t2i[section][field] == recipe[section][field], field
  for field in ('num_steps', 'schedule', 'lr'):
    assert base.train[field] == recipe.train[field], field
  assert longer.train.init_from == 'workdir/t2i_4800'
  assert (longer.train.num_steps, longer.train.schedule, longer.train.lr) == (
      2400, 'constant', 3e-4)
  for name in ('t2i_tiny', 't2i_tiny_7200'):
    assert os.listdir(os.path.join(root, 'pretrained', name, 'checkpoints')) == ['2400']
  config.train.init_from = os.path.join(root, config.train.init_from)
  text.resolve(config)  # the vocabulary size, from the shipped tokenizer
  train_loop.check_init_from(config)  # raises if a weight would not fit


def test_shipped_model_samples_the_prompted_colour():
  """Loads into the current model code as sample.py does (its config.json merged over
  today's defaults; a renamed or reshaped parameter fails here) and generates, with
  the shipped sampler settings, videos of the prompted colour."""
  gen, config = Generator.from_workdir(checkpoints.default_workdir())
  prompts = ['a red square moves left', 'a blue circle grows']
  videos = gen(prompts, guidance=config.sample.guidance, seed=0)
  assert videos.shape == (2, config.data.num_frames, config.data.size, config.data.size, 3)
  assert np.all(np.abs(videos) <= 1.)
  got = [metrics.detect(v)['color'] for v in videos]
  assert got == ['red', 'blue'], got


def test_shipped_conditional_model_animates_the_given_image():
  """The shipped conditional model (pretrained/stunet_tiny_conditional) keeps a given
  frame 0 (its own prediction, before the known pixels are pasted) and makes the rest
  of the clip in the prompted colour."""
  from data import shapes  # pylint: disable=g-import-not-at-top
  from stunet import conditioning  # pylint: disable=g-import-not-at-top
  gen, config = Generator.from_workdir(
      checkpoints.default_workdir(checkpoints.PRETRAINED_CONDITIONAL))
  assert gen.conditional and config.model.conditional
  d = config.data
  rng = np.random.default_rng(3)
  labels = [dict(color='red', shape='square', motion='moves right'),
            dict(color='blue', shape='circle', motion='moves up')]
  images = np.stack([shapes.render(l, d.num_frames, d.size, rng)[0] for l in labels])
  images = images.astype(np.float32) / 127.5 - 1.
  made = [conditioning.image_to_video(im, d.num_frames) for im in images]
  cond, mask = (np.stack(a) for a in zip(*made))
  raw = conditioning.generate(gen, [shapes.caption(**l) for l in labels], cond, mask,
                              guidance=config.sample.guidance, paste=False)
  assert np.abs(raw[:, 0] - images).mean() < 0.05  # [-1, 1] pixels: frame 0 kept
  got = [metrics.detect(v)['color'] for v in raw]
  assert got == ['red', 'blue'], got
  assert np.abs(raw[:, -1] - images).mean() > 0.01  # and the clip is not frame 0 held


def test_shipped_ssr_is_the_cascades_default_and_upsamples_a_real_clip():
  """sample.py runs base -> SSR by default: the shipped SSR (pretrained/ssr_tiny, one
  checkpoint) is chosen for a base model of its input size, not with --base_only or
  for another size. Loaded as sample.py loads it, it upsamples a real 32-px clip to
  64 px near the real 64-px clip (in [-1, 1], mean abs error 0.017 on 16 held-out clips,
  docs/sampling.md; bilinear upsampling 0.014, a black clip 0.2) and keeps its colour
  and shape."""
  from data import shapes  # pylint: disable=g-import-not-at-top
  from stunet import sample_request  # pylint: disable=g-import-not-at-top
  from stunet import ssr  # pylint: disable=g-import-not-at-top
  request = sample_request.SampleRequest(prompts=['a red square moves left'])
  lines = []
  assert sample_request._ssr_run(request, 32, lines.append) == (checkpoints.PRETRAINED_SSR,
                                                                None)
  assert sample_request._ssr_run(request, 16, lines.append) == (None, None)
  assert 'upsamples 32px frames, this model makes 16px' in lines[0], lines
  request.base_only = True
  assert sample_request._ssr_run(request, 32, lines.append) == (None, None)
  steps = os.listdir(os.path.join(checkpoints.PRETRAINED_SSR, 'checkpoints'))
  assert len(steps) == 1 and steps[0].isdigit(), steps

  gen, config = Generator.from_workdir(checkpoints.PRETRAINED_SSR)
  assert gen.ssr and config.model.lowres_size == 32 and config.data.size == 64
  label = dict(color='green', shape='circle', motion='moves right')
  truth = shapes.render(label, config.data.num_frames, 64, np.random.default_rng(5))
  truth = truth[None].astype(np.float32) / 127.5 - 1.
  high = gen([shapes.caption(**label)], guidance=config.sample.guidance, seed=0,
             lowres=np.asarray(ssr.resize(truth, 32)))
  assert high.shape == truth.shape
  assert np.abs(high - truth).mean() < 0.05, np.abs(high - truth).mean()
  got = metrics.detect(high[0])
  assert (got['color'], got['shape']) == ('green', 'circle'), got
