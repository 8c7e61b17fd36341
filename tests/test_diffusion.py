"""Schedule and v-parameterisation against their closed forms."""

import jax
import jax.numpy as jnp
import numpy as np

from stunet import diffusion as D


def test_cosine_logsnr_endpoints_and_monotone():
  t = jnp.linspace(0., 1., 101)
  lam = D.logsnr_schedule_cosine(t)
  np.testing.assert_allclose(lam[0], D.LOGSNR_MAX, atol=1e-3)
  np.testing.assert_allclose(lam[-1], D.LOGSNR_MIN, atol=1e-2)  # float32 tan near pi/2
  assert bool(jnp.all(jnp.diff(lam) < 0))


def test_alpha_sigma_is_the_cosine_schedule():
  t = jnp.linspace(0.02, 0.98, 49)
  alpha, sigma = D.alpha_sigma(D.logsnr_schedule_cosine(t))
  np.testing.assert_allclose(alpha ** 2 + sigma ** 2, 1., atol=1e-6)
  # Away from the clipped ends the shifted schedule is alpha = cos(pi t / 2).
  np.testing.assert_allclose(alpha, np.cos(np.pi * np.asarray(t) / 2), atol=2e-4)
  np.testing.assert_allclose(sigma, np.sin(np.pi * np.asarray(t) / 2), atol=2e-4)
  # logsnr = log(alpha^2 / sigma^2)
  np.testing.assert_allclose(D.logsnr_schedule_cosine(t), np.log(alpha ** 2 / sigma ** 2),
                             rtol=1e-3, atol=1e-3)


def test_v_parameterisation_round_trips():
  k = jax.random.split(jax.random.key(0), 3)
  x = jax.random.uniform(k[0], (4, 2, 3, 3, 3), minval=-1, maxval=1)
  eps = jax.random.normal(k[1], x.shape)
  t = jax.random.uniform(k[2], (4,))
  z = D.q_sample(x, t, eps)
  v = D.v_target(x, t, eps)
  np.testing.assert_allclose(D.x_from_v(z, t, v), x, atol=1e-5)
  np.testing.assert_allclose(D.eps_from_v(z, t, v), eps, atol=1e-5)
  alpha, sigma = D.alpha_sigma(D.logsnr_schedule_cosine(t))
  np.testing.assert_allclose(v, alpha[:, None, None, None, None] * eps
                             - sigma[:, None, None, None, None] * x, atol=1e-6)
  assert float(D.loss_fn(v, x, t, eps)) < 1e-10
  assert float(D.loss_fn(v + 1., x, t, eps)) > 0.99


def test_cfg_dropout_rate_and_replacement():
  tokens = jnp.arange(1, 4001)[:, None] * jnp.ones((1, 5), jnp.int32)
  mask = jnp.ones((4000, 5), bool)
  null_t = jnp.array([1, 0, 0, 0, 0])
  null_m = null_t > 0
  out_t, out_m = D.drop_text(jax.random.key(1), tokens, mask, null_t, null_m, 0.1)
  dropped = np.all(np.asarray(out_t) == np.asarray(null_t), axis=1)
  assert 0.08 < dropped.mean() < 0.12
  np.testing.assert_array_equal(np.asarray(out_m)[dropped], np.asarray(null_m)[None].repeat(
      dropped.sum(), 0))
  np.testing.assert_array_equal(np.asarray(out_t)[~dropped], np.asarray(tokens)[~dropped])
  out_t, _ = D.drop_text(jax.random.key(1), tokens, mask, null_t, null_m, 0.0)
  np.testing.assert_array_equal(out_t, tokens)


def test_sample_times_are_stratified_uniform():
  t = np.sort(np.asarray(D.sample_times(jax.random.key(3), 64)))
  assert t.min() >= 0 and t.max() < 1
  np.testing.assert_allclose(np.diff(t), 1 / 64, atol=1e-5)


def test_sample_times_power_moves_the_batch_to_high_noise():
  u = np.asarray(D.sample_times(jax.random.key(3), 1000))
  t = np.asarray(D.sample_times(jax.random.key(3), 1000, power=2.))
  np.testing.assert_allclose(t, 1. - (1. - u) ** 2, atol=1e-6)  # same strata, mapped
  assert abs((u > 0.85).mean() - 0.15) < 0.01 and abs((t > 0.85).mean() - 0.387) < 0.01


