"""Sampler steps, guidance, thresholding and the jitted loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import perturbed_params
from conftest import small_config
from stunet import diffusion as D
from stunet import sampling
from stunet.models import build_model


class PointDenoiser:
  """The exact denoiser for data that is a single video x0: x_hat = x0 at every t.

  Conditional and unconditional halves predict different points, so guidance has a
  closed-form effect.
  """

  def __init__(self, x_cond, x_uncond):
    self.x_cond, self.x_uncond = x_cond, x_uncond

  def apply(self, params, *args, method):
    if method == 'encode_text':
      tokens, _ = args
      return jnp.zeros(tokens.shape + (4,))
    z, t, _, _ = args
    b = z.shape[0] // 2
    x = jnp.concatenate([self.x_cond[:b], self.x_uncond[:b]])
    alpha, sigma = D.alpha_sigma(D.logsnr_schedule_cosine(t))
    alpha, sigma = alpha[:, None, None, None, None], sigma[:, None, None, None, None]
    return (alpha * z - x) / sigma  # v such that alpha z - sigma v = x


class GaussianDenoiser:
  """The exact denoiser for data x ~ N(0, S^2) per element: E[x | z_t] = alpha S^2 z /
  (alpha^2 S^2 + sigma^2). The probability-flow ODE then has a closed form: z_t /
  sqrt(alpha_t^2 S^2 + sigma_t^2) stays constant, which measures a deterministic
  sampler's discretization error."""

  S = 0.5

  def apply(self, params, *args, method):
    if method == 'encode_text':
      return jnp.zeros(args[0].shape + (4,))
    z, t = args[:2]
    alpha, sigma = D.alpha_sigma(D.logsnr_schedule_cosine(t))
    alpha, sigma = alpha[:, None, None, None, None], sigma[:, None, None, None, None]
    x = alpha * self.S ** 2 * z / (alpha ** 2 * self.S ** 2 + sigma ** 2)
    return (alpha * z - x) / sigma

  def exact_prediction(self, z1, t):
    """E[x | z_t] on the exact ODE path from z1 at t = 1."""
    def scale(u):
      alpha, sigma = D.alpha_sigma(D.logsnr_schedule_cosine(u))
      return alpha, jnp.sqrt(alpha ** 2 * self.S ** 2 + sigma ** 2)
    alpha, scale_t = scale(t)
    return z1 / scale(1.)[1] * alpha * self.S ** 2 / scale_t


def _tokens(b, n=4):
  """(tokens, mask, null_tokens, null_mask): a 3-word prompt and the EOS-only null."""
  pos = jnp.arange(n)[None].repeat(b, 0)
  tokens = jnp.where(pos < 3, pos + 3, jnp.where(pos == 3, 1, 0)).astype(jnp.int32)
  return tokens, tokens > 0, (pos == 0).astype(jnp.int32), pos == 0


@pytest.mark.parametrize('sampler', sampling.SAMPLERS)
def test_exact_denoiser_recovers_the_data_point(sampler):
  shape = (2, 4, 6, 6, 3)
  x0 = jax.random.uniform(jax.random.key(0), shape, minval=-0.9, maxval=0.9)
  model = PointDenoiser(x0, -x0)
  fn = sampling.make_sampler(model, shape, num_steps=5, sampler=sampler,
                             threshold=0.995)
  out = fn(None, *_tokens(2), jax.random.key(1), 0.)
  np.testing.assert_allclose(out, x0, atol=1e-4)
  # Guidance w extrapolates: x = (1 + w) x_c - w x_u = 1.5 x0 for w = 0.25, x_u = -x0;
  # dynamic thresholding then rescales by the 99.5th percentile of |x|.
  out = fn(None, *_tokens(2), jax.random.key(1), 0.25)
  expect = sampling.dynamic_threshold(1.5 * x0)
  np.testing.assert_allclose(out, expect, atol=1e-4)


