"""The entry points as a user runs them: train.py, sample.py (base -> SSR cascade) and
evaluate.py as processes; their bad-input errors in-process (absl flagsaver + main)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from absl import app
from absl import flags
from absl.testing import flagsaver

from configs import common
from configs import ssr as ssr_config
from configs import tiny
from data import pipeline
from stunet import checkpoints
from stunet import trainer
from stunet import video_io
from stunet import text as text_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Shrinks configs/tiny.py to seconds: 8 frames of 16x16, two levels (the dataset of
# conftest.small_config, so the session's generated data serve).
SMALL = {'data.num_frames': 8, 'data.size': 16, 'data.num_train': 32, 'data.num_test': 16,
         'model.channels': 8, 'model.channel_mult': (1, 2), 'model.attn_levels': (1,),
         'model.cross_attn_levels': (1,), 'train.num_steps': 2, 'train.log_every': 1,
         'train.warmup_steps': 1, 'sample.num_steps': 2}
# configs/ssr.py at the same scale: 16 -> 32 px (the small base model's 16 px output).
SSR_SMALL = {k: v for k, v in SMALL.items() if k != 'model.attn_levels'}
SSR_SMALL.update({'data.num_frames': 4, 'data.size': 32, 'model.lowres_size': 16,
                  'sample.window': 4})


def _args(overrides):
  return [f'--config.{k}={v}'.replace(' ', '') for k, v in overrides.items()]


def _apply(cfg, overrides):
  for k, v in overrides.items():
    section, name = k.split('.')
    setattr(cfg[section], name, v)
  text_lib.resolve(cfg)
  common.validate(cfg)
  return cfg


def _run(args, cwd, ok=True):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2')
  out = subprocess.run([sys.executable] + args, cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600)
  assert (out.returncode == 0) == ok, out.stdout[-3000:] + out.stderr[-3000:]
  return out.stdout + out.stderr


def test_train_sample_evaluate(tmp_path, data_dir, sample_main, monkeypatch):
  # The T2I and SSR runs in-process; train.py, sample.py and evaluate.py as processes.
  t2i = _apply(tiny.get_config('stage=t2i'), dict(SMALL, **{'data.data_dir': data_dir,
                                                            'train.batch_size': 8}))
  trainer.train_and_evaluate(t2i, str(tmp_path / 't2i'), pipeline.TrainInputs(t2i))
  ssr = _apply(ssr_config.get_config(), dict(SSR_SMALL, **{'data.data_dir': data_dir}))
  trainer.train_and_evaluate(ssr, str(tmp_path / 'ssr'), pipeline.TrainInputs(ssr))
  log = _run([f'{ROOT}/train.py', '--config', f'{ROOT}/configs/tiny.py:stage=stunet',
              '--workdir', 'stunet', f'--config.data.data_dir={data_dir}',
              '--config.train.init_from=t2i'] + _args(SMALL), tmp_path)
  assert 'initialised spatial weights from t2i' in log and 'step 2/2 loss' in log, log
  assert 'Traceback' not in log and 'WARNING' not in log, log  # the project's lines only
  # The cascade, two prompts, both formats, on a clip longer than either model's
  # window: base windows (0, 4) of 8, SSR windows (0, 2, 4, 6, 8) of 4, fused with
  # MultiDiffusion.
  log = _run([f'{ROOT}/sample.py', '--workdir', 'stunet', '--ssr_workdir', 'ssr', '--frames',
              '12', '--prompt', 'a red square moves left', '--prompt', 'a blue circle grows',
              '--output', 'out/v.gif', '--output', 'out/v.mp4', '--scale', '2'], tmp_path)
  assert 'base: compile' in log and '2 window(s)) for 2 video(s) of 12x16x16' in log, log
  assert 'ssr: compile' in log and '5 window(s)) for 2 video(s) of 12x32x32' in log, log
  assert 'Warning' not in log and 'Traceback' not in log, log
  for i, prompt in enumerate(['a red square moves left', 'a blue circle grows']):
    for name in (f'v_{i}.gif', f'v_{i}.mp4', f'v_{i}_lowres.gif', f'v_{i}_lowres.mp4'):
      assert f'wrote out/{name}: "{prompt}"' in log, log
      video = video_io.read_video(str(tmp_path / 'out' / name))
      assert video.shape == (12, 32, 32, 3), name  # 16 px x 2 and 32 px x 1
  a, b = (video_io.read_video(str(tmp_path / 'out' / f'v_{i}.gif')) for i in (0, 1))
  assert np.abs(a.astype(int) - b).mean() > 1  # one video per prompt
  log = _run([f'{ROOT}/evaluate.py', '--workdir', 'stunet', '--num_samples', '2',
              '--batch_size', '2'], tmp_path)
  assert 'color  accuracy' in log
  assert 'FVD skipped: I3D needs at least 9 frames' in log  # 8-frame clips
  assert (tmp_path / 'stunet' / 'eval' / 'scores.json').exists()
  # An image model is refused (it would write 1-frame videos).
  monkeypatch.chdir(tmp_path)
  with flagsaver.flagsaver(prompt=['a red square'], workdir='t2i'):
    with pytest.raises(app.UsageError, match='text-to-image model'):
      sample_main(['sample.py'])


def test_train_py_refuses_a_bad_config_without_a_traceback(tmp_path):
  err = _run([f'{ROOT}/train.py', '--config', f'{ROOT}/configs/tiny.py:stage=scratch',
              '--workdir', 'w', '--config.data.num_frames=10'], tmp_path, ok=False)
  # One line: no traceback, and not absl's docstring + flag list above it either.
  assert err.strip().splitlines() == [
      'train.py: error: config.data.num_frames=10 is not divisible by 4: the STUNet halves '
      'time at each of its 2 resolution changes. Use a multiple of 4, or fewer levels in '
      'config.model.channel_mult.'], err
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('args,line', [
    (['--config.train.foo=1'], "--config.train.foo: the config has no field 'foo'"),
    (['--config.train.num_step=1'], "no field 'num_step'; did you mean 'num_steps'?"),
    (['--config.train.lr=abc'], "--config.train.lr=abc: could not convert string to float"),
    (['--bogus=1'], "Unknown command line flag 'bogus'"),
])
def test_train_py_flag_errors_are_one_line(tmp_path, args, line):
  """Errors raised while absl parses the flags (before main, so no JAX is imported)."""
  err = _run([f'{ROOT}/train.py', f'--config={ROOT}/configs/tiny.py:stage=scratch',
              '--workdir=w'] + args, tmp_path, ok=False)
  assert len(err.strip().splitlines()) == 1 and line in err, err
  err = _run([f'{ROOT}/train.py', '--config=configs/nope.py', '--workdir=w'], tmp_path,
             ok=False)
  assert err.strip() == ("train.py: error: --config: cannot load the config file: [Errno 2] "
                         "No such file or directory: 'configs/nope.py'"), err


@pytest.fixture(scope='module')
def sample_main():
  """sample.py's main with parsed flags (its flags are defined in this process only)."""
  import sample  # pylint: disable=g-import-not-at-top
  flags.FLAGS(['sample.py', '--prompt=x'], known_only=True)
  return sample.main


