"""Editing and style with the text-to-video model: SDEdit, and style interpolation.

Video-to-video editing is SDEdit (Meng et al. 2022).
The input video x is noised to an intermediate time t = ``strength`` (z_t = alpha_t x +
sigma_t eps) and denoised from there with the new prompt. What the noise at t has
not erased (at small t the layout, colours and motion; at large t little) survives;
what it erased follows the prompt. Lumiere can do this with its base model alone
because it generates every frame of the clip at once (Lumiere, "Applications"): there is
no keyframe stage that would resample the input's motion.

  strength 0: the input, unchanged (nothing is denoised);
  strength 1: the input is ignored: exactly the text-to-video sample of the same seed.

The denoising steps are spaced as in a full run: ``round(strength x num_steps)`` steps
from t = strength to 0.

Stylized generation (Lumiere, after StyleDrop): the spatial (T2I) weights fine-tuned on
a style (configs/tiny.py:stage=style, the temporal layers frozen) are interpolated
with the original ones, W = alpha W_style + (1 - alpha) W_orig. The paper finds that
plugging the style weights in directly (alpha = 1) can distort the motion or stop it,
and uses alpha in [0.5, 1]; ``interpolate_style`` makes any alpha.
"""

import jax
import numpy as np


def check_strength(strength: float) -> float:
  if not 0. <= strength <= 1.:  # (NaN fails too)
    raise ValueError(f'strength {strength} is outside [0, 1]: 0 returns the input video, '
                     f'1 ignores it (on the shipped model a new colour takes about '
                     f'0.85, docs/applications.md).')
  return float(strength)


def sdedit(generator, prompts: list, videos: np.ndarray, *, strength: float,
           guidance: float, seed: int = 0, **sampler_kw) -> np.ndarray:
  """Edits ``videos`` [b, t, h, w, 3] in [-1, 1] towards ``prompts`` (b of them) with a
  ``generator.Generator`` -> float32 [b, t, h, w, 3] in [-1, 1]. sampler_kw: the
  Generator call's options (negative_prompt, progress, preview)."""
  strength = check_strength(strength)
  videos = np.asarray(videos, np.float32)
  want = (len(prompts),) + generator.video_shape[1:]
  if videos.ndim != 5 or (videos.shape[0],) + videos.shape[2:] != want:
    raise ValueError(f'videos of shape {videos.shape} to edit: need '
                     f'[{len(prompts)}, frames, {", ".join(map(str, want[1:]))}] (one per '
                     f'prompt, the frame size the model makes).')
  if strength == 0.:
    return videos.copy()
  kw = dict(guidance=guidance, seed=seed, num_frames=videos.shape[1], **sampler_kw)
  if strength == 1.:  # pure noise: the text-to-video sample itself
    return generator(prompts, **kw)
  steps = max(1, round(strength * generator.kw['num_steps']))
  return generator(prompts, init=videos, t_start=strength, num_steps=steps, **kw)


def check_alpha(alpha: float) -> float:
  if not 0. <= alpha <= 1.:  # (NaN fails too)
    raise ValueError(f'style alpha {alpha} is outside [0, 1]: 0 keeps the original '
                     f'weights, 1 plugs in the style weights (the paper uses 0.5-1).')
  return float(alpha)


def interpolate_style(original, style, alpha: float):
  """alpha * style + (1 - alpha) * original, leaf by leaf, for two parameter trees of
  the same model (alpha 0: the original exactly; 1: the style exactly)."""
  alpha = check_alpha(alpha)
  if jax.tree.structure(original) != jax.tree.structure(style):
    raise ValueError('the style weights are not of this model (their parameter names '
                     'differ): fine-tune them from it with configs/tiny.py:stage=style.')
  def mix(o, s):
    if o.shape != s.shape:
      raise ValueError(f'style weight of shape {s.shape} where the model has {o.shape}: '
                       f'fine-tune the style from this model (configs/tiny.py:stage=style).')
    if alpha in (0., 1.):
      return o if alpha == 0. else s
    return alpha * s + (1. - alpha) * o
  return jax.tree.map(mix, original, style)