@pytest.mark.parametrize('sampler', sampling.SAMPLERS)
def test_exact_denoiser_in_multidiffusion_windows_recovers_the_data_point(sampler):
  """Windows of 4 frames over a 10-frame clip, fused at every step before the sampler's
  update: for a clip constant in time every window's exact prediction is the same,
  so the fused prediction, and the sample, is the clip."""
  from stunet import multidiffusion  # pylint: disable=g-import-not-at-top
  shape = (2, 10, 6, 6, 3)
  x0 = jax.random.uniform(jax.random.key(0), shape, minval=-0.9, maxval=0.9)

  windows = multidiffusion.Windows(10, 4, overlap=2)
  # A denoiser that predicts a constant video is exact for each window of it.
  const = jnp.broadcast_to(x0[:, :1], shape)
  model = PointDenoiser(const[:, :4], -const[:, :4])
  fn = sampling.make_sampler(model, shape, num_steps=6, sampler=sampler, threshold=0.,
                             windows=windows)
  out = fn(None, *_tokens(2), jax.random.key(1), 0.)
  np.testing.assert_allclose(out, const, atol=1e-4)


def test_dpm_solver_is_more_accurate_than_ddim_at_equal_steps():
  """On the Gaussian's exact ODE, DPM-Solver++(2M)'s sample (the prediction at the last
  step's time, as every sampler returns) is far closer to the exact path's than
  DDIM's at 8 and 16 steps (measured: max error 0.006 and 0.016 against 0.11 and 0.07)."""
  shape = (2, 4, 6, 6, 3)
  model = GaussianDenoiser()
  z1 = jax.random.normal(jax.random.split(jax.random.key(1))[0], shape)  # make_sampler's
  for n in (8, 16):
    exact = jnp.clip(model.exact_prediction(z1, 1. / n), -1., 1.)
    err = {}
    for sampler in ('ddim', 'dpm++2m'):
      fn = sampling.make_sampler(model, shape, num_steps=n, sampler=sampler, threshold=0.)
      err[sampler] = float(jnp.abs(fn(None, *_tokens(2), jax.random.key(1), 0.) - exact).max())
    assert err['dpm++2m'] < 0.03 and err['dpm++2m'] < err['ddim'] / 3, (n, err)


def test_dpm_solver_first_order_step_is_ddim_and_second_order_extrapolates():
  k = jax.random.split(jax.random.key(3), 3)
  z, x, x_prev = (jax.random.normal(r, (3, 5)) for r in k)
  np.testing.assert_allclose(sampling.dpmpp_2m_step(z, x, x_prev, 0.9, 0.7, 0.3, True),
                             sampling.ddim_step(z, x, 0.7, 0.3), atol=1e-5)
  # A prediction that did not change between steps: the second-order step is DDIM's.
  np.testing.assert_allclose(sampling.dpmpp_2m_step(z, x, x, 0.9, 0.7, 0.3, False),
                             sampling.ddim_step(z, x, 0.7, 0.3), atol=1e-5)
  # Otherwise it is DDIM's step with D = x + (x - x_prev) / (2 r) in place of x.
  lam = lambda u: 0.5 * float(D.logsnr_schedule_cosine(u))
  r = (lam(0.7) - lam(0.9)) / (lam(0.3) - lam(0.7))
  np.testing.assert_allclose(sampling.dpmpp_2m_step(z, x, x_prev, 0.9, 0.7, 0.3, False),
                             sampling.ddim_step(z, x + (x - x_prev) / (2 * r), 0.7, 0.3),
                             atol=1e-5)
  # The SDE solver: its first-order step is the DDPM ancestral step, noise and all (the
  # same normal draw), and its second order uses the same D.
  rng = jax.random.key(4)
  np.testing.assert_allclose(
      sampling.dpmpp_2m_step(z, x, x_prev, 0.9, 0.7, 0.3, True, rng),
      sampling.ddpm_step(rng, z, x, 0.7, 0.3), atol=1e-5)
  np.testing.assert_allclose(
      sampling.dpmpp_2m_step(z, x, x_prev, 0.9, 0.7, 0.3, False, rng),
      sampling.ddpm_step(rng, z, x + (x - x_prev) / (2 * r), 0.7, 0.3), atol=1e-5)


