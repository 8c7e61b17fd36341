"""MultiDiffusion over overlapping temporal windows (Bar-Tal et al. 2023; Lumiere's SSR).

A clip of T frames is covered by windows of ``length`` frames that overlap by
``overlap`` frames (the paper: 2). At every denoising step the denoiser runs on each
window and the windows' predictions are fused into one clip prediction by the
per-frame weighted average

    x_hat[f] = sum_i w_i[f - s_i] x_hat_i[f - s_i] / sum_i w_i[f - s_i]

over the windows i that contain frame f (s_i: the window's first frame). This is the
closed form of MultiDiffusion's argmin_J sum_i ||W_i (F_i(J) - Phi(F_i(J_t)))||^2 for
windows that are crops. The sampler then takes one step on the whole clip, so
overlapping frames share one state and no seam appears in time.

Windows run in a ``lax.scan``, ``batch`` windows per denoiser call, so peak memory is
the activations of ``batch`` windows (plus clip-sized buffers of the noisy video and
the prediction, a few bytes per pixel), whatever the clip length.

Used for the base model too, a clip longer than the trained length can be made from
windows of the trained length; only frames within one window see each other in a
single call, so content and motion can drift along a long clip (the overlaps keep
it continuous, not globally coherent).
"""

import dataclasses
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Per-frame fusion weights of a window (config.sample.weighting; frame_weights).
WEIGHTINGS = ('uniform', 'ramp')


def check_windows(length: int, overlap: int, length_name: str = 'window length',
                  overlap_name: str = 'overlap') -> None:
  """Refuses windows that cannot tile a clip: length >= 1 and 0 <= overlap < length."""
  if length < 1 or not 0 <= overlap < length:
    raise ValueError(f'{length_name}={length}, {overlap_name}={overlap}: need a window of '
                     f'at least 1 frame and 0 <= overlap < window.')


def window_starts(num_frames: int, length: int, overlap: int) -> tuple[int, ...]:
  """First frames of windows that cover [0, num_frames) with at least ``overlap`` shared.

  Windows step by length - overlap; the last one is aligned to the clip's end (so it
  may overlap its neighbour by more). 80 frames, length 16, overlap 2:
  (0, 14, 28, 42, 56, 64).
  """
  check_windows(length, overlap)
  if length > num_frames:
    raise ValueError(f'window length {length} is longer than the clip ({num_frames} frames); '
                     f'use a window of at most {num_frames} frames.')
  stride = length - overlap
  starts = list(range(0, num_frames - length + 1, stride))
  if starts[-1] + length < num_frames:
    starts.append(num_frames - length)
  return tuple(starts)


def frame_weights(length: int, overlap: int, weighting: str = 'uniform') -> np.ndarray:
  """Per-frame weight of a window's prediction in the fusion, [length], all > 0.

  'uniform' (Lumiere): every frame 1. 'ramp': frames in the first/last ``overlap``
  frames ramp linearly up/down (1/(overlap+1), ..., 1), so a window's edge frames,
  which see the fewest neighbours, count less.
  """
  if weighting not in WEIGHTINGS:
    raise ValueError(f'unknown window weighting {weighting!r}; use one of {WEIGHTINGS}.')
  w = np.ones(length, np.float32)
  if weighting == 'ramp' and overlap:
    ramp = np.arange(1, overlap + 1, dtype=np.float32) / (overlap + 1)
    w[:overlap] = np.minimum(w[:overlap], ramp)
    w[length - overlap:] = np.minimum(w[length - overlap:], ramp[::-1])
  return w


@dataclasses.dataclass(frozen=True)
class Windows:
  """How a clip of ``num_frames`` is cut: window length, overlap, weighting, batch."""
  num_frames: int
  length: int
  overlap: int = 2
  weighting: str = 'uniform'
  batch: int = 1  # windows per denoiser call (peak memory grows with it, not with T)

  def __post_init__(self):
    window_starts(self.num_frames, self.length, self.overlap)  # validates
    frame_weights(self.length, self.overlap, self.weighting)
    if self.batch < 1:
      raise ValueError(f'windows per call must be >= 1, got {self.batch}.')

  @property
  def starts(self) -> tuple[int, ...]:
    return window_starts(self.num_frames, self.length, self.overlap)

  @property
  def weights(self) -> np.ndarray:
    return frame_weights(self.length, self.overlap, self.weighting)


