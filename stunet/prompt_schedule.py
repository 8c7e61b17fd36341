"""Prompt schedules: one video whose prompt changes over time (transitions).

A schedule is K prompts and the first frame of each: prompt k holds frames
[first[k], first[k + 1]) (the last one to the clip's end). A long clip is denoised in
MultiDiffusion windows (``stunet.multidiffusion``), and each window is conditioned on
the text of its own frames, as Gen-L-Video (Wang et al. 2023) conditions each short
clip on its own prompt: the encoded prompts averaged with the share of the window's
frames each one holds. A window inside a segment sees that segment's prompt alone;
one that straddles a change sees a mix, and the windows' predictions are fused as
usual, so the change is blended over the windows that straddle it. A clip that fits
one window has one text, the mix of the whole schedule: a change over time needs a
clip longer than the window.
"""

from typing import Sequence

import jax.numpy as jnp
import numpy as np


def check(first_frames: Sequence[int], num_prompts: int, num_frames: int) -> tuple:
  """Refuses a schedule that does not map every frame to one prompt; returns it as a
  tuple of ints. first_frames: the first frame of each prompt's segment."""
  first = tuple(first_frames)
  if len(first) != num_prompts:
    raise ValueError(f'a prompt schedule of {num_prompts} prompts needs {num_prompts} first '
                     f'frames, one per prompt; got {len(first)}: {list(first)}.')
  if any(not isinstance(f, (int, np.integer)) or isinstance(f, bool) for f in first):
    raise ValueError(f'the first frames of a prompt schedule are whole numbers; got '
                     f'{list(first)}.')
  if first[0] != 0:
    raise ValueError(f'a prompt schedule starts at frame 0 (the first prompt holds the '
                     f'first frames); got {list(first)}.')
  if any(b <= a for a, b in zip(first, first[1:])):
    raise ValueError(f'the first frames of a prompt schedule must increase (one segment '
                     f'per prompt, in order); got {list(first)}.')
  if first[-1] >= num_frames:
    raise ValueError(f'the prompt schedule {list(first)} starts a prompt at frame '
                     f'{first[-1]}, past the clip of {num_frames} frames (0-{num_frames - 1}).')
  return tuple(int(f) for f in first)


def segment_of_frames(first_frames: Sequence[int], num_frames: int) -> np.ndarray:
  """int [num_frames]: the index of the prompt that holds each frame."""
  return np.searchsorted(np.asarray(first_frames), np.arange(num_frames), side='right') - 1


def shares(first_frames: Sequence[int], num_frames: int,
           spans: Sequence[tuple]) -> np.ndarray:
  """float32 [num_windows, K]: the share of each window's frames that each prompt holds.
  spans: (first frame, length) of every window."""
  seg = segment_of_frames(first_frames, num_frames)
  out = np.zeros((len(spans), len(first_frames)), np.float32)
  for w, (start, length) in enumerate(spans):
    out[w] = np.bincount(seg[start:start + length], minlength=len(first_frames)) / length
  return out


def mix(text, mask, window_shares):
  """Each window's text: the encoded prompts weighted by ``window_shares``.

  text [b, K, L, d], mask [b, K, L] (the K prompts of each video, encoded);
  window_shares [W, K] (``shares``). Returns ([W, b, L, d], [W, b, L]): prompt 0 plus the
  shares of the differences from it, so a schedule of one prompt repeated gives that
  prompt's text exactly; the mask is every token of a prompt that has a share.
  """
  base = text[:, 0]
  diff = text - text[:, :1]
  window_text = base[None] + jnp.einsum('wk,bkld->wbld', window_shares, diff)
  present = (window_shares > 0).astype(mask.dtype)
  window_mask = jnp.max(present[:, None, :, None] * mask[None], axis=2)
  return window_text.astype(text.dtype), window_mask
