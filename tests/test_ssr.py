"""The SSR model: low-res conditioning, noise-conditioning augmentation, training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ssr as ssr_config
from conftest import perturbed_params
from conftest import real_batch
from conftest import small_config
from conftest import step_setup
from stunet import sharding
from stunet import ssr
from stunet import train_step
from stunet.models import build_model


def _ssr_config():
  cfg = small_config('scratch')
  cfg.model.lowres_size, cfg.model.temporal_resample = 8, False
  return cfg


def test_denoiser_reads_the_low_res_video_and_its_noise_level():
  cfg = _ssr_config()
  model = build_model(cfg.model)
  assert isinstance(model, ssr.SuperResolution)
  inputs = train_step.example_inputs(cfg, batch=2)
  params = perturbed_params(model, inputs)
  assert params['params']['unet']['conv_in']['kernel'].shape[-2] == 6  # noisy + low-res
  rng = np.random.default_rng(0)
  z, t, tokens, mask, lowres, _, aug_t = inputs
  z = jnp.asarray(rng.normal(size=z.shape), jnp.float32)
  lowres = jnp.asarray(rng.uniform(-1, 1, size=lowres.shape), jnp.float32)
  t, aug_t = jnp.full((2,), 0.5), jnp.full((2,), 0.1)
  apply = jax.jit(lambda low, lvl, base=None: model.apply(
      params, z, t, tokens, mask, low, low if base is None else base, lvl))
  out = apply(lowres, aug_t)
  assert out.shape == z.shape
  assert not np.allclose(out, apply(-lowres, aug_t))
  assert not np.allclose(out, apply(lowres, aug_t + 0.3))
  np.testing.assert_array_equal(out, apply(lowres, aug_t, base=-lowres))  # not residual
  # Fully convolutional: a crop's low-res clip (a whole factor smaller) runs too.
  crop = jax.jit(lambda: model.apply(params, z[:, :, :8, :8], t, tokens, mask,
                                     lowres[:, :, :4, :4], lowres[:, :, :4, :4], aug_t))()
  assert crop.shape == (2,) + z.shape[1:2] + (8, 8, 3)
  with pytest.raises(ValueError, match='lowres_size'):
    apply(jnp.zeros((2, z.shape[1], 5, 5, 3)), aug_t)  # not a whole factor
  with pytest.raises(ValueError, match='lowres_size'):
    apply(jnp.zeros((2, z.shape[1] - 1) + lowres.shape[2:]), aug_t)  # frames differ


def test_training_condition_is_the_downsampled_clip_noised_to_its_level():
  video = jax.random.uniform(jax.random.key(0), (4, 3, 16, 16, 3), minval=-1., maxval=1.)
  lowres, base, aug_t = ssr.training_condition(jax.random.key(1), video, 8, 0.4)
  assert lowres.shape == base.shape == (4, 3, 8, 8, 3) and aug_t.shape == (4,)
  assert float(aug_t.min()) >= 0. and float(aug_t.max()) <= 0.4
  # Level 0 leaves the downsampled clip as it is; base is that clip, clean.
  small = ssr.resize(video, 8)
  np.testing.assert_array_equal(base, small)
  clean = ssr.augment(jax.random.key(2), small, jnp.zeros((4,)))
  np.testing.assert_allclose(clean, small, atol=1e-3)
  # The downsampling is antialiased: a one-pixel checkerboard (above the new Nyquist
  # rate) averages out instead of aliasing into a pattern; a constant stays constant.
  i = np.arange(16)
  checker = np.broadcast_to(((i[:, None] + i[None]) % 2 * 2. - 1.)[None, None, :, :, None],
                            (1, 1, 16, 16, 3))
  assert float(jnp.abs(ssr.resize(jnp.asarray(checker), 8)).max()) < 0.3
  np.testing.assert_allclose(ssr.resize(jnp.full((1, 1, 16, 16, 3), 0.7), 8), 0.7, atol=1e-6)


def test_residual_ssr_diffuses_the_residual_over_the_upsampled_clip():
  """model.lowres_residual: the network's input is z - alpha_t up(base) and its output
  f becomes v = f - sigma_t up(base), so x_hat = up(base) + (the x-prediction f makes of
  the noised residual), and the v-loss on x is the residual's v-loss."""
  from stunet import diffusion as D  # pylint: disable=g-import-not-at-top
  cfg = _ssr_config()
  cfg.model.lowres_residual = True
  model = build_model(cfg.model)
  assert model.residual
  inputs = train_step.example_inputs(cfg, batch=2)
  params = perturbed_params(model, inputs)
  rng = np.random.default_rng(0)
  z, t, tokens, mask, lowres, _, aug_t = inputs
  x = jnp.asarray(rng.uniform(-1, 1, size=z.shape), jnp.float32)
  eps = jnp.asarray(rng.normal(size=z.shape), jnp.float32)
  base = jnp.asarray(rng.uniform(-1, 1, size=lowres.shape), jnp.float32)
  seen = base + 0.1 * jnp.asarray(rng.normal(size=lowres.shape), jnp.float32)
  t, aug_t = jnp.array([0.3, 0.8]), jnp.full((2,), 0.1)
  skip = ssr.resize(base, z.shape[2])
  v = model.apply(params, D.q_sample(x, t, eps), t, tokens, mask, seen, base, aug_t)
  # The same weights as a plain SSR on the noised residual.
  plain = build_model(_ssr_config().model)
  f = plain.apply(params, D.q_sample(x - skip, t, eps), t, tokens, mask, seen, seen, aug_t)
  _, sigma = D.alpha_sigma(D.logsnr_schedule_cosine(t))
  np.testing.assert_allclose(v, f - sigma[:, None, None, None, None] * skip, atol=1e-5)
  np.testing.assert_allclose(D.x_from_v(D.q_sample(x, t, eps), t, v),
                             skip + D.x_from_v(D.q_sample(x - skip, t, eps), t, f), atol=1e-5)
  np.testing.assert_allclose(D.loss_fn(v, x, t, eps), D.loss_fn(f, x - skip, t, eps),
                             rtol=1e-5)
  with pytest.raises(ValueError, match='one shape'):
    model.apply(params, z, t, tokens, mask, seen, base[:, :, :4, :4], aug_t)
  from stunet import config as config_lib  # pylint: disable=g-import-not-at-top
  bad = small_config('scratch')
  bad.model.lowres_residual = True
  with pytest.raises(ValueError, match='lowres_residual=True is an SSR option'):
    config_lib.validate(bad)


