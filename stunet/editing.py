"""Video-to-video editing with the text-to-video model: SDEdit (Meng et al. 2022).

The input video x is noised to an intermediate time t = ``strength`` (z_t = alpha_t x +
sigma_t eps) and denoised from there with the new prompt. What the noise at t has
not erased (at small t the layout, colours and motion; at large t little) survives;
what it erased follows the prompt. Lumiere can do this with its base model alone
because it generates every frame of the clip at once (SPEC, "Applications"): there is
no keyframe stage that would resample the input's motion.

  strength 0: the input, unchanged (nothing is denoised);
  strength 1: the input is ignored: exactly the text-to-video sample of the same seed.

The denoising steps are spaced as in a full run: ``round(strength x num_steps)`` steps
from t = strength to 0.
"""

import numpy as np

from stunet import video_io


def check_strength(strength: float) -> float:
  if not 0. <= strength <= 1.:
    raise ValueError(f'strength {strength} is outside [0, 1]: 0 returns the input video, '
                     f'1 ignores it (on the shipped model a new colour takes about '
                     f'0.85, README "Applications").')
  return float(strength)


def load_video(path: str, frames: int, size: int) -> tuple[np.ndarray, list[str]]:
  """A video file -> (float32 [frames, size, size, 3] in [-1, 1], notes for the user).

  Frames of another size are resized (shorter side to ``size``) and centre-cropped by
  ``video_io.read_video``; a longer clip is cut to its first ``frames`` frames. Each
  change is reported in the notes. Raises ValueError for a clip with too few frames.
  """
  # One frame more than needed tells whether the clip was cut, without decoding it all.
  video = video_io.read_video(path, max_frames=frames + 1)
  notes = []
  h, w = video.shape[1:3]
  if (h, w) != (size, size):
    video = video_io.read_video(path, size=size, max_frames=frames + 1)
    notes.append(f'{path}: resized its {w}x{h} frames to {size}x{size} (shorter side, then '
                 f'a centre crop), the size the model makes.')
  if len(video) < frames:
    raise ValueError(f'{path} has {len(video)} frames; the model edits clips of {frames}: '
                     f'give a clip of at least {frames} frames, or --frames with fewer.')
  if len(video) > frames:
    notes.append(f'{path}: used its first {frames} frames.')
  video = video[:frames]
  return video.astype(np.float32) / 127.5 - 1., notes


def sdedit(generator, prompts: list, videos: np.ndarray, *, strength: float,
           guidance: float, seed: int = 0) -> np.ndarray:
  """Edits ``videos`` [b, t, h, w, 3] in [-1, 1] towards ``prompts`` (b of them) with a
  ``sampling.Generator`` -> float32 [b, t, h, w, 3] in [-1, 1]."""
  strength = check_strength(strength)
  videos = np.asarray(videos, np.float32)
  want = (len(prompts),) + generator.video_shape[1:]
  if videos.ndim != 5 or (videos.shape[0],) + videos.shape[2:] != want:
    raise ValueError(f'videos of shape {videos.shape} to edit: need '
                     f'[{len(prompts)}, frames, {", ".join(map(str, want[1:]))}] (one per '
                     f'prompt, the frame size the model makes).')
  if strength == 0.:
    return videos.copy()
  kw = dict(guidance=guidance, seed=seed, num_frames=videos.shape[1])
  if strength == 1.:  # pure noise: the text-to-video sample itself
    return generator(prompts, **kw)
  steps = max(1, round(strength * generator.kw['num_steps']))
  return generator(prompts, init=videos, t_start=strength, num_steps=steps, **kw)
