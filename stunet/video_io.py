"""Video files: mp4/gif writing, decoding (with resampling and cropping), frame grids and
X-T slice images. The same module writes samples (sample.py) and decodes the videos
that data/ingest.py turns into training records, so a sample can be ingested."""

import logging
import os
import subprocess
from typing import Optional

import numpy as np

# imageio-ffmpeg warns whenever the filters change the frame size: keep that quiet.
logging.getLogger('imageio_ffmpeg').setLevel(logging.ERROR)


def to_uint8(video) -> np.ndarray:
  """[-1, 1] floats (or uint8) -> uint8, same shape."""
  video = np.asarray(video)
  if video.dtype == np.uint8:
    return video
  return np.clip(np.round((video + 1.) * 127.5), 0, 255).astype(np.uint8)


def upscale(video: np.ndarray, factor: int) -> np.ndarray:
  """Nearest-neighbour enlargement of [..., h, w, c], so tiny videos are watchable."""
  if factor <= 1:
    return video
  return np.repeat(np.repeat(video, factor, axis=-3), factor, axis=-2)


def write_video(path: str, video, fps: int = 8, scale: int = 1) -> str:
  """Writes video [t, h, w, 3] ([-1, 1] float or uint8) as .mp4 or .gif."""
  frames = upscale(to_uint8(video), scale)
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f'expected a video [t, h, w, 3], got shape {frames.shape}.')
  ext = os.path.splitext(path)[1].lower()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  if ext == '.gif':
    iio.imwrite(path, frames, extension='.gif', duration=1000 / fps, loop=0)
  elif ext == '.mp4':
    _write_mp4(path, frames, fps)
  else:
    raise ValueError(f'{path}: unknown video extension {ext!r}; use .mp4 or .gif.')
  return path


def _write_mp4(path, frames, fps):
  """libx264 + yuv420p (plays everywhere) through the ffmpeg binary that imageio-ffmpeg
  ships. Started with posix_spawn rather than fork: a fork of this multithreaded (JAX)
  process can deadlock, which JAX warns about; subprocess spawns when the executable is
  an absolute path, no cwd/preexec_fn is given and close_fds is off (Python's own fds
  are created non-inheritable, so nothing leaks)."""
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
  t, h, w, _ = frames.shape
  cmd = [os.path.abspath(imageio_ffmpeg.get_ffmpeg_exe()), '-y', '-loglevel', 'error',
         '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', f'{w}x{h}', '-r', str(fps), '-i', '-',
         '-an', '-vf', 'pad=ceil(iw/2)*2:ceil(ih/2)*2', '-c:v', 'libx264', '-crf', '17',
         '-pix_fmt', 'yuv420p', '-frames:v', str(t), os.path.abspath(path)]
  proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, close_fds=False)
  _, err = proc.communicate(np.ascontiguousarray(frames).tobytes())
  if proc.returncode:
    raise ValueError(f'ffmpeg could not write {path}: {err.decode(errors="replace")[-500:]}')


