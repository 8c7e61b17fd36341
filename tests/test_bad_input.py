"""Bad input is refused in one or two lines, before anything is compiled or written.

Every case runs its program as a user would (train.py, sample.py and evaluate.py each
in one process for all of its cases, tests/bad_input_driver.py; data/ingest.py one
process per case) in a folder of its own, and must exit non-zero, print at most two
lines (one of them the program's `error:` line, with the expected text), compile
nothing and leave no file behind.
"""

import json
import os
import re
import sys

import numpy as np
import pytest

from conftest import run_program
from stunet import checkpoints
from stunet import video_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = [f'--config={ROOT}/configs/tiny.py:stage=scratch', '--workdir=w']
TRAIN = [
    (TINY + ['--config.train.lr=-1'], 'config.train.lr=-1.0: the peak learning rate must be > 0'),
    (TINY + ['--config.train.lr=nan'], 'config.train.lr=nan: the peak learning rate must be'),
    (TINY + ['--config.train.batch_size=0'], 'config.train.batch_size=0: examples per step must'),
    (TINY + ['--config.train.ema_decay=1.5'], 'config.train.ema_decay=1.5: the EMA decay (0: raw '
     'weights) must be >= 0.0 and < 1.0'),
    (TINY + ['--config.train.num_steps=0'], 'config.train.num_steps=0: optimizer steps must be'),
    (TINY + ['--config.train.t_power=0'], 'config.train.t_power=0.0: the noise-level power'),
    (TINY + ['--config.train.t_band_share=0.5', '--config.train.t_band=(0.99, 0.96)'],
     'config.train.t_band=(0.99, 0.96): two noise levels lo < hi in [0, 1]'),
    (TINY + ['--config.train.cfg_drop=1'], 'config.train.cfg_drop=1.0: the probability of '
     'dropping the text must be >= 0.0 and < 1.0'),
    (TINY + ['--config.train.warmup_steps=-5'], 'config.train.warmup_steps=-5'),
    (TINY + ['--config.train.ckpt_every=0'], 'config.train.ckpt_every=0'),
    (TINY + ['--config.sample.guidance=-1'], 'config.sample.guidance=-1.0'),
    (TINY + ['--config.data.num_frames=10'], 'config.data.num_frames=10 is not divisible by 4: '
     'the STUNet halves time 2 times. Use a multiple of 4, or fewer levels in '
     'config.model.channel_mult.'),
    (TINY + ['--config.model.num_heads=3'], 'not divisible by config.model.num_heads=3'),
    (TINY + ['--config.mesh.shape=(2,1,1,1)'], 'needs 2 devices, but 1 are available'),
    (TINY + ['--config.train.foo=1'], "--config.train.foo: the config has no field 'foo'"),
    (TINY + ['--config.train.num_step=1'], "no field 'num_step'; did you mean 'num_steps'?"),
    (TINY + ['--config.train.lr=abc'], '--config.train.lr=abc: could not convert string to float'),
    (TINY + ['--bogus=1'], "Unknown command line flag 'bogus'"),
    (['--config=configs/nope.py', '--workdir=w'], '--config: cannot load the config file: '
     "[Errno 2] No such file or directory: 'configs/nope.py'"),
    ([f'--config={ROOT}/configs/tiny.py:stage=stunet', '--workdir=w',
      '--config.train.init_from='], 'stage=stunet starts from another run: set '
     'config.train.init_from'),
    (TINY + ['--config.train.init_from=nowhere'], 'not a train.py workdir'),
    (TINY + ['--config.data.stationary_frames=8'], 'config.data.stationary_frames=8: the '
     'stationary variant is of the shapes dataset'),
]
P = ['--prompt=a red square moves left']
SAMPLE = [
    (P + ['--guidance=nan'], '--guidance=nan: the guidance weight'),
    (P + ['--guidance=-1'], '--guidance=-1.0: the guidance weight (0: plain conditional '
     'sampling) must be >= 0.0'),
    (P + ['--num_steps=0'], '--num_steps=0: denoising steps must be >= 1'),
    (P + ['--frames=0'], '--frames=0: frames of the clip must be >= 1'),
    (P + ['--overlap=-1'], '--overlap=-1: frames shared by neighbouring windows must be >= 0'),
    (P + ['--seed=-3'], "--seed=-3: the run's seed must be >= 0"),
    (['--prompt= '], '--prompt: every prompt must be non-empty text'),
    (P + ['--negative_prompt= '], '--negative_prompt is empty'),
    (P + ['--prompt=a red square moves up', '--prompt_frames=0,x', '--frames=64'],
     '--prompt_frames=0,x: give whole numbers'),
    (P + ['--prompt=a red square moves up', '--prompt_frames=32,0', '--frames=64'],
     'a prompt schedule starts at frame 0'),
    (P + ['--prompt=a red square moves up', '--prompt=a red square grows',
          '--prompt_frames=0,40,20', '--frames=64'], 'first frames of a prompt schedule must '
     'increase'),
    (P + ['--prompt=a red square moves up', '--prompt_frames=0,64', '--frames=64'],
     'starts a prompt at frame 64, past the clip of 64 frames'),
    (P + ['--prompt=a red square moves up', '--prompt_frames=0', '--frames=64'],
     'a prompt schedule of 2 prompts needs 2 first frames'),
    (P + ['--prompt=a red square moves up', '--prompt_frames=0,8'], 'a clip of 16 frames '
     'fits one window of 16: ask for more frames (e.g. --frames=32)'),
    (P + ['--prompt_frames=0', '--frames=32', '--video=a_file', '--strength=0.5'],
     '--prompt_frames schedules the prompts of text-to-video, not of editing'),
    (P + ['--base_only', '--ssr_workdir=ssr'], '--base_only skips the SSR'),
    (P + ['--workdir=nowhere'], 'not a train.py workdir'),
    (P + ['--ssr_checkpoint=ssr/checkpoints/x'], 'is not a checkpoint folder'),
    (P + ['--workdir=w', '--checkpoint=w/checkpoints/1'], 'exactly one of --workdir'),
    (P + ['--mesh=2,1,1,4'], 'needs 8 devices, but 1 are available'),
    (P + ['--mesh=1,x'], 'Give up to 4 whole numbers'),
    (P + ['--output=v.avi'], "unknown video extension '.avi'"),
    (P + ['--output=a_file/v.mp4'], 'cannot write in'),
    (P + ['--output=/proc/stunet_nope/v.mp4'], 'cannot write in'),  # os.access lies to root
    (['--prompt=ein roter Hund'], 'no word of it is in the tokenizer'),  # the shipped model
    (P + ['--video=a_file'], '--video needs --strength'),
    (P + ['--strength=0.5'], '--strength needs --video'),
    (P + ['--video=nope.mp4', '--strength=0.5'], '--video=nope.mp4: no such file'),
    (P + ['--video=a_file', '--strength=1.5'], '--strength=1.5: strength 1.5 is outside [0, 1]'),
    (P + ['--video=random.mp4', '--strength=0.5'], "cannot decode video 'random.mp4': it is "
     'not a readable video (ffmpeg: '),
    (P + ['--image=a_file', '--video=a_file'], 'pass one of them'),
    (P + ['--cinemagraph', '--image=a_file'], '--cinemagraph needs --image and the region'),
    (P + ['--outpaint', '--video=a_file'], '--outpaint needs --video and the region'),
    (P + ['--box=1,2,3,4'], '--mask/--box need --video'),
    (P + ['--image=a_file', '--box=1,2,3,4'], 'add --cinemagraph'),
    (P + ['--video=a_file', '--mask=a_file', '--box=1,2,3,4'], 'not both'),
    (P + ['--video=a_file', '--box=1,2,x,4'], 'give 4 whole numbers'),
    (P + ['--image=nope.png'], '--image=nope.png: no such file'),
    (P + ['--style=a_file', '--image=a_file'], '--style works with text-to-video and editing'),
    (P + ['--style=a_file', '--style_alpha=1.5'], '--style_alpha=1.5: style alpha 1.5 is outside'),
    (P + [f'--workdir={checkpoints.PRETRAINED}', '--image=a_file'],
     'needs the conditional model'),
    (P + ['--image=a_file'], "cannot read the image 'a_file': give a PNG or JPEG"),
    (P + ['--video=clip.gif', '--mask=small.png'], 'is 8x8 pixels; the model makes 32x32'),
    (P + ['--video=clip.gif', '--mask=black.png'], 'marks nothing to generate'),
    (P + ['--video=clip.gif', '--box=0,0,40,8'], 'not inside the 32x32 frame'),
]
EVALUATE = [
    (['--num_samples=0'], '--num_samples=0: prompts to score must be >= 1'),
    (['--batch_size=0'], '--batch_size=0: videos per sampler call must be >= 1'),
    (['--guidance=nan'], '--guidance=nan: the guidance weight'),
    (['--num_steps=-2'], '--num_steps=-2: denoising steps must be >= 1'),
    (['--step=-1'], '--step=-1: a checkpoint step must be >= 0'),
    (['--workdir=nowhere'], 'not a train.py workdir'),
    (['--source=pictures'], 'flag --source=pictures'),
    (['--ssr_overlap=-1'], '--ssr_overlap=-1: frames shared by neighbouring windows must '
     'be >= 0'),
    (['--source=data', '--ssr_workdir=ssr'], '--ssr_workdir upsamples the base model'),
    (['--source=noise', '--base_videos=base.npz'], '--base_videos keeps the base model'),
    (['--ssr_spacing=cubic'], 'flag --ssr_spacing=cubic'),
    ([f'--ssr_workdir={checkpoints.PRETRAINED}'], 'is not an SSR model'),
]
INGEST = [
    (['--videos=v', '--csv=c.csv', '--output=out'], 'give exactly one of --videos'),
    (['--videos=nowhere', '--output=out'], "--videos='nowhere' is not a directory"),
    (['--videos=v', '--output=out', '--fps=0'], '--fps=0.0: the frame rate must be > 0'),
    (['--videos=v', '--output=out', '--quality=101'], '--quality=101: the JPEG quality must '
     'be >= 1 and <= 100'),
    (['--videos=v', '--output=out', '--min_frames=9', '--max_frames=4'],
     'need 1 <= --min_frames (9) <= --max_frames (4)'),
]


