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

import numpy as np  # pylint: disable=g-import-not-at-top

from stunet import cli
from stunet import generator
from stunet import layers

# The windows of the clip being sampled: their first frames and the clip's length.
CLIP = {}


class ClipLayoutBias(layers.LayoutBias):
  """LayoutBias (same parameters) whose frame cosines are the clip's, not the window's:
  each row gets its window's frames of the clip-long bias.

  The sampler's rows are [conditional, unconditional], each windows-major (window j's
  b examples at rows j*b .. j*b + b - 1: stunet.multidiffusion.apply with every window
  in one call). With no clip set it is LayoutBias."""

  def __call__(self, emb, shape):
    rows, starts = emb.shape[0], np.asarray(CLIP.get('starts', ()), np.int64)
    if not starts.size or rows % (2 * starts.size):
      return super().__call__(emb, shape)
    whole = super().__call__(emb, (CLIP['frames'],) + tuple(shape[1:]))  # [rows, T, ...]
    window = (np.arange(rows) % (rows // 2)) // (rows // (2 * starts.size))
    frames = starts[window][:, None] + np.arange(shape[0])  # [rows, t]
    return whole[np.arange(rows)[:, None], frames]


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
