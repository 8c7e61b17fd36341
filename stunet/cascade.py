"""The keyframe + temporal super-resolution (TSR) cascade that Lumiere argues against.

A keyframe model generates every ``stride``-th frame of a clip; a TSR model fills in
the frames between them, one window of ``window`` frames at a time, given the
keyframes that fall in the window (the <frames, mask> conditioning of
``stunet.conditioning``). Both are STUNets of the same family (configs/tiny.py:
stage=keyframes and stage=tsr). For 16 frames, stride 4 and window 8:

  keyframes     0 . . . 4 . . . 8 . . . 12 . . .
  window 0      [0 ........... 7]                     given 0, 4: makes 1-3
  window 1              [4 ........... 11]            given 4, 8: makes 5-7
  window 2                      [8 ........... 15]    given 8, 12: makes 9-11, 13-15

Every frame comes from the last window that holds it: the window whose keyframes
bracket it where there is one (the frames after the last keyframe are extrapolated
by the last window). The windows are denoised independently, in one batch, as a
cascade's TSR stage does: no window sees another's frames. The keyframes are kept
exactly where they were.

Training views (``training_view``, inside the jitted step) cut the same shapes out
of the data's clips: every stride-th frame, or a window at a random start of
``window_starts`` with the mask of its keyframes.
"""

import jax
import jax.numpy as jnp
import numpy as np


# config.cascade.role: '' (the STUNet itself, every frame), or a stage of the cascade.
ROLES = ('', 'keyframes', 'tsr')


def model_frames(config) -> int:
  """Frames the model of ``config`` sees: the clip, its keyframes or a TSR window."""
  if not config.model.temporal:
    return 1
  role = config.cascade.role
  if role == 'keyframes':
    return config.data.num_frames // config.cascade.stride
  return config.cascade.window if role == 'tsr' else config.data.num_frames


def check_window(num_frames: int, stride: int, window: int) -> None:
  """Refuses a TSR window that does not fit between keyframes of the clip."""
  if num_frames % stride or window % stride or not stride < window <= num_frames:
    raise ValueError(f'a TSR window of {window} frames (config.cascade.window) with '
                     f'keyframes every {stride} (config.cascade.stride) in a clip of '
                     f'{num_frames}: the window must be a multiple of the stride, longer '
                     f'than it and no longer than the clip, which the stride divides.')


def window_starts(num_frames: int, stride: int, window: int) -> tuple:
  """First frames of the TSR windows: the multiples of stride that keep the window
  inside the clip (16, 4, 8 -> 0, 4, 8)."""
  check_window(num_frames, stride, window)
  return tuple(range(0, num_frames - window + 1, stride))


def key_mask(window: int, stride: int) -> np.ndarray:
  """float32 [window]: 1 at the window's keyframes (its multiples of stride)."""
  return (np.arange(window) % stride == 0).astype(np.float32)


def training_view(rng, video, cascade_role: str, stride: int, window: int):
  """What a cascade stage trains on, from clips [b, t, h, w, 3] (jittable).

  keyframes: (video[:, ::stride], None). tsr: (one window per clip at a random start
  of ``window_starts``, (its keyframes, their mask)): the conditioning video is 0
  and its mask [b, window, h, w, 1] 0 except at the keyframes.
  """
  if cascade_role == 'keyframes':
    return video[:, ::stride], None
  b, t = video.shape[:2]
  starts = jnp.asarray(window_starts(t, stride, window))
  start = jax.random.choice(rng, starts, (b,))
  idx = start[:, None] + jnp.arange(window)[None]
  win = jnp.take_along_axis(video, idx[:, :, None, None, None], axis=1)
  mask = jnp.broadcast_to(jnp.asarray(key_mask(window, stride))[None, :, None, None, None],
                          win.shape[:-1] + (1,))
  return win, (win * mask, mask)


class Cascade:
  """Keyframes, then TSR windows. Called like a ``generator.Generator``:
  (prompts, guidance, seed) -> videos float32 [b, num_frames, h, w, 3] in [-1, 1].

  keyframes / tsr: Generators of a stage=keyframes and a stage=tsr run; each runs its
  own configured sampler (the same number of denoising steps per stage, by default).
  """

  def __init__(self, keyframes, tsr, *, num_frames: int, stride: int, window: int):
    self.keyframes, self.tsr = keyframes, tsr
    self.num_frames, self.stride, self.window = num_frames, stride, window
    self.starts = window_starts(num_frames, stride, window)

  @classmethod
  def from_stages(cls, keyframes, keyframe_config, tsr, tsr_config,
                  names=('the keyframe run', 'the TSR run')):
    """The cascade of a stage=keyframes and a stage=tsr Generator (e.g. from
    ``generator.Generator.from_workdir``) and their configs, checked to belong together;
    names: how errors call the two runs (their workdirs)."""
    for name, config, want in ((names[0], keyframe_config, 'keyframes'),
                               (names[1], tsr_config, 'tsr')):
      if config.cascade.role != want:
        raise ValueError(f'{name} is not a {want} model (config.cascade.role='
                         f'{config.cascade.role!r}): train it with configs/tiny.py:stage={want}.')
    kc, tc = keyframe_config, tsr_config
    if (kc.cascade.stride, kc.data.num_frames) != (tc.cascade.stride, tc.data.num_frames):
      raise ValueError(f'{names[0]} takes every {kc.cascade.stride}th of '
                       f'{kc.data.num_frames} frames, {names[1]} was trained for every '
                       f'{tc.cascade.stride}th of {tc.data.num_frames}: train them alike.')
    return cls(keyframes, tsr, num_frames=kc.data.num_frames, stride=kc.cascade.stride,
               window=tc.cascade.window)

  def __call__(self, prompts, *, guidance: float, seed: int = 0, keyframes=None):
    """keyframes: [b, num_frames // stride, h, w, 3] to fill in (default: generated)."""
    if keyframes is None:
      keyframes = self.keyframes(prompts, guidance=guidance, seed=seed,
                                 num_frames=self.num_frames // self.stride)
    return self.fill(prompts, keyframes, guidance=guidance, seed=seed + 1)

  def fill(self, prompts, keyframes, *, guidance: float, seed: int = 0) -> np.ndarray:
    """The TSR stage: every window at once, one batch of b x windows."""
    keyframes = np.asarray(keyframes, np.float32)
    b, k = keyframes.shape[:2]
    if b != len(prompts) or k * self.stride != self.num_frames:
      raise ValueError(f'keyframes of shape {keyframes.shape}: need [{len(prompts)}, '
                       f'{self.num_frames // self.stride}, h, w, 3], one clip per prompt.')
    clip = np.zeros((b, self.num_frames) + keyframes.shape[2:], np.float32)
    clip[:, ::self.stride] = keyframes
    n, w = len(self.starts), self.window
    windows = np.stack([clip[:, s:s + w] for s in self.starts], 1)  # [b, n, w, h, w, 3]
    windows = windows.reshape((b * n,) + windows.shape[2:])
    mask = np.broadcast_to(key_mask(w, self.stride)[None, :, None, None, None],
                           windows.shape[:-1] + (1,)).astype(np.float32)
    out = self.tsr([p for p in prompts for _ in self.starts], guidance=guidance, seed=seed,
                   cond=(windows * mask, mask))
    out = np.asarray(out).reshape((b, n) + out.shape[1:])
    for i, s in enumerate(self.starts):  # later windows overwrite: see the module doc
      clip[:, s:s + w] = out[:, i]
    clip[:, ::self.stride] = keyframes
    return clip