def _case_folder(root, i: int) -> str:
  """A folder with the files the cases name: a plain file, random bytes as .mp4, a clip,
  masks, a folder of (no) videos."""
  folder = os.path.join(root, f'case_{i:02d}')
  os.makedirs(os.path.join(folder, 'v'))
  with open(os.path.join(folder, 'a_file'), 'w') as f:
    f.write('not a folder, not a video')
  with open(os.path.join(folder, 'random.mp4'), 'wb') as f:
    f.write(np.random.default_rng(i).bytes(4096))
  video_io.write_video(os.path.join(folder, 'clip.gif'), np.zeros((16, 32, 32, 3), np.uint8))
  video_io.write_image(os.path.join(folder, 'small.png'), np.full((8, 8, 3), 255, np.uint8))
  video_io.write_image(os.path.join(folder, 'black.png'), np.zeros((32, 32, 3), np.uint8))
  return folder


@pytest.fixture(scope='session')
def bad_input_outcomes(tmp_path_factory) -> dict:
  """(program, case index) -> what the program did with the case's arguments."""
  root = str(tmp_path_factory.mktemp('bad_input'))
  out = {}
  for program, cases in (('train', TRAIN), ('sample', SAMPLE), ('evaluate', EVALUATE)):
    folders = [_case_folder(root, len(out) + i) for i in range(len(cases))]
    spec = os.path.join(root, f'{program}.json')
    with open(spec, 'w') as f:
      json.dump([dict(args=args, cwd=cwd) for (args, _), cwd in zip(cases, folders)], f)
    results = os.path.join(root, f'{program}_results.json')
    run_program([os.path.join(ROOT, 'tests', 'bad_input_driver.py'), program, spec, results],
                root)
    for i, result in enumerate(json.load(open(results))):
      out[(program, i)] = result
  for i, (args, _) in enumerate(INGEST):
    folder = _case_folder(root, len(out) + i)
    before = set(os.listdir(folder))
    text = run_program(['-m', 'data.ingest'] + args, folder, ok=False)
    out[('ingest', i)] = dict(code=1, output=text, compiled=False,
                              new_files=sorted(set(os.listdir(folder)) - before))
  return out