def read_video(path: str, fps: Optional[float] = None, size: Optional[int] = None,
               max_frames: Optional[int] = None) -> np.ndarray:
  """Decodes any ffmpeg-readable video (mp4, webm, avi, mkv, gif, ...) -> uint8 [t, h, w, 3].

  fps: resample to this frame rate (frames dropped or repeated, as ffmpeg's fps
  filter). size: resize so the shorter side is ``size``, then center-crop to
  size x size. max_frames: stop after this many (output) frames. ffmpeg is the one
  bundled with imageio-ffmpeg. Raises ValueError for a file ffmpeg cannot decode or
  one without frames.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f'video {path!r} not found.')
  filters = []
  if fps:
    filters.append(f'fps={fps}')
  if size:
    filters.append(f'scale={size}:{size}:force_original_aspect_ratio=increase:flags=area,'
                   f'crop={size}:{size}')
  params = (['-vf', ','.join(filters)] if filters else [])
  params += ['-frames:v', str(max_frames)] if max_frames else []
  import imageio_ffmpeg  # pylint: disable=g-import-not-at-top
  # Spawned, not forked (see _write_mp4); PPM frames carry their own size.
  cmd = [os.path.abspath(imageio_ffmpeg.get_ffmpeg_exe()), '-nostdin', '-loglevel', 'error',
         '-i', os.path.abspath(path)] + params + ['-an', '-f', 'image2pipe', '-c:v', 'ppm',
                                                  '-pix_fmt', 'rgb24', '-']
  proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, close_fds=False,
                        check=False)
  # ffmpeg explains itself over several lines; its last one says what failed.
  lines = proc.stderr.decode(errors='replace').strip().splitlines()
  err = ' '.join(lines[-1].split())[:200] if lines else ''
  if proc.returncode:
    raise ValueError(f'cannot decode video {path!r}: it is not a readable video '
                     f'(ffmpeg: {err or "exit status " + str(proc.returncode)}).')
  try:
    frames = _ppm_frames(proc.stdout)
  except ValueError as e:
    raise ValueError(f'cannot decode video {path!r}: it is not a readable video '
                     f'(ffmpeg: {err or e}).') from e
  if not frames:
    raise ValueError(f'{path!r} holds no frames.')
  return np.stack(frames)


def _ppm_frames(data: bytes) -> list:
  """Concatenated binary PPMs (P6, maxval 255) -> uint8 [h, w, 3] frames."""
  frames, i = [], 0
  while i < len(data):
    fields = []
    while len(fields) < 4:  # magic, width, height, maxval; whitespace-separated
      while i < len(data) and data[i:i + 1].isspace():
        i += 1
      j = i
      while j < len(data) and not data[j:j + 1].isspace():
        j += 1
      if j == i:
        raise ValueError('truncated PPM header from ffmpeg')
      fields.append(data[i:j])
      i = j
    if fields[0] != b'P6' or fields[3] != b'255':
      raise ValueError(f'unexpected PPM header {fields} from ffmpeg')
    w, h = int(fields[1]), int(fields[2])
    i += 1  # the one whitespace byte before the pixels
    n = w * h * 3
    if i + n > len(data):
      raise ValueError('truncated PPM frame from ffmpeg')
    frames.append(np.frombuffer(data, np.uint8, n, i).reshape(h, w, 3))
    i += n
  return frames


def xt_slice(video, row: int = None) -> np.ndarray:
  """The X-T slice at an image row: [t, h, w, 3] -> [t, w, 3] (time runs down)."""
  video = to_uint8(video)
  row = video.shape[1] // 2 if row is None else row
  return video[:, row]


def frame_grid(videos, pad: int = 1) -> np.ndarray:
  """[n, t, h, w, 3] -> one image, a row per video and a column per frame."""
  videos = to_uint8(videos)
  n, t, h, w, c = videos.shape
  grid = np.full((n * (h + pad) - pad, t * (w + pad) - pad, c), 255, np.uint8)
  for i in range(n):
    for j in range(t):
      grid[i * (h + pad):i * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = videos[i, j]
  return grid


def write_image(path: str, image) -> str:
  import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  iio.imwrite(path, to_uint8(image))
  return path


# ---- inputs of sample.py: a clip, an image or a mask, fitted to the model ----

def load_clip(path: str, frames: int, size: int,
              fps: Optional[float] = None) -> tuple[np.ndarray, list]:
  """A video file -> (float32 [frames, size, size, 3] in [-1, 1], notes for the user).

  Frames of another size are resized (shorter side to ``size``) and centre-cropped;
  with ``fps`` the clip is resampled to that frame rate (frames dropped or repeated
  by their timestamps); a longer clip is cut to its first ``frames`` frames. Each
  change is reported in the notes. Raises ValueError for a clip with too few frames.
  """
  # One frame more than needed tells whether the clip was cut, without decoding it all.
  video = read_video(path, max_frames=frames + 1)
  notes = []
  h, w = video.shape[1:3]
  resize = (h, w) != (size, size)
  if resize:
    notes.append(f'{path}: resized its {w}x{h} frames to {size}x{size} (shorter side, then '
                 f'a centre crop), the size the model makes.')
  if fps:
    timed = read_video(path, fps=fps, size=size if resize else None, max_frames=frames + 1)
    plain = read_video(path, size=size, max_frames=frames + 1) if resize else video
    if timed.shape != plain.shape or not np.array_equal(timed, plain):
      notes.append(f'{path}: resampled to {fps:g} frames per second (frames dropped or '
                   f'repeated), the rate of the clips the model makes (--fps).')
    video = timed
  elif resize:
    video = read_video(path, size=size, max_frames=frames + 1)
  if len(video) < frames:
    raise ValueError(f'{path} has {len(video)} frames; the model makes clips of {frames}: '
                     f'give a clip of at least {frames} frames, or --frames with fewer.')
  if len(video) > frames:
    notes.append(f'{path}: used its first {frames} frames.')
  return video[:frames].astype(np.float32) / 127.5 - 1., notes


def _read_still(path: str, what: str, formats: str, size: Optional[int] = None) -> np.ndarray:
  """The first frame of an image file, uint8 [h, w, 3] (resized and cropped to ``size``);
  one-line errors for a missing or unreadable file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{what} {path!r} not found.')
  try:
    return read_video(path, size=size, max_frames=1)[0]
  except ValueError as e:
    raise ValueError(f'cannot read the {what} {path!r}: give a {formats} file.') from e


def load_image(path: str, size: int) -> tuple[np.ndarray, list]:
  """An image file (PNG, JPEG, ...) -> (float32 [size, size, 3] in [-1, 1], notes);
  resized and centre-cropped like ``load_clip``'s frames."""
  image, notes = _read_still(path, 'image', 'PNG or JPEG'), []
  h, w = image.shape[:2]
  if (h, w) != (size, size):
    image = _read_still(path, 'image', 'PNG or JPEG', size)
    notes.append(f'{path}: resized the {w}x{h} image to {size}x{size} (shorter side, then '
                 f'a centre crop), the size the model makes.')
  return image.astype(np.float32) / 127.5 - 1., notes


def load_mask(path: str, size: int) -> np.ndarray:
  """A mask image, white = the region to generate -> bool [size, size]. Refuses another
  size (a mask is drawn for the frame it marks; resizing would move its edges)."""
  mask = _read_still(path, 'mask', 'PNG')
  if mask.shape[:2] != (size, size):
    raise ValueError(f'the mask {path} is {mask.shape[1]}x{mask.shape[0]} pixels; the model '
                     f'makes {size}x{size} frames: give a {size}x{size} mask (white = the '
                     f'region to generate).')
  return mask.max(axis=-1) >= 128
