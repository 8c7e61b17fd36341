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
