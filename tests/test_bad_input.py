"""Bad input is refused with one clear line, before anything is compiled or written."""

import os

import numpy as np
import pytest
from absl import app
from absl import flags
from absl.testing import flagsaver

from conftest import run_program
from stunet import checkpoints
from stunet import video_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_py_refuses_a_bad_config_without_a_traceback(tmp_path):
  err = run_program([f'{ROOT}/train.py', '--config', f'{ROOT}/configs/tiny.py:stage=scratch',
              '--workdir', 'w', '--config.data.num_frames=10'], tmp_path, ok=False)
  # One line: no traceback, and not absl's docstring + flag list above it either.
  assert err.strip().splitlines() == [
      'train.py: error: config.data.num_frames=10 is not divisible by 4: the STUNet halves '
      'time 2 times. Use a multiple of 4, or fewer levels in config.model.channel_mult.'], err
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('args,line', [
    (['--config.train.foo=1'], "--config.train.foo: the config has no field 'foo'"),
    (['--config.train.num_step=1'], "no field 'num_step'; did you mean 'num_steps'?"),
    (['--config.train.lr=abc'], "--config.train.lr=abc: could not convert string to float"),
    (['--bogus=1'], "Unknown command line flag 'bogus'"),
])
def test_train_py_flag_errors_are_one_line(tmp_path, args, line):
  """Errors raised while absl parses the flags (before main, so no JAX is imported)."""
  err = run_program([f'{ROOT}/train.py', f'--config={ROOT}/configs/tiny.py:stage=scratch',
              '--workdir=w'] + args, tmp_path, ok=False)
  assert len(err.strip().splitlines()) == 1 and line in err, err
  err = run_program([f'{ROOT}/train.py', '--config=configs/nope.py', '--workdir=w'], tmp_path,
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
    ({'ssr_checkpoint': 'ssr/checkpoints/x'}, 'is not a checkpoint folder'),
    ({'workdir': 'w', 'checkpoint': 'w/checkpoints/1'}, 'exactly one of --workdir'),
    ({'num_steps': 0}, '--num_steps=0: denoising steps must be >= 1'),
    ({'frames': 0}, '--frames=0: frames of the clip must be >= 1'),
    ({'guidance': -1.}, r'--guidance=-1.0: the guidance weight .* must be >= 0'),
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

