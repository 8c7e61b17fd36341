"""Is the layout bias what makes long clips replay? experiments/long_video.py with the
layout bias evaluated on the long clip's frame grid instead of each window's.

  python experiments/long_video_global_layout.py --sampler=dpm++2m-sde --num_steps=12 \
      --name=long_video_shipped_global_layout
  python experiments/long_video_global_layout.py --workdir=workdir/stationary_circular \
      --name=long_video_stationary_circular_global_layout

The layout bias (stunet.layers.LayoutBias) adds the prompt's mean clip, a sum of cosines
over (frame, row, column) of the window: each MultiDiffusion window of a long clip is
told to start its motion at its own first frame. Here the frame cosines are taken at the
frames' positions in the whole clip (window starting at s: (s + i + 0.5) / T, not
(i + 0.5) / L), so every window agrees where the mean clip puts the object, and a
"moves left" spans the whole clip once. Same weights, same flags and measures as
long_video.py (docs/long_videos.md); the windows of a clip go through the network in one
call, so that each row of the batch knows its window.
"""

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np
from flax import linen as nn

from stunet import cli
from stunet import generator
from stunet import layers

# The windows of the clip being sampled: their first frames and the clip's length.
CLIP = {}


def _cosines(m: int, positions: np.ndarray) -> np.ndarray:
  """[..., m, n]: the first m DCT-II cosines at positions in [0, 1] [..., n]."""
  return np.cos(np.pi * np.arange(m)[:, None] * positions[..., None, :])


class ClipLayoutBias(layers.LayoutBias):
  """LayoutBias (same parameters) whose frame cosines are the clip's, not the window's.

  The sampler's rows are [conditional, unconditional], each windows-major (window j's
  b examples at rows j*b .. j*b + b - 1: stunet.multidiffusion.apply with every window
  in one call). With no clip set it is LayoutBias."""

  @nn.compact
  def __call__(self, emb, shape):
    m, (t, h, w), rows = self.num_basis, shape, emb.shape[0]
    starts = np.asarray(CLIP.get('starts', ()), np.int64)
    if starts.size and rows % (2 * starts.size) == 0:
      window = (np.arange(rows) % (rows // 2)) // (rows // (2 * starts.size))
      frames = (starts[window][:, None] + np.arange(t) + .5) / CLIP['frames']  # [rows, t]
    else:
      frames = np.broadcast_to((np.arange(t) + .5) / t, (rows, t))
    space = np.einsum('by,cx->bcyx', _cosines(m, (np.arange(h) + .5) / h),
                      _cosines(m, (np.arange(w) + .5) / w))
    a = layers.dense(m ** 3 * self.features, 'proj', self.dtype, zero=True)(nn.swish(emb))
    a = self.gain * a.reshape(rows, m, m, m, self.features)
    return jnp.einsum('rabcf,rat,bcyx->rtyxf', a, jnp.asarray(_cosines(m, frames), self.dtype),
                      jnp.asarray(space, self.dtype))


_windows = generator.Generator.windows


def _all_windows_at_once(self, num_frames, b=1):
  """Generator.windows with every window in one network call, recorded in CLIP."""
  windows = _windows(self, num_frames, b)
  CLIP.clear()
  if windows is not None:
    windows = dataclasses.replace(windows, batch=len(windows.starts))
    CLIP.update(starts=windows.starts, frames=num_frames)
  return windows


def install():
  """Swaps the model's layout bias and the generator's windows for the ones above."""
  layers.LayoutBias = ClipLayoutBias
  generator.Generator.windows = _all_windows_at_once


if __name__ == '__main__':
  import long_video  # pylint: disable=g-import-not-at-top  # experiments/, beside this script
  install()
  cli.run(long_video.main)
