"""The entry points as a user runs them, one test per program: train.py, sample.py (the
base -> SSR cascade) and evaluate.py as processes on small runs. (Their refusals of bad
input are tests/test_bad_input.py.)"""

import json
import os

import numpy as np
import pytest

from configs import ssr as ssr_config
from configs import tiny
from conftest import run_program
from data import pipeline
from stunet import sample_request
from stunet import train_loop
from stunet import video_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Shrinks configs/tiny.py to seconds: 8 frames of 16x16, two levels, no spatial
# self-attention (the dataset of conftest.small_config, so the session's generated data
# serve; the programs' contracts, not the layers, are tested here).
SMALL = {'data.num_frames': 8, 'data.size': 16, 'data.num_train': 32, 'data.num_test': 16,
         'model.channels': 8, 'model.channel_mult': (1, 2), 'model.attn_levels': (),
         'model.cross_attn_levels': (1,), 'train.num_steps': 2, 'train.log_every': 1,
         'train.warmup_steps': 1, 'sample.num_steps': 2}
# configs/ssr.py at the same scale: 16 -> 32 px (the small base model's 16 px output).
SSR_SMALL = {k: v for k, v in SMALL.items() if k != 'model.attn_levels'}
SSR_SMALL.update({'data.num_frames': 4, 'data.size': 32, 'model.lowres_size': 16,
                  'sample.window': 4})


def _args(overrides):
  return [f'--config.{k}={v}'.replace(' ', '') for k, v in overrides.items()]


def _train(cfg, overrides, workdir):
  """What train.py does with a config file and --config overrides, in this process."""
  for k, v in overrides.items():
    section, name = k.split('.')
    setattr(cfg[section], name, v)
  train_loop.prepare(cfg, workdir)
  train_loop.train(cfg, workdir, pipeline.TrainInputs(cfg))




@pytest.fixture(scope='session')
def runs(tmp_path_factory, data_dir):
  """A small T2I and SSR run (in this process), and a STUNet run from the T2I one by
  train.py (a process): (folder, train.py's output)."""
  root = tmp_path_factory.mktemp('cli')
  _train(tiny.get_config('stage=t2i'),
         dict(SMALL, **{'data.data_dir': data_dir, 'train.batch_size': 8}), str(root / 't2i'))
  _train(ssr_config.get_config(), dict(SSR_SMALL, **{'data.data_dir': data_dir}),
         str(root / 'ssr'))
  log = run_program([f'{ROOT}/train.py', '--config', f'{ROOT}/configs/tiny.py:stage=stunet',
              '--workdir', 'stunet', f'--config.data.data_dir={data_dir}',
              '--config.train.init_from=t2i'] + _args(SMALL), root)
  return root, log


def test_train_py_inflates_and_trains_with_the_projects_lines_only(runs):
  _, log = runs
  assert 'initialised spatial weights from t2i' in log and 'step 2/2 loss' in log, log
  assert 'compiled the train step' in log and 'trained to step 2' in log, log
  assert 'Traceback' not in log and 'WARNING' not in log, log  # the project's lines only


def test_sample_py_runs_the_cascade_in_windows_and_writes_every_format(runs):
  # Two prompts, both formats, on a clip longer than either model's window: base
  # windows (0, 4) of 8, SSR windows (0, 2, 4, 6, 8) of 4, fused with MultiDiffusion.
  root, _ = runs
  log = run_program([f'{ROOT}/sample.py', '--workdir', 'stunet', '--ssr_workdir', 'ssr', '--frames',
              '12', '--prompt', 'a red square moves left', '--prompt', 'a blue circle grows',
              '--output', 'out/v.gif', '--output', 'out/v.mp4', '--scale', '2'], root)
  assert 'base: compile' in log and '2 window(s)) for 2 video(s) of 12x16x16' in log, log
  assert 'ssr: compile' in log and '5 window(s)) for 2 video(s) of 12x32x32' in log, log
  assert 'Warning' not in log and 'Traceback' not in log, log
  for i, prompt in enumerate(['a red square moves left', 'a blue circle grows']):
    for name in (f'v_{i}.gif', f'v_{i}.mp4', f'v_{i}_lowres.gif', f'v_{i}_lowres.mp4'):
      assert f'wrote out/{name}: "{prompt}"' in log, log
      video = video_io.read_video(str(root / 'out' / name))
      assert video.shape == (12, 32, 32, 3), name  # 16 px x 2 and 32 px x 1
  a, b = (video_io.read_video(str(root / 'out' / f'v_{i}.gif')) for i in (0, 1))
  assert np.abs(a.astype(int) - b).mean() > 1  # one video per prompt
  # An image model is refused (it would write 1-frame videos).
  request = sample_request.SampleRequest(prompts=['a red square'],
                                         workdir=str(root / 't2i'),
                                         outputs=[str(root / 'out' / 'x.mp4')])
  with pytest.raises(ValueError, match='text-to-image model'):
    sample_request.run(request)


def test_evaluate_py_scores_a_run_and_writes_its_figures(runs):
  root, _ = runs
  same_base = ['--num_samples', '2', '--batch_size', '2', '--negative_prompt', 'a blue circle',
               '--base_videos', 'base_videos.npz']
  log = run_program([f'{ROOT}/evaluate.py', '--workdir', 'stunet'] + same_base, root)
  assert 'color  accuracy' in log and 'motion accuracy' in log, log
  assert 'sampling: 2 videos' in log, log
  assert 'FVD skipped: I3D needs at least 9 frames' in log  # 8-frame clips
  for name in ('scores.json', 'frames.png', 'xt_slices.png'):
    assert (root / 'stunet' / 'eval' / name).exists(), name
  # The cascade: the base clips (the same settings: read back from --base_videos, not
  # sampled again), their bilinear upsampling and the SSR's, each scored.
  log = run_program([f'{ROOT}/evaluate.py', '--workdir', 'stunet', '--ssr_workdir', 'ssr',
                     '--output_dir', 'eval_ssr', '--ssr_sampler', 'dpm++2m-sde',
                     '--ssr_spacing', 'quadratic'] + same_base, root)
  for line in ('model: n=2, 16px', 'model, bilinear upsampling: n=2, 32px',
               'model -> SSR: n=2, 32px', 'super-resolution: 2 videos'):
    assert line in log, log
  assert 'sampling: 2 videos' not in log, log
  scores = json.load(open(root / 'eval_ssr' / 'scores.json'))
  assert list(scores['rows']) == ['base', 'bilinear', 'ssr'], scores['rows'].keys()
  assert scores['scores'] == scores['rows']['ssr']['scores']
  base = json.load(open(root / 'stunet' / 'eval' / 'scores.json'))
  assert scores['rows']['base'] == base['rows']['base']