def test_ddim_step_follows_the_deterministic_path():
  k = jax.random.split(jax.random.key(2), 2)
  x = jax.random.normal(k[0], (3, 5))
  eps = jax.random.normal(k[1], (3, 5))
  z_t = D.q_sample(x, jnp.full((3,), 0.7), eps)
  z_s = sampling.ddim_step(z_t, x, 0.7, 0.3)
  np.testing.assert_allclose(z_s, D.q_sample(x, jnp.full((3,), 0.3), eps), atol=1e-5)


def test_ddpm_step_matches_the_gaussian_posterior():
  x = jnp.full((20000,), 0.5)
  z_t = jnp.full((20000,), 0.2)
  t, s = 0.6, 0.4
  out = sampling.ddpm_step(jax.random.key(0), z_t, x, t, s)
  a_t, sig_t = D.alpha_sigma(D.logsnr_schedule_cosine(t))
  a_s, sig_s = D.alpha_sigma(D.logsnr_schedule_cosine(s))
  a_ts = a_t / a_s
  var_ts = sig_t ** 2 - a_ts ** 2 * sig_s ** 2
  mean = a_ts * sig_s ** 2 / sig_t ** 2 * 0.2 + a_s * var_ts / sig_t ** 2 * 0.5
  std = np.sqrt(var_ts * sig_s ** 2 / sig_t ** 2)
  np.testing.assert_allclose(out.mean(), mean, atol=3 * std / np.sqrt(20000))
  np.testing.assert_allclose(out.std(), std, rtol=0.03)


def test_dynamic_threshold():
  x = jnp.linspace(-0.9, 0.9, 1000).reshape(1, -1)
  np.testing.assert_allclose(sampling.dynamic_threshold(x), x)  # s <= 1: plain clip
  big = 3. * x
  out = sampling.dynamic_threshold(big, 0.995)
  s = np.quantile(np.abs(np.asarray(big)), 0.995)
  np.testing.assert_allclose(out, np.clip(big, -s, s) / s, atol=1e-5)
  assert float(jnp.abs(out).max()) <= 1.


def test_guided_v():
  c, u = jnp.ones(3), jnp.zeros(3)
  np.testing.assert_allclose(sampling.guided_v(c, u, 0.), c)
  np.testing.assert_allclose(sampling.guided_v(c, u, 2.), 3. * c)


def test_real_model_sampler_is_deterministic_and_compiles_once():
  cfg = small_config('scratch')
  model = build_model(cfg.model)
  s, n = cfg.data.size, cfg.data.max_text_len
  shape = (2, cfg.data.num_frames, s, s, 3)
  # Zero-initialised output layers make the init network ignore the text; perturb
  # every weight so that prompt, guidance and seed all matter.
  variables = perturbed_params(model, (jnp.zeros(shape), jnp.zeros((2,)),
                                       jnp.ones((2, n), jnp.int32), jnp.ones((2, n), bool)))
  fn = sampling.make_sampler(model, shape, num_steps=3, sampler='ddpm', threshold=0.995)
  args = _tokens(2, n)
  a = fn(variables, *args, jax.random.key(7), 1.0)
  b = fn(variables, *args, jax.random.key(7), 3.0)  # new guidance: no recompile
  c = fn(variables, *args, jax.random.key(7), 1.0)
  d = fn(variables, *args, jax.random.key(8), 1.0)
  assert fn._cache_size() == 1  # one trace and compile for every seed and guidance
  assert a.shape == shape and float(jnp.abs(a).max()) <= 1.
  np.testing.assert_array_equal(a, c)
  assert float(jnp.abs(a - d).max()) > 1e-3
  assert float(jnp.abs(a - b).max()) > 1e-4