def _add_window(num, den, pred, start, weights):
  """Accumulates one window's weighted prediction [b, L, ...] at frame ``start``."""
  w = jnp.asarray(weights, jnp.float32).reshape((1, -1) + (1,) * (pred.ndim - 2))
  zero = (0,) * (pred.ndim - 2)
  cur = jax.lax.dynamic_slice_in_dim(num, start, pred.shape[1], axis=1)
  num = jax.lax.dynamic_update_slice(num, cur + w * pred.astype(num.dtype), (0, start) + zero)
  cur = jax.lax.dynamic_slice_in_dim(den, start, pred.shape[1], axis=1)
  den = jax.lax.dynamic_update_slice(den, cur + w[..., :1], (0, start) + zero)
  return num, den


def _buffers(shape):
  return jnp.zeros(shape, jnp.float32), jnp.zeros(shape[:2] + (1,) * (len(shape) - 2),
                                                  jnp.float32)


def fuse(preds: Sequence[jax.Array], starts: Sequence[int], num_frames: int,
         weights: np.ndarray) -> jax.Array:
  """The per-frame weighted average of window predictions [b, L, ...] placed at ``starts``."""
  num, den = _buffers((preds[0].shape[0], num_frames) + preds[0].shape[2:])
  for pred, start in zip(preds, starts):
    num, den = _add_window(num, den, pred, start, weights)
  return num / den


def apply(fn: Callable, z: jax.Array, windows: Windows, cond: Sequence[jax.Array] = (),
          per_window: Sequence[jax.Array] = ()) -> jax.Array:
  """Runs ``fn(z_window, *cond_windows, *per_window_values)`` on every window and fuses
  the predictions.

  z: [b, T, ...]; cond: arrays [b, T, ...] cut into the same windows (e.g. the SSR's
  low-res video); per_window: arrays [num_windows, b, ...], one value per window and
  example (e.g. the text of a prompt schedule, ``stunet.prompt_schedule``); fn maps
  [n, L, ...] to a prediction of z's window shape. Windows go through a lax.scan,
  ``windows.batch`` at a time stacked along the batch axis (windows-major; the last
  group is padded with copies of the last window at weight 0).
  """
  if z.shape[1] != windows.num_frames:
    raise ValueError(f'clip of {z.shape[1]} frames, windows made for {windows.num_frames}.')
  starts, k, length = list(windows.starts), windows.batch, windows.length
  if any(a.shape[0] != len(starts) for a in per_window):
    raise ValueError(f'per-window values for {[a.shape[0] for a in per_window]} windows, '
                     f'the clip has {len(starts)}.')
  used = [1.] * len(starts) + [0.] * (-len(starts) % k)
  index = list(range(len(starts))) + [len(starts) - 1] * (len(used) - len(starts))
  starts += [starts[-1]] * (len(used) - len(starts))
  starts = jnp.asarray(starts, jnp.int32).reshape(-1, k)
  used = jnp.asarray(used, jnp.float32).reshape(-1, k)
  index = jnp.asarray(index, jnp.int32).reshape(-1, k)
  weights = jnp.asarray(windows.weights)
  b = z.shape[0]

  def cut(x, group):
    return jnp.concatenate([jax.lax.dynamic_slice_in_dim(x, group[j], length, axis=1)
                            for j in range(k)])

  def body(carry, xs):
    num, den = carry
    group, use, ids = xs
    values = [a[ids].reshape((k * b,) + a.shape[2:]) for a in per_window]
    pred = fn(cut(z, group), *(cut(c, group) for c in cond), *values)
    for j in range(k):
      num, den = _add_window(num, den, pred[j * b:(j + 1) * b], group[j], use[j] * weights)
    return (num, den), None

  (num, den), _ = jax.lax.scan(body, _buffers(z.shape), (starts, used, index))
  return (num / den).astype(z.dtype)