@pytest.mark.slow  # SSR training also runs in test_cli's fixture: not in the CI run (setup.cfg)
def test_ssr_training_lowers_its_loss():
  cfg = _ssr_config()
  cfg.train.lr, cfg.train.warmup_steps, cfg.train.cfg_drop = 3e-3, 5, 0.
  mesh = sharding.make_mesh(cfg.mesh)
  spec = train_step.TrainSpec(cfg, mesh)
  null = np.zeros(cfg.data.max_text_len, np.int32)
  null[0] = 1
  step = train_step.make_train_step(spec, null, null > 0)
  state = spec.init(jax.random.key(0))
  batches = [sharding.global_batch(real_batch(cfg, rng=i), mesh) for i in range(4)]
  losses = []
  for i in range(48):  # four different batches of shapes clips, in turn
    state, m = step(state, batches[i % 4], jax.random.key(1))
    losses.append(float(m['loss']))
  assert np.mean(losses[-8:]) < 0.75 * np.mean(losses[:8]), losses  # measured: 0.65


@pytest.mark.slow  # an optional path: not in the CI run (setup.cfg)
def test_ssr_trains_on_crops_and_samples_whole_frames():
  """data.crop_size: the train step takes crops (their low-res clip at the same factor)
  and the same weights denoise whole frames; bad crop sizes are refused up front."""
  from stunet import config as config_lib  # pylint: disable=g-import-not-at-top
  cfg = _ssr_config()
  cfg.data.crop_size = 8  # of 16 px frames: 4 low-res pixels of the 8-px input
  config_lib.validate(cfg)
  spec, mesh, step = step_setup(cfg)
  state = spec.init(jax.random.key(0))
  batch = real_batch(cfg)
  batch['video'] = batch['video'][:, :, 4:12, 6:14]  # a crop on the 2-px grid
  state, m = step(state, sharding.global_batch(batch, mesh), jax.random.key(1))
  assert np.isfinite(float(m['loss']))
  model = build_model(cfg.model)
  z, t, tokens, mask, lowres, base, aug_t = train_step.example_inputs(cfg, batch=1)
  out = model.apply({'params': state.sampling_params()}, z, t, tokens, mask, lowres, base,
                    aug_t)
  assert out.shape == (1, cfg.data.num_frames, 16, 16, 3)
  for bad in (6, 16, 2):  # not a multiple of 2 x 2, not below the frame, below one level
    cfg.data.crop_size = bad
    with pytest.raises(ValueError, match='crop_size'):
      config_lib.validate(cfg)
  base = small_config('scratch')
  base.data.crop_size = 8
  with pytest.raises(ValueError, match='for SSR models'):
    config_lib.validate(base)

