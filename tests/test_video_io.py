"""Video files and images."""

import numpy as np
import pytest

from data import shapes
from stunet import video_io


def test_gif_round_trip_is_exact_and_mp4_is_close(tmp_path):
  video = shapes.example(0, 1, 8, 32)['video']
  gif = video_io.write_video(str(tmp_path / 'a.gif'), video, scale=2)
  np.testing.assert_array_equal(video_io.read_video(gif), video_io.upscale(video, 2))
  mp4 = video_io.write_video(str(tmp_path / 'a.mp4'), video / 127.5 - 1., scale=2)
  back = video_io.read_video(mp4)
  assert back.shape == (8, 64, 64, 3)
  assert np.abs(back.astype(float) - video_io.upscale(video, 2)).mean() < 3.


def test_bad_paths_and_shapes(tmp_path):
  with pytest.raises(ValueError, match='extension'):
    video_io.write_video(str(tmp_path / 'a.avi2'), np.zeros((2, 4, 4, 3)))
  with pytest.raises(ValueError, match='expected a video'):
    video_io.write_video(str(tmp_path / 'a.gif'), np.zeros((4, 4, 3)))
  with pytest.raises(FileNotFoundError):
    video_io.read_video(str(tmp_path / 'missing.mp4'))
  (tmp_path / 'junk.mp4').write_bytes(b'not a video')
  with pytest.raises(ValueError, match='cannot decode'):
    video_io.read_video(str(tmp_path / 'junk.mp4'))


def test_grid_and_xt_slice():
  videos = np.stack([shapes.example(0, i, 4, 16)['video'][:, :8, :8] for i in range(2)])
  grid = video_io.frame_grid(videos, pad=1)
  assert grid.shape == (2 * 9 - 1, 4 * 9 - 1, 3)
  np.testing.assert_array_equal(grid[9:17, 9:17], videos[1, 1])
  xt = video_io.xt_slice(videos[0], row=3)
  np.testing.assert_array_equal(xt, videos[0][:, 3])


def test_mp4_writer_and_reader_do_not_fork_this_multithreaded_process(tmp_path):
  """JAX warns (and a fork can deadlock) when a multithreaded process forks: ffmpeg is
  started with posix_spawn, which runs no fork hooks, to encode and to decode."""
  import os  # pylint: disable=g-import-not-at-top
  import warnings  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top,unused-import
  forks = []
  os.register_at_fork(before=lambda: forks.append(1))
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # JAX's fork RuntimeWarning would raise
    video_io.write_video(str(tmp_path / 'a.mp4'), np.zeros((3, 8, 8, 3)))
    assert video_io.read_video(str(tmp_path / 'a.mp4')).shape == (3, 8, 8, 3)
    assert video_io.read_video(str(tmp_path / 'a.mp4'), size=4, max_frames=2).shape == (
        2, 4, 4, 3)
  assert not forks


def test_load_clip_resizes_and_cuts_and_says_so(tmp_path):
  video = np.random.default_rng(0).integers(0, 255, (12, 24, 40, 3), np.uint8)
  path = video_io.write_video(str(tmp_path / 'in.gif'), video)
  out, notes = video_io.load_clip(path, frames=8, size=16)
  assert out.shape == (8, 16, 16, 3) and out.dtype == np.float32
  assert -1. <= out.min() and out.max() <= 1.
  assert any('resized its 40x24 frames to 16x16' in n for n in notes), notes
  assert any('first 8 frames' in n for n in notes), notes
  exact, notes = video_io.load_clip(path, frames=12, size=24)  # 24 px: cropped, 12: all
  assert exact.shape == (12, 24, 24, 3) and len(notes) == 1, notes
  with pytest.raises(ValueError, match='has 12 frames; the model makes clips of 16'):
    video_io.load_clip(path, frames=16, size=16)



def test_load_clip_resamples_another_frame_rate_and_says_so(tmp_path):
  video = np.zeros((24, 16, 16, 3), np.uint8)
  video[:, :, :, 0] = (np.arange(24) * 10)[:, None, None]  # frame i: red = 10 i
  same, notes = video_io.load_clip(
      video_io.write_video(str(tmp_path / 'at8.mp4'), video, fps=8), frames=8, size=16, fps=8)
  assert not any('resampled' in n for n in notes), notes
  red = lambda clip: np.round((clip[:, 8, 8, 0] + 1.) * 127.5)
  np.testing.assert_allclose(red(same), np.arange(8) * 10, atol=4)
  third, notes = video_io.load_clip(
      video_io.write_video(str(tmp_path / 'at24.mp4'), video, fps=24), frames=8, size=16, fps=8)
  assert any('resampled to 8 frames per second' in n for n in notes), notes
  np.testing.assert_allclose(np.diff(red(third)), 30, atol=4)  # every third frame


def test_load_image_resizes_and_says_so_and_refuses_what_is_not_an_image(tmp_path):
  image = np.zeros((20, 30, 3), np.uint8)
  image[:, 5:25] = 200
  path = video_io.write_image(str(tmp_path / 'in.png'), image)
  out, notes = video_io.load_image(path, 16)
  assert out.shape == (16, 16, 3) and out.dtype == np.float32
  assert out[8, 8, 0] > 0.5 and len(notes) == 1 and 'resized the 30x20 image' in notes[0]
  same, notes = video_io.load_image(video_io.write_image(str(tmp_path / 'sq.png'),
                                                         image[:, 5:25]), 20)
  np.testing.assert_allclose(same, 200 / 127.5 - 1., atol=1e-6)
  assert not notes
  (tmp_path / 'bad.png').write_bytes(b'not an image')
  with pytest.raises(ValueError, match='cannot read the image .* PNG or JPEG'):
    video_io.load_image(str(tmp_path / 'bad.png'), 16)
  with pytest.raises(FileNotFoundError, match='not found'):
    video_io.load_image(str(tmp_path / 'missing.png'), 16)


def test_load_mask_reads_white_as_generate_and_refuses_another_size(tmp_path):
  mask = np.zeros((16, 16, 3), np.uint8)
  mask[4:8, 2:10] = 255
  region = video_io.load_mask(video_io.write_image(str(tmp_path / 'm.png'), mask), 16)
  assert region.dtype == bool and region.sum() == 32 and region[4:8, 2:10].all()
  with pytest.raises(ValueError, match='is 16x16 pixels; the model makes 32x32 frames'):
    video_io.load_mask(str(tmp_path / 'm.png'), 32)
