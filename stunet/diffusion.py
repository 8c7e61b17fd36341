"""Continuous-time variance-preserving diffusion with v-prediction (Imagen Video).

t ~ U[0, 1]; the cosine log-SNR schedule, shifted so that logsnr(0) = logsnr_max and
logsnr(1) = logsnr_min:   logsnr(t) = -2 log tan(a t + b).
alpha_t^2 = sigmoid(logsnr), sigma_t^2 = sigmoid(-logsnr), z_t = alpha_t x + sigma_t eps,
v = alpha_t eps - sigma_t x, and the loss is ||v_hat - v||^2.
"""

import jax
import jax.numpy as jnp
import numpy as np

LOGSNR_MIN, LOGSNR_MAX = -20., 20.


def logsnr_schedule_cosine(t, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX):
  b = np.arctan(np.exp(-0.5 * logsnr_max))
  a = np.arctan(np.exp(-0.5 * logsnr_min)) - b
  return -2. * jnp.log(jnp.tan(a * jnp.asarray(t, jnp.float32) + b))


def alpha_sigma(logsnr):
  """(alpha, sigma) with alpha^2 + sigma^2 = 1 for a given log-SNR."""
  return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def per_example(a, x):
  """Per-example scalars [b] -> broadcastable against x [b, ...]."""
  return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def q_sample(x, t, eps):
  """Noised input z_t = alpha_t x + sigma_t eps; x, eps: [b, ...], t: [b]."""
  alpha, sigma = alpha_sigma(logsnr_schedule_cosine(t))
  return per_example(alpha, x) * x + per_example(sigma, x) * eps


def v_target(x, t, eps):
  alpha, sigma = alpha_sigma(logsnr_schedule_cosine(t))
  return per_example(alpha, x) * eps - per_example(sigma, x) * x


def x_from_v(z, t, v):
  """x_hat = alpha_t z - sigma_t v_hat."""
  alpha, sigma = alpha_sigma(logsnr_schedule_cosine(t))
  return per_example(alpha, z) * z - per_example(sigma, z) * v


def eps_from_v(z, t, v):
  """eps_hat = sigma_t z + alpha_t v_hat."""
  alpha, sigma = alpha_sigma(logsnr_schedule_cosine(t))
  return per_example(sigma, z) * z + per_example(alpha, z) * v


def loss_weight(t, min_snr_gamma: float = 0.):
  """Per-example weight [b] of the v-loss: 1, or with min_snr_gamma > 0 Min-SNR-gamma's
  (Hang et al. 2023), min(SNR, gamma) / (SNR + 1) for v-prediction: the x-loss weighted
  by min(SNR, gamma), which caps the weight of the low noise levels and takes it to 0
  at the highest ones."""
  if not min_snr_gamma:
    return jnp.ones(jnp.shape(t), jnp.float32)
  snr = jnp.exp(logsnr_schedule_cosine(t))
  return jnp.minimum(snr, min_snr_gamma) / (snr + 1.)


def loss_fn(v_pred, x, t, eps, min_snr_gamma: float = 0.):
  """Mean squared v-prediction error, in float32, each example weighted by
  ``loss_weight`` (off: the plain mean, summed in the same order). Shapes [b, ...]."""
  err = (v_pred.astype(jnp.float32) - v_target(x, t, eps)) ** 2
  if not min_snr_gamma:
    return err.mean()
  per_ex = err.reshape(err.shape[0], -1).mean(-1)
  return (loss_weight(t, min_snr_gamma) * per_ex).mean()


def drop_text(rng, tokens, mask, null_tokens, null_mask, p: float):
  """Classifier-free guidance: replace each example's text by the null prompt w.p. p.

  tokens, mask: [b, L] (or embeddings [b, L, d] for tokens); null_*: the same
  without the batch dimension, or with it.
  """
  drop = jax.random.bernoulli(rng, p, (tokens.shape[0],))
  expand = lambda x: drop.reshape(drop.shape + (1,) * (x.ndim - 1))
  return (jnp.where(expand(tokens), null_tokens, tokens), jnp.where(expand(mask), null_mask, mask))


def video_noise(rng, shape, shared: float = 0.):
  """Standard normal noise for videos [b, t, h, w, c] whose frames share a fraction
  ``shared`` of its variance: sqrt(shared) n_clip + sqrt(1 - shared) n_frame, n_clip
  drawn once per clip ([b, 1, h, w, c]), n_frame per frame (PYoCo's mixed noise prior,
  Ge et al. 2023). Every element is still N(0, 1); 0 gives independent frames."""
  if not shared:
    return jax.random.normal(rng, shape, jnp.float32)
  r_clip, r_frame = jax.random.split(rng)
  clip = jax.random.normal(r_clip, (shape[0], 1) + tuple(shape[2:]), jnp.float32)
  frame = jax.random.normal(r_frame, shape, jnp.float32)
  return np.sqrt(shared) * clip + np.sqrt(1. - shared) * frame


def sample_times(rng, batch: int, power: float = 1., band=(0., 1.), band_share: float = 0.):
  """Low-discrepancy u ~ U[0, 1] (as in VDM: lower-variance loss estimates), returned
  as t = 1 - (1 - u)^power. power = 1 is uniform; power > 1 puts more of the batch at
  high noise levels (power 2: 39% at t > 0.85 instead of 15%), where a clip's motion
  is decided (docs/choices.md).

  band_share > 0 mixes in a uniform band: the strata u < band_share map linearly onto
  [band[0], band[1]], the others onto t = 1 - (1 - u')^power with u' the rest of the
  unit interval rescaled, so the batch stays stratified over the mixture."""
  u = jax.random.uniform(rng, ())
  u = jnp.mod(u + jnp.arange(batch, dtype=jnp.float32) / batch, 1.)
  if not band_share:
    return u if power == 1. else 1. - (1. - u) ** power
  lo, hi = band
  rest = (u - band_share) / (1. - band_share)
  return jnp.where(u < band_share, lo + (hi - lo) * u / band_share,
                   1. - (1. - jnp.clip(rest, 0., 1.)) ** power)
