"""Samplers: DDPM ancestral, DDIM and DPM-Solver++(2M), classifier-free guidance,
dynamic thresholding.

The whole denoising loop over the full clip (text encoding, every step, the final
clip to [-1, 1]) is one ``jax.jit``-compiled function built by ``make_sampler``; the
loop is a ``lax.scan`` and the RNG is folded in per step, so the same seed gives
the same video and repeated calls with the same shapes never recompile. This module
holds the maths; ``stunet.generator`` loads models and turns prompts into videos.
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P

from stunet import diffusion as D
from stunet import folding
from stunet import multidiffusion
from stunet import prompt_schedule
from stunet import sharding
from stunet import ssr

# config.sample.sampler: deterministic DDIM (eta = 0), ancestral DDPM, or the second-order
# multistep DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095) on the data prediction:
# of the probability-flow ODE (deterministic, DDIM's second-order counterpart) or of the
# SDE ('-sde': stochastic, DDPM's second-order counterpart).
SAMPLERS = ('ddim', 'ddpm', 'dpm++2m', 'dpm++2m-sde')
# config.sample.spacing: the step times t_i, i = 0..N, from t_start down to 0: uniform,
# t_start (1 - i/N), or quadratic, t_start (1 - i/N)^2 (DPM-Solver's time_quadratic),
# whose last step predicts from t_start / N^2 instead of t_start / N: the sample is the
# last prediction, made at noise level sigma = 0.13 after 12 uniform steps and 0.01
# after 12 quadratic ones.
SPACINGS = ('uniform', 'quadratic')


def step_times(num_steps: int, t_start=1., spacing: str = 'uniform'):
  """float32 [num_steps + 1]: the times from t_start down to 0 (``SPACINGS``)."""
  if spacing not in SPACINGS:
    raise ValueError(f'unknown step spacing {spacing!r}; use one of {", ".join(SPACINGS)}.')
  u = 1. - jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps
  return t_start * (u if spacing == 'uniform' else u * u)


def dynamic_threshold(x, percentile: float = 0.995):
  """Imagen's dynamic thresholding: s = quantile(|x|, p) per example, clip to [-s, s], / s.

  x: [b, ...]. With s <= 1 this is a plain clip to [-1, 1]; percentile 0 is always
  the plain (static) clip. Dynamic thresholding rescales the whole clip when a few
  pixels overshoot, which hurts data that sits at the range's ends (the shapes
  dataset's black background): the SSR config uses the static clip.
  """
  if not percentile:
    return jnp.clip(x, -1., 1.)
  flat = jnp.abs(x.reshape(x.shape[0], -1)).astype(jnp.float32)
  s = jnp.maximum(jnp.quantile(flat, percentile, axis=1), 1.)
  s = D.per_example(s, x)
  return jnp.clip(x, -s, s) / s


def guided_v(v_cond, v_uncond, guidance):
  """Classifier-free guidance: (1 + w) v(z, c) - w v(z, null)."""
  return (1. + guidance) * v_cond - guidance * v_uncond


def ddim_step(z, x_hat, t, s):
  """Deterministic DDIM update z_t -> z_s (eta = 0), t > s."""
  a_t, sig_t = D.alpha_sigma(D.logsnr_schedule_cosine(t))
  a_s, sig_s = D.alpha_sigma(D.logsnr_schedule_cosine(s))
  eps = (z - a_t * x_hat) / sig_t
  return a_s * x_hat + sig_s * eps


def ddpm_step(rng, z, x_hat, t, s, shared_noise=0.):
  """Ancestral step: a draw from q(z_s | z_t, x = x_hat), t > s."""
  lt, ls = D.logsnr_schedule_cosine(t), D.logsnr_schedule_cosine(s)
  a_t, _ = D.alpha_sigma(lt)
  a_s, sig_s = D.alpha_sigma(ls)
  c = -jnp.expm1(lt - ls)  # sigma_{t|s}^2 / sigma_t^2
  mean = a_s * (z * (1. - c) / a_t + c * x_hat)
  return mean + jnp.sqrt(c) * sig_s * D.video_noise(rng, z.shape, shared_noise)


def dpmpp_2m_step(z, x_hat, x_prev, t_prev, t, s, first_order, rng=None,
                  shared_noise=0.):
  """DPM-Solver++(2M) update z_t -> z_s, t > s, from the data predictions at t (x_hat)
  and at the previous time t_prev (x_prev). With lambda = log(alpha / sigma) = logsnr / 2,
  h = lambda_s - lambda_t and D = x_hat + (x_hat - x_prev) / (2 r), r = (lambda_t -
  lambda_prev) / h, the ODE solver (rng None) steps

    z_s = (sigma_s / sigma_t) z_t + alpha_s (1 - e^-h) D,

  and the SDE solver (rng given; the midpoint form of diffusers' sde-dpmsolver++)

    z_s = (sigma_s / sigma_t) e^-h z_t + alpha_s (1 - e^-2h) D
          + sigma_s sqrt(1 - e^-2h) noise.

  first_order (traced bool): D = x_hat, which makes them exactly the DDIM step and the
  DDPM ancestral step (the Gaussian posterior's mean and standard deviation)."""
  lam = lambda u: 0.5 * D.logsnr_schedule_cosine(u)
  l_prev, l_t, l_s = lam(t_prev), lam(t), lam(s)
  _, sig_t = D.alpha_sigma(2. * l_t)
  a_s, sig_s = D.alpha_sigma(2. * l_s)
  h = l_s - l_t
  r = jnp.where(first_order, 1., (l_t - l_prev) / h)
  d = jnp.where(first_order, x_hat, x_hat + (x_hat - x_prev) / (2. * r))
  if rng is None:
    return (sig_s / sig_t) * z - a_s * jnp.expm1(-h) * d
  keep = -jnp.expm1(-2. * h)  # 1 - e^-2h
  noise = D.video_noise(rng, z.shape, shared_noise)
  return (sig_s / sig_t) * jnp.exp(-h) * z + a_s * keep * d + sig_s * jnp.sqrt(keep) * noise


def make_sampler(model, shape, *, num_steps: int, sampler: str, threshold: float,
                 t_start: float = 1.0, spacing: str = 'uniform',
                 windows: Optional[multidiffusion.Windows] = None,
                 mesh: Optional[jax.sharding.Mesh] = None, rules=(),
                 progress: Optional[Callable] = None,
                 preview: Optional[Callable] = None,
                 shared_noise: float = 0.,
                 schedule: Optional[tuple] = None) -> Callable:
  """Returns ``sample(params, tokens, mask, null_tokens, null_mask, rng, guidance,
  z_init=None, lowres=None, lowres_aug=0., cond_video=None, cond_mask=None)``.

  shape: (b, t, h, w, c) of the video. tokens, mask: [b, L]; null_*: [b, L] (the
  unconditional branch's prompt: the empty one, or a negative prompt). guidance: scalar
  weight w (traced: changing it does not recompile).
  z_init: optional starting point [b, t, h, w, c] at time t_start (SDEdit); by
  default pure noise at t = 1. lowres: the SSR's low-res video [b, t, h', w', c],
  noise-augmented to level lowres_aug (traced). cond_video, cond_mask: the conditional
  STUNet's conditioning video [b, t, h, w, c] and mask [b, t, h, w, 1]
  (``stunet.conditioning``), given to both guidance branches. windows: denoise overlapping
  temporal windows fused by MultiDiffusion at every step (``stunet.multidiffusion``)
  instead of the whole clip at once; any sampler works, since what is fused is the
  denoiser's prediction and the step is then taken on the whole clip. Returns
  videos in [-1, 1], float32.

  mesh, rules: run on this device mesh under these logical axis rules (config.mesh's):
  the network's activations are split as in training (stunet.layers: the batch, and
  the MultiDiffusion windows stacked along it, over data x fsdp; each clip over the
  context axis), the parameters stay in the shardings they come in (those of training,
  ``checkpoints.load_params``), and the videos come out split over data x fsdp.

  shared_noise: the model's ``config.model.shared_noise``: the share of every noise
  draw (the start and the stochastic samplers' steps) common to a clip's frames.

  schedule: the first frame of each of K prompts (``stunet.prompt_schedule``): tokens
  and mask are then [b, K, L], every video's K prompts, and each window is conditioned
  on the mix of the prompts of its frames.

  progress, preview: host functions called from inside the loop after every step
  (``jax.debug.callback``; None compiles nothing in): ``progress(step, num_steps)``
  (step counts from 1; nothing leaves the device) for progress bars, and
  ``preview(step, t, x_hat)`` with the step's guided, thresholded prediction of the
  clean videos [b, t, h, w, c] (a numpy array, copied to the host at every step) to
  watch a sample form.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f'unknown sampler {sampler!r}; use one of {", ".join(SAMPLERS)}.')
  if windows is not None and windows.num_frames != shape[1]:
    raise ValueError(f'windows for {windows.num_frames} frames, clip of {shape[1]}.')
  b = shape[0]

  if schedule is not None:
    prompt_schedule.check(schedule, len(schedule), shape[1])
  spans = ([(s, windows.length) for s in windows.starts] if windows is not None
           else [(0, shape[1])])

  def guided_x(params, z, t, text, mask, null_text, null_mask, guidance, extra, *cond):
    """Guided x-prediction of z [n, ...] before thresholding. n = b x (windows per call),
    windows-major; the conditional and unconditional predictions run in one batch.
    Per-example inputs of b rows are repeated for every window (text and mask may
    already have n rows: a prompt schedule's text per window)."""
    n = z.shape[0]
    tile = lambda a: a if a.shape[0] == n else jnp.tile(a, (n // b,) + (1,) * (a.ndim - 1))
    both = lambda cond, uncond: jnp.concatenate([cond, uncond])
    v = model.apply(params, both(z, z), jnp.full((2 * n,), t),
                    both(tile(text), tile(null_text)), both(tile(mask), tile(null_mask)),
                    *(both(c, c) for c in cond), *(both(tile(e), tile(e)) for e in extra),
                    method='denoise')
    return D.x_from_v(z, jnp.full((n,), t), guided_v(v[:n], v[n:], guidance))

  def sample(params, tokens, mask, null_tokens, null_mask, rng, guidance,
             z_init: Optional[jax.Array] = None, lowres: Optional[jax.Array] = None,
             lowres_aug=0., cond_video: Optional[jax.Array] = None,
             cond_mask: Optional[jax.Array] = None):
    if schedule is None:
      text = model.apply(params, tokens, mask, method='encode_text')
    else:  # [W, b, L, d]: every window's mix of its frames' prompts
      k, length = tokens.shape[1:]
      text = model.apply(params, tokens.reshape(-1, length), mask.reshape(-1, length),
                         method='encode_text')
      text, mask = prompt_schedule.mix(
          text.reshape((b, k) + text.shape[1:]), mask,
          jnp.asarray(prompt_schedule.shares(schedule, shape[1], spans)))
    null_text = model.apply(params, null_tokens, null_mask, method='encode_text')
    noise_rng, step_rng = jax.random.split(rng)
    z = folding.constrain(D.video_noise(noise_rng, shape, shared_noise),
                          folding.ACTIVATION)
    if z_init is not None:
      z = D.q_sample(z_init, jnp.full((b,), t_start), z)
    # Inputs cut with the clip into MultiDiffusion windows, and per-example ones.
    cond = (cond_video, cond_mask) if cond_video is not None else ()
    extra = ()
    if lowres is not None:  # SSR: the low-res video, noised once to a fixed level
      aug_t = jnp.full((b,), lowres_aug, jnp.float32)
      cond = (ssr.augment(jax.random.fold_in(noise_rng, 1), lowres, aug_t), lowres)
      extra = (aug_t,)
    times = step_times(num_steps, t_start, spacing)

    def predict(z, t):
      if schedule is None:
        fn = lambda zw, *cw: guided_x(params, zw, t, text, mask, null_text, null_mask,
                                      guidance, extra, *cw)
        x = fn(z, *cond) if windows is None else multidiffusion.apply(fn, z, windows, cond)
      else:  # the window's text and mask come last
        fn = lambda zw, *cw: guided_x(params, zw, t, cw[-2], cw[-1], null_text, null_mask,
                                      guidance, extra, *cw[:-2])
        x = (fn(z, *cond, text[0], mask[0]) if windows is None else
             multidiffusion.apply(fn, z, windows, cond, per_window=(text, mask)))
      return dynamic_threshold(x, threshold)

    def body(carry, i):
      z, x_prev = carry
      t, s = times[i], times[i + 1]
      x_hat = predict(z, t)
      if progress is not None:
        jax.debug.callback(progress, i + 1, num_steps)
      if preview is not None:
        jax.debug.callback(preview, i + 1, t, x_hat)
      rng = jax.random.fold_in(step_rng, i)
      if sampler == 'ddim':
        z = ddim_step(z, x_hat, t, s)
      elif sampler == 'ddpm':
        z = ddpm_step(rng, z, x_hat, t, s, shared_noise)
      else:
        # First order at the first step (no previous prediction) and at the last: the
        # schedule ends at logsnr 20, so the last interval in lambda is long (h of 7-10
        # against < 1 before it) and the extrapolation over it overshoots; the authors'
        # lower_order_final does the same for short schedules.
        first = (i == 0) | (i == num_steps - 1)
        z = dpmpp_2m_step(z, x_hat, x_prev, times[jnp.maximum(i - 1, 0)], t, s, first,
                          rng if sampler == 'dpm++2m-sde' else None, shared_noise)
      return (z, x_hat), None

    (_, x_hat), _ = jax.lax.scan(body, (z, jnp.zeros(shape, jnp.float32)),
                                 jnp.arange(num_steps))
    # The last prediction, at the lowest noise level, is the sample (every sampler's
    # step to t = 0, at alpha = 1 and sigma ~ 0, returns it).
    return jnp.clip(x_hat, -1., 1.)

  if mesh is None:
    return jax.jit(sample)

  def sample_on_mesh(*args, **kwargs):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
      return sample(*args, **kwargs)

  data = tuple(a for a in sharding.BATCH_AXES if mesh.shape.get(a, 1) > 1)
  split = int(np.prod([mesh.shape[a] for a in data]))
  out = NamedSharding(mesh, P(data if data and b % split == 0 else None))
  return jax.jit(sample_on_mesh, out_shardings=out)