@pytest.mark.parametrize('flag_values,match', [
    ({'workdir': 'nowhere'}, 'not a train.py workdir'),
    ({'ssr_checkpoint': 'ssr/checkpoints/x'}, 'should end in a step number'),
    ({'workdir': 'w', 'checkpoint': 'w/checkpoints/1'}, 'exactly one of --workdir'),
    ({'num_steps': 0}, '--num_steps=0: must be at least 1'),
    ({'frames': 0}, '--frames=0: must be at least 1'),
    ({'guidance': -1.}, '--guidance=-1.0: must be >= 0'),
    ({'mesh': ['2', '1', '1', '4']}, r'--mesh=2,1,1,4: .*needs 8 devices, but 1 are'),
    ({'mesh': ['1', 'x']}, r'--mesh=1,x: .*Give up to 4 whole numbers'),
    ({'output': ['v.avi']}, "unknown video extension '.avi'"),
    ({'output': ['a_file/v.mp4']}, 'cannot write in'),
    ({'output': ['/proc/stunet_nope/v.mp4']}, 'cannot write in'),  # os.access lies to root
    ({'prompt': ['ein roter Hund']}, 'no word of it is in the tokenizer'),  # shipped model
    ({'video': 'a_file'}, '--video needs --strength .* or --mask/--box'),
    ({'strength': 0.5}, '--strength needs --video'),
    ({'video': 'nope.mp4', 'strength': 0.5}, '--video=nope.mp4: no such file'),
    ({'video': 'a_file', 'strength': 1.5}, r'--strength=1.5: strength 1.5 is outside \[0, 1\]'),
    ({'video': 'a_file', 'strength': 0.5}, "cannot decode video 'a_file'"),  # shipped model
    ({'image': 'a_file', 'video': 'a_file'}, 'pass one of them'),
    ({'cinemagraph': True, 'image': 'a_file'}, '--cinemagraph needs --image and the region'),
    ({'outpaint': True, 'video': 'a_file'}, '--outpaint needs --video and the region'),
    ({'box': ['1', '2', '3', '4']}, '--mask/--box need --video'),
    ({'image': 'a_file', 'box': ['1', '2', '3', '4']}, 'add --cinemagraph'),
    ({'video': 'a_file', 'mask': 'a_file', 'box': ['1', '2', '3', '4']}, 'not both'),
    ({'video': 'a_file', 'box': ['1', '2', 'x', '4']}, 'give 4 whole numbers'),
    ({'image': 'nope.png'}, '--image=nope.png: no such file'),
    ({'style': 'a_file', 'image': 'a_file'}, '--style works with text-to-video and editing'),
    ({'style': 'a_file', 'style_alpha': 1.5}, r'--style_alpha=1.5: style alpha 1.5 is outside'),
    # The shipped models: a conditional flag with the text-to-video one, bad inputs.
    ({'workdir': checkpoints.PRETRAINED, 'image': 'a_file'}, 'needs the conditional model'),
    ({'image': 'a_file'}, "cannot read the image 'a_file': give a PNG or JPEG"),
    ({'video': 'clip.gif', 'mask': 'small.png'}, 'is 8x8 pixels; the model makes 32x32'),
    ({'video': 'clip.gif', 'mask': 'black.png'}, 'marks nothing to generate'),
    ({'video': 'clip.gif', 'box': ['0', '0', '40', '8']}, 'not inside the 32x32 frame'),
])
def test_sample_py_bad_input(sample_main, tmp_path, monkeypatch, flag_values, match):
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'a_file').write_text('not a folder')
  video_io.write_video(str(tmp_path / 'clip.gif'), np.zeros((16, 32, 32, 3), np.uint8))
  video_io.write_image(str(tmp_path / 'small.png'), np.full((8, 8, 3), 255, np.uint8))
  video_io.write_image(str(tmp_path / 'black.png'), np.zeros((32, 32, 3), np.uint8))
  with flagsaver.flagsaver(**{'prompt': ['a red square'], **flag_values}):
    with pytest.raises(app.UsageError, match=match):
      sample_main(['sample.py'])

