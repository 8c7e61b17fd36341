"""Samplers: DDPM ancestral and DDIM, classifier-free guidance, dynamic thresholding.

The whole denoising loop over the full clip (text encoding, every step, the final
clip to [-1, 1]) is one ``jax.jit``-compiled function built by ``make_sampler``; the
loop is a ``lax.scan`` and the RNG is folded in per step, so the same seed gives
the same video and repeated calls with the same shapes never recompile.
"""

import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from stunet import diffusion as D

SAMPLERS = ('ddim', 'ddpm')


def dynamic_threshold(x, percentile: float = 0.995):
  """Imagen's dynamic thresholding: s = quantile(|x|, p) per example, clip to [-s, s], / s.

  x: [b, ...]. With s <= 1 this is a plain clip to [-1, 1].
  """
  flat = jnp.abs(x.reshape(x.shape[0], -1)).astype(jnp.float32)
  s = jnp.maximum(jnp.quantile(flat, percentile, axis=1), 1.)
  s = D._bcast(s, x)
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


def ddpm_step(rng, z, x_hat, t, s):
  """Ancestral step: a draw from q(z_s | z_t, x = x_hat), t > s."""
  lt, ls = D.logsnr_schedule_cosine(t), D.logsnr_schedule_cosine(s)
  a_t, _ = D.alpha_sigma(lt)
  a_s, sig_s = D.alpha_sigma(ls)
  c = -jnp.expm1(lt - ls)  # sigma_{t|s}^2 / sigma_t^2
  mean = a_s * (z * (1. - c) / a_t + c * x_hat)
  return mean + jnp.sqrt(c) * sig_s * jax.random.normal(rng, z.shape, z.dtype)


def make_sampler(model, shape, *, num_steps: int, sampler: str = 'ddim',
                 threshold: float = 0.995, t_start: float = 1.0) -> Callable:
  """Returns ``sample(params, tokens, mask, null_tokens, null_mask, rng, guidance, z_init=None)``.

  shape: (b, t, h, w, c) of the video. tokens, mask: [b, L]; null_*: [b, L] (the
  empty prompt). guidance: scalar weight w (traced: changing it does not recompile).
  z_init: optional starting point [b, t, h, w, c] at time t_start (SDEdit); by
  default pure noise at t = 1. Returns videos in [-1, 1], float32.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f'unknown sampler {sampler!r}; choose one of {SAMPLERS}.')
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}.')
  if not 0. < t_start <= 1.:
    raise ValueError(f't_start must be in (0, 1], got {t_start}.')
  b = shape[0]

  def x_prediction(params, z, t, text, mask, null_text, null_mask, guidance):
    # Conditional and unconditional predictions in one batch of 2b.
    zz = jnp.concatenate([z, z])
    tt = jnp.full((2 * b,), t)
    v = model.apply(params, zz, tt, jnp.concatenate([text, null_text]),
                    jnp.concatenate([mask, null_mask]), method='denoise')
    v = guided_v(v[:b], v[b:], guidance)
    return dynamic_threshold(D.x_from_v(z, jnp.full((b,), t), v), threshold)

  def sample(params, tokens, mask, null_tokens, null_mask, rng, guidance,
             z_init: Optional[jax.Array] = None):
    text = model.apply(params, tokens, mask, method='encode_text')
    null_text = model.apply(params, null_tokens, null_mask, method='encode_text')
    noise_rng, step_rng = jax.random.split(rng)
    z = jax.random.normal(noise_rng, shape, jnp.float32)
    if z_init is not None:
      z = D.q_sample(z_init, jnp.full((b,), t_start), z)
    times = t_start * (1. - jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps)

    def body(carry, i):
      z, _ = carry
      t, s = times[i], times[i + 1]
      x_hat = x_prediction(params, z, t, text, mask, null_text, null_mask, guidance)
      if sampler == 'ddim':
        z = ddim_step(z, x_hat, t, s)
      else:
        z = ddpm_step(jax.random.fold_in(step_rng, i), z, x_hat, t, s)
      return (z, x_hat), None

    (_, x_hat), _ = jax.lax.scan(body, (z, jnp.zeros(shape, jnp.float32)),
                                 jnp.arange(num_steps))
    # The last prediction, at the lowest noise level, is the sample.
    return jnp.clip(x_hat, -1., 1.)

  return jax.jit(sample)


class Generator:
  """Prompts -> videos for one model and sampler setting; compiles once per batch size.

  Reports compile time and sampling time separately (``last_times``).
  """

  def __init__(self, model, params, tokenizer, video_shape, *, num_steps: int,
               sampler: str = 'ddim', threshold: float = 0.995):
    self.model, self.params, self.tokenizer = model, params, tokenizer
    self.video_shape = tuple(video_shape)  # (t, h, w, c)
    self.kw = dict(num_steps=num_steps, sampler=sampler, threshold=threshold)
    self._compiled = {}
    self.last_times = {}

  @classmethod
  def from_workdir(cls, workdir: str, step: Optional[int] = None, *,
                   num_steps: Optional[int] = None, sampler: Optional[str] = None):
    """A Generator for a train.py workdir's checkpoint (EMA weights); unset sampler
    settings come from the run's config. Returns (generator, config)."""
    from stunet import train_lib  # pylint: disable=g-import-not-at-top
    from stunet.text import Tokenizer  # pylint: disable=g-import-not-at-top
    from stunet.unet import build_model  # pylint: disable=g-import-not-at-top
    config, params = train_lib.load_params(workdir, step=step)
    d, sc = config.data, config.sample
    frames = d.num_frames if config.model.temporal else 1
    gen = cls(build_model(config.model), {'params': params}, Tokenizer.from_config(d),
              (frames, d.size, d.size, 3), num_steps=num_steps or sc.num_steps,
              sampler=sampler or sc.sampler, threshold=sc.threshold)
    return gen, config

  def __call__(self, prompts, *, guidance: float, seed: int = 0):
    """prompts: list of b str -> (videos float32 [b, t, h, w, 3] in [-1, 1])."""
    if not prompts or any(not p.strip() for p in prompts):
      raise ValueError('every prompt must be non-empty text (the empty prompt is the '
                       'unconditional one used for guidance).')
    b = len(prompts)
    tokens, mask = self.tokenizer.encode(prompts)
    null_tokens, null_mask = self.tokenizer.null(b)
    args = (self.params, tokens, mask, null_tokens, null_mask, jax.random.key(seed),
            jnp.float32(guidance))
    t0 = time.time()
    if b not in self._compiled:
      fn = make_sampler(self.model, (b,) + self.video_shape, **self.kw)
      self._compiled[b] = fn.lower(*args).compile()
    t1 = time.time()
    videos = np.asarray(jax.block_until_ready(self._compiled[b](*args)))
    self.last_times = {'compile_s': t1 - t0, 'sample_s': time.time() - t1,
                       'per_step_s': (time.time() - t1) / self.kw['num_steps']}
    return videos