class TextDenoiser:
  """An exact denoiser whose data point is a number read from the prompt: x = (sum of
  the prompt's token ids) / 1000 everywhere, so the unconditional branch's prompt is
  visible in the guided sample."""

  lowres_size, conditional = 0, False
  unet = type('Unet', (), {'temporal_factor': 1})

  def apply(self, params, *args, method):
    if method == 'encode_text':
      tokens, _ = args
      return jnp.asarray(tokens, jnp.float32)[..., None]
    z, t, text, mask = args
    x = (text[..., 0] * mask).sum(1) / 1000.
    alpha, sigma = D.alpha_sigma(D.logsnr_schedule_cosine(t))
    alpha, sigma = D.per_example(alpha, z), D.per_example(sigma, z)
    return (alpha * z - D.per_example(x, z)) / sigma  # v such that alpha z - sigma v = x

  @staticmethod
  def point(tokenizer, texts):
    tokens, mask = tokenizer.encode(texts)
    return (tokens * mask).sum(1) / 1000.


def _text_generator(sampler='ddim', num_steps=3):
  from stunet.generator import Generator  # pylint: disable=g-import-not-at-top
  from stunet.text import Tokenizer  # pylint: disable=g-import-not-at-top
  return Generator(TextDenoiser(), None, Tokenizer(), (4, 6, 6, 3), num_steps=num_steps,
                   sampler=sampler, threshold=0., window=0, overlap=2, weighting='uniform',
                   window_batch=1, lowres_aug=0.)


def test_negative_prompt_takes_the_unconditional_branch():
  gen = _text_generator()
  prompts, w = ['a red square moves left', 'a blue circle grows'], 0.5
  x_c = TextDenoiser.point(gen.tokenizer, prompts)
  for negative in (None, 'a red square moves right'):
    x_u = TextDenoiser.point(gen.tokenizer, [negative or ''] * 2)
    out = gen(prompts, guidance=w, negative_prompt=negative)
    np.testing.assert_allclose(out[:, 0, 0, 0, 0], np.clip((1 + w) * x_c - w * x_u, -1, 1),
                               atol=1e-4)
  negatives = ['a red square moves right', 'a blue circle shrinks']  # one per prompt
  out = gen(prompts, guidance=w, negative_prompt=negatives)
  x_u = TextDenoiser.point(gen.tokenizer, negatives)
  np.testing.assert_allclose(out[:, 0, 0, 0, 0], (1 + w) * x_c - w * x_u, atol=1e-4)
  for bad in ('  ', ['a red square']):
    with pytest.raises(ValueError, match='negative prompts: need one non-empty text'):
      gen(prompts, guidance=w, negative_prompt=bad)


@pytest.mark.parametrize('sampler', sampling.SAMPLERS)
def test_progress_and_preview_hooks_see_every_step(sampler):
  gen = _text_generator(sampler, num_steps=4)
  steps, previews = [], []
  out = gen(['a red square moves left'], guidance=0., progress=lambda i, n: steps.append((i, n)),
            preview=lambda i, t, x: previews.append((int(i), float(t), np.asarray(x))))
  assert sorted(steps) == [(i, 4) for i in range(1, 5)]
  assert sorted(p[0] for p in previews) == [1, 2, 3, 4]
  last = max(previews, key=lambda p: p[0])
  assert last[1] == pytest.approx(0.25) and last[2].shape == out.shape
  np.testing.assert_allclose(last[2], out, atol=1e-5)
  # Hooks of a new call replace the old ones in the compiled sampler; no hooks, no calls.
  again = []
  gen(['a red square moves left'], guidance=0., progress=lambda i, n: again.append(i))
  assert len(again) == 4 and len(steps) == 4
  gen(['a red square moves left'], guidance=0.)
  assert len(again) == 4


def test_step_times_run_from_t_start_to_0_and_quadratic_ends_near_0():
  for spacing in sampling.SPACINGS:
    t = np.asarray(sampling.step_times(12, 0.8, spacing))
    assert t.shape == (13,) and t[0] == pytest.approx(0.8) and t[-1] == 0.
    assert np.all(np.diff(t) < 0)
  np.testing.assert_allclose(sampling.step_times(12)[-2], 1 / 12, rtol=1e-6)
  np.testing.assert_allclose(sampling.step_times(12, spacing='quadratic')[-2], 1 / 144,
                             rtol=1e-5)
  with pytest.raises(ValueError, match='unknown step spacing'):
    sampling.step_times(4, spacing='cubic')
