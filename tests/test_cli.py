"""The entry points as a user runs them: train.py (both stages), sample.py, evaluate.py."""

import os
import subprocess
import sys

import numpy as np

from stunet import video_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Shrinks configs/tiny.py to seconds: 8 frames of 16x16, two levels.
SMALL = ['--config.data.num_frames=8', '--config.data.size=16', '--config.data.num_train=16',
         '--config.data.num_test=8', '--config.model.channels=8',
         '--config.model.channel_mult=(1,2)', '--config.model.attn_levels=(1,)',
         '--config.model.cross_attn_levels=(1,)', '--config.train.num_steps=2',
         '--config.train.log_every=1', '--config.train.warmup_steps=1',
         '--config.sample.num_steps=2']
# configs/ssr.py at the same scale: 16 -> 32 px (the small base model's 16 px output).
SSR_SMALL = ['--config.data.num_frames=4', '--config.data.size=32',
             '--config.model.lowres_size=16', '--config.data.num_train=16',
             '--config.data.num_test=8', '--config.model.channels=8',
             '--config.model.channel_mult=(1,2)', '--config.model.cross_attn_levels=(1,)',
             '--config.train.num_steps=2', '--config.train.log_every=1',
             '--config.train.warmup_steps=1', '--config.sample.num_steps=2',
             '--config.sample.window=4']


def _run(args, tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2')
  out = subprocess.run([sys.executable] + args, cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  return out.stdout + out.stderr


def test_train_sample_evaluate(tmp_path):
  data = f'--config.data.data_dir={tmp_path}/tfds'
  log = _run([f'{ROOT}/train.py', '--config', f'{ROOT}/configs/tiny.py:stage=t2i',
              '--workdir', 't2i', data] + SMALL + ['--config.train.batch_size=8'], tmp_path)
  assert 'step 2/2 loss' in log
  log = _run([f'{ROOT}/train.py', '--config', f'{ROOT}/configs/tiny.py:stage=stunet',
              '--workdir', 'stunet', data, '--config.train.init_from=t2i'] + SMALL, tmp_path)
  assert 'initialised spatial weights from t2i' in log and 'step 2/2 loss' in log
  log = _run([f'{ROOT}/sample.py', '--workdir', 'stunet', '--prompt', 'a red square moves left',
              '--prompt', 'a blue circle grows', '--output', 'out/v.gif', '--output',
              'out/v.mp4', '--scale', '2'], tmp_path)
  assert 'compile' in log and 'sampling' in log
  for name in ('v_0.gif', 'v_1.gif', 'v_0.mp4', 'v_1.mp4'):
    video = video_io.read_video(str(tmp_path / 'out' / name))
    assert video.shape == (8, 32, 32, 3)
  # Same seed, same video.
  _run([f'{ROOT}/sample.py', '--workdir', 'stunet', '--prompt', 'a red square moves left',
        '--prompt', 'a blue circle grows', '--output', 'again/v.gif', '--scale', '2'], tmp_path)
  np.testing.assert_array_equal(video_io.read_video(str(tmp_path / 'again' / 'v_0.gif')),
                                video_io.read_video(str(tmp_path / 'out' / 'v_0.gif')))
  # The cascade, on a clip longer than either model's window: base windows (0, 4) of 8,
  # SSR windows (0, 2, 4, 6, 8) of 4, fused with MultiDiffusion.
  log = _run([f'{ROOT}/train.py', '--config', f'{ROOT}/configs/ssr.py', '--workdir', 'ssr',
              data] + SSR_SMALL, tmp_path)
  assert 'step 2/2 loss' in log
  log = _run([f'{ROOT}/sample.py', '--workdir', 'stunet', '--ssr_workdir', 'ssr', '--frames',
              '12', '--prompt', 'a red square moves left', '--output', 'cascade/v.mp4',
              '--scale', '2'], tmp_path)
  assert 'base: compile' in log and '2 window(s)' in log, log
  assert 'ssr: compile' in log and '5 window(s)' in log, log
  low = video_io.read_video(str(tmp_path / 'cascade' / 'v_lowres.mp4'))
  high = video_io.read_video(str(tmp_path / 'cascade' / 'v.mp4'))
  assert low.shape == high.shape == (12, 32, 32, 3)  # 16 px x 2 and 32 px x 1
  log = _run([f'{ROOT}/evaluate.py', '--workdir', 'stunet', '--num_samples', '2',
              '--batch_size', '2'], tmp_path)
  assert 'color  accuracy' in log
  assert 'FVD skipped: I3D needs at least 9 frames' in log  # 8-frame clips
  assert (tmp_path / 'stunet' / 'eval' / 'scores.json').exists()


def test_bad_input_gives_clear_errors(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2')

  def fails(args):
    out = subprocess.run([sys.executable] + args, cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode != 0
    return out.stderr

  err = fails([f'{ROOT}/train.py', '--config', f'{ROOT}/configs/tiny.py:stage=scratch',
               '--workdir', 'w', '--config.data.num_frames=10'])
  assert 'num_frames=10 is not divisible by 4' in err
  err = fails([f'{ROOT}/sample.py', '--workdir', 'nowhere', '--prompt', 'a red square'])
  assert 'not a train.py workdir' in err
  err = fails([f'{ROOT}/train.py', '--config', f'{ROOT}/configs/tiny.py:stage=stunet',
               '--workdir', 'w'])
  assert 'init_from' in err
  err = fails([f'{ROOT}/sample.py', '--workdir', 'w', '--ssr_checkpoint', 'ssr/checkpoints/x',
               '--prompt', 'a red square'])
  assert 'should end in a step number' in err