def test_sample_times_band_takes_its_share_of_the_strata():
  u = np.asarray(D.sample_times(jax.random.key(3), 1000))
  t = np.asarray(D.sample_times(jax.random.key(3), 1000, power=2., band=(0.96, 0.99),
                                band_share=0.4))
  inside = u < 0.4  # the same strata: the lowest 40% go to the band, in order
  np.testing.assert_allclose(t[inside], 0.96 + 0.03 * u[inside] / 0.4, atol=1e-6)
  np.testing.assert_allclose(t[~inside], 1. - (1. - (u[~inside] - 0.4) / 0.6) ** 2, atol=1e-5)
  assert abs(((t >= 0.96) & (t <= 0.99)).mean() - (0.4 + 0.6 * 0.1)) < 0.01


def test_min_snr_weight_is_the_x_loss_capped_at_gamma():
  """Off, every example weighs 1 and the loss is the plain mean; on, the v-loss of each
  example times min(SNR, gamma) / (SNR + 1): exactly the x-prediction error times
  min(SNR, gamma) (x_hat - x = -sigma (v_hat - v), sigma^2 = 1 / (SNR + 1)), near 0 at
  the highest noise and gamma / (SNR + 1) at low noise."""
  k = jax.random.split(jax.random.key(0), 3)
  x, eps, v_hat = (jax.random.normal(r, (4, 2, 3, 3, 3)) for r in k)
  t = jnp.asarray([0.05, 0.4, 0.8, 0.999])
  plain = D.loss_fn(v_hat, x, t, eps)
  np.testing.assert_allclose(plain, jnp.mean((v_hat - D.v_target(x, t, eps)) ** 2), rtol=1e-6)
  np.testing.assert_allclose(D.loss_weight(t), 1.)
  gamma = 5.
  snr = np.exp(np.asarray(D.logsnr_schedule_cosine(t), np.float64))
  z = D.q_sample(x, t, eps)
  x_err = jnp.mean((D.x_from_v(z, t, v_hat) - x) ** 2, axis=(1, 2, 3, 4))
  want = np.mean(np.minimum(snr, gamma) * np.asarray(x_err))
  np.testing.assert_allclose(D.loss_fn(v_hat, x, t, eps, gamma), want, rtol=1e-4)
  w = np.asarray(D.loss_weight(t, gamma))
  assert w[-1] < 1e-3 and w[0] < gamma / snr[0] * 1.01 and np.all(w < 1.)


def _frame_correlation(x):
  """Mean correlation of the noise of two different frames of a clip, and of two
  neighbouring pixels of one frame. x: [b, t, h, w, c]."""
  x = np.asarray(x)
  frames = np.mean(x[:, :-1] * x[:, 1:]) / np.mean(x * x)
  pixels = np.mean(x[:, :, :-1] * x[:, :, 1:]) / np.mean(x * x)
  return frames, pixels


def test_video_noise_shares_the_given_part_of_the_variance_across_frames():
  shape = (64, 8, 16, 16, 3)
  rng = jax.random.key(5)
  np.testing.assert_array_equal(D.video_noise(rng, shape), jax.random.normal(rng, shape))
  for shared in (0., 0.5, 0.9):
    x = np.asarray(D.video_noise(rng, shape, shared))
    frames, pixels = _frame_correlation(x)
    assert abs(x.std() - 1.) < 0.01 and abs(x.mean()) < 0.01  # still N(0, 1) per element
    assert abs(frames - shared) < 0.02 and abs(pixels) < 0.02, (shared, frames, pixels)


def test_ancestral_sampler_steps_draw_the_models_noise():
  from stunet import sampling  # pylint: disable=g-import-not-at-top
  shape = (64, 8, 16, 16, 3)
  z = jnp.zeros(shape)
  rng = jax.random.key(6)
  for shared in (0., 0.5):
    ddpm = sampling.ddpm_step(rng, z, z, 0.6, 0.5, shared)
    sde = sampling.dpmpp_2m_step(z, z, z, 0.7, 0.6, 0.5, False, rng, shared)
    for x in (ddpm, sde):  # z = x_hat = 0: the step's output is its noise alone
      assert abs(_frame_correlation(x)[0] - shared) < 0.02