def _cases():
  for program, cases in (('train', TRAIN), ('sample', SAMPLE), ('evaluate', EVALUATE),
                         ('ingest', INGEST)):
    for i, (args, expected) in enumerate(cases):
      yield pytest.param(program, i, expected, id=f'{program}-{i:02d}-{" ".join(args)[-40:]}')


def test_there_are_at_least_30_cases_over_four_programs():
  assert len(TRAIN) + len(SAMPLE) + len(EVALUATE) + len(INGEST) >= 30
  assert min(len(TRAIN), len(SAMPLE), len(EVALUATE), len(INGEST)) >= 5


@pytest.mark.parametrize('program,index,expected', list(_cases()))
def test_refused_in_a_line_before_anything_is_compiled_or_written(bad_input_outcomes, program,
                                                                   index, expected):
  got = bad_input_outcomes[(program, index)]
  lines = [l for l in got['output'].splitlines() if l.strip()]
  name = 'ingest' if program == 'ingest' else program
  assert got['code'] != 0, got
  assert len(lines) <= 2, got['output']
  error = [l for l in lines if re.match(rf'{name}(\.py)?: error: ', l)]
  assert error and expected in error[0], got['output']
  assert not got['compiled'], 'compiled before refusing'
  assert not got['new_files'], got['new_files']
