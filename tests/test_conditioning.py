"""The conditional STUNet: mask makers, the zero-initialised widening, training, sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from conftest import FixedTokens
from conftest import perturb
from conftest import perturbed_params
from conftest import real_batch
from conftest import small_config
from stunet import conditioning as C
from stunet import inflate
from stunet import sharding
from stunet import train_step
from stunet.generator import Generator
from stunet.models import build_model


def _video(t=4, s=8, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (t, s, s, 3)).astype(np.float32)


def test_mask_makers_mark_what_each_application_keeps():
  video, region = _video(), C.box_region(8, (2, 1, 6, 4))  # x 2..5, y 1..3
  assert region.sum() == 12 and region[1:4, 2:6].all()
  image = video[0]

  cond, mask = C.image_to_video(image, 4)
  assert mask.shape == (4, 8, 8, 1) and mask[0].all() and not mask[1:].any()
  np.testing.assert_array_equal(cond[0], image)
  assert not cond[1:].any()

  cond, mask = C.inpainting(video, region)
  assert (mask[..., 0] == ~region).all()               # every frame: known outside
  np.testing.assert_array_equal(cond, video * mask)

  cond, mask = C.outpainting(video, region)             # region = the known area
  assert (mask[..., 0] == region).all()
  np.testing.assert_array_equal(cond, video * mask)

  cond, mask = C.cinemagraph(image, 4, region)          # region = what moves
  assert mask[0].all() and (mask[1:, ..., 0] == ~region).all()
  np.testing.assert_array_equal(cond[1:], np.broadcast_to(image * ~region[..., None],
                                                          (3, 8, 8, 3)))
  np.testing.assert_array_equal(cond[0], image)


@pytest.mark.parametrize('region,match', [
    (np.zeros((8, 8)), 'marks nothing to generate'),
    (np.ones((8, 8)), 'marks every pixel to generate'),
    (np.ones((4, 8)), 'is 8x4 pixels; the model makes 8x8 frames'),
])
def test_regions_that_mean_nothing_are_refused(region, match):
  with pytest.raises(ValueError, match=match):
    C.check_region(region, 8)


def test_boxes_outside_the_frame_are_refused():
  for box in ((0, 0, 0, 4), (4, 0, 2, 4), (0, 0, 9, 4), (-1, 0, 4, 4)):
    with pytest.raises(ValueError, match='is not inside the 8x8 frame'):
      C.box_region(8, box)


def test_training_masks_are_the_applications_masks():
  video = jnp.asarray(np.stack([_video(seed=i) for i in range(64)]))
  for k, kind in enumerate(C.KINDS):
    probs = np.eye(len(C.KINDS))[k]
    cond, mask, kinds = C.training_condition(jax.random.key(k), video, probs)
    assert (np.asarray(kinds) == k).all()
    np.testing.assert_array_equal(cond, video * mask)
    m = np.asarray(mask[..., 0], bool)                  # [b, t, h, w]
    known = m.mean(axis=(2, 3))                          # [b, t]
    if kind == 'unconditional':
      assert not m.any()
    elif kind == 'image_to_video':
      assert (known[:, 0] == 1).all() and (known[:, 1:] == 0).all()
    else:
      box = ~m[:, 1] if kind != 'outpainting' else m[:, 1]   # [b, h, w]
      frac = box.mean(axis=(1, 2))
      # A box: its rows and columns, sides in [1/4, 3/4] of the frame.
      rows, cols = box.any(2), box.any(1)
      np.testing.assert_array_equal(box, rows[:, :, None] & cols[:, None, :])
      assert (frac >= 1 / 16).all() and (frac <= 9 / 16).all()
      same = m[:, 1:] == m[:, 1:2]
      assert same.all()                                    # one box for the whole clip
      if kind == 'cinemagraph':
        assert m[:, 0].all()
  _, _, kinds = C.training_condition(jax.random.key(9), video)
  assert set(np.asarray(kinds).tolist()) == set(range(len(C.KINDS)))


def _configs():
  base = small_config('scratch')
  cond = small_config('conditional')
  cond.model.conditional, cond.train.init_from = True, 'unused'
  return base, cond


def test_widened_model_starts_as_the_text_to_video_model():
  base, cond = _configs()
  inputs = train_step.example_inputs(base, batch=2)
  t2v = build_model(base.model)
  params = perturbed_params(t2v, inputs)['params']
  model = build_model(cond.model)
  assert isinstance(model, C.Conditional)
  cinputs = train_step.example_inputs(cond, batch=2)
  # Shapes suffice: every parameter is copied from the text-to-video model or widened.
  fresh = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(1), *cinputs)['params'])
  widened = inflate.inflate(params, fresh)
  kernel = widened['unet']['conv_in']['kernel']
  assert kernel.shape[-2] == C.CHANNELS == 7
  np.testing.assert_array_equal(kernel[..., :3, :], params['unet']['conv_in']['kernel'])
  assert not np.asarray(kernel[..., 3:, :]).any()
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.normal(size=inputs[0].shape), jnp.float32)
  t, tokens, mask = jnp.full((2,), 0.6), inputs[2], inputs[3]
  cond = jnp.asarray(rng.uniform(-1, 1, z.shape), jnp.float32)
  cmask = jnp.asarray(rng.integers(0, 2, z.shape[:-1] + (1,)), jnp.float32)
  out = jax.jit(lambda p: model.apply({'params': p}, z, t, tokens, mask, cond, cmask))(widened)
  ref = jax.jit(lambda p: t2v.apply({'params': p}, z, t, tokens, mask))(params)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
  # (That they then matter: test_a_train_step_reads_the_masks... sees them train.)


def test_a_train_step_reads_the_masks_and_inpainting_keeps_known_pixels():
  _, cfg = _configs()
  mesh = sharding.make_mesh(cfg.mesh)
  spec = train_step.TrainSpec(cfg, mesh)
  state = spec.init(jax.random.key(0))
  # Stand-in for a widened trained model: noise on every weight (zero-initialised output
  # layers would block the gradients), the conditioning channels of conv_in at zero.
  flat = {k: np.array(v) for k, v in traverse_util.flatten_dict(perturb(state.params)).items()}
  flat[('unet', 'conv_in', 'kernel')][..., 3:, :] = 0.
  state = state.replace(params=jax.device_put(traverse_util.unflatten_dict(flat),
                                              spec.shardings.params))
  n = cfg.data.max_text_len
  step = train_step.make_train_step(spec, np.zeros((n,), np.int32), np.zeros((n,), bool))
  batch = sharding.global_batch(real_batch(cfg), mesh)
  for _ in range(2):  # the first step has learning rate 0 (warmup)
    state, metrics = step(state, batch, jax.random.key(1))
  assert bool(metrics['finite']) and float(metrics['loss']) > 0
  conv = np.asarray(state.params['unet']['conv_in']['kernel'])
  assert np.abs(conv[..., 3:, :]).max() > 0     # the conditioning channels train

  model = build_model(cfg.model)
  params = {'params': jax.device_get(state.params)}
  gen = Generator.from_config(model, params, FixedTokens(), cfg)
  video = real_batch(cfg)['video'][0].astype(np.float32)
  region = C.box_region(cfg.data.size, (4, 4, 12, 12))
  cond, mask = C.inpainting(video, region)
  raw = C.generate(gen, ['a', 'b'], cond, mask, guidance=1., paste=False)
  out = C.generate(gen, ['a', 'b'], cond, mask, guidance=1.)
  keep = np.broadcast_to(~region[None, None, :, :, None], out.shape)
  np.testing.assert_array_equal(out[keep], np.broadcast_to(video, out.shape)[keep])
  np.testing.assert_array_equal(out[~keep], raw[~keep])  # the hole: the model's
  assert np.abs(raw[keep] - np.broadcast_to(video, out.shape)[keep]).max() > 0
  solver = Generator.from_config(model, params, FixedTokens(), cfg, sampler='dpm++2m')
  out = C.generate(solver, ['a', 'b'], cond, mask, guidance=1.)  # with the solver too
  np.testing.assert_array_equal(out[keep], np.broadcast_to(video, out.shape)[keep])
  assert np.all(np.isfinite(out)) and np.abs(out[~keep] - raw[~keep]).max() > 0
  with pytest.raises(ValueError, match='conditioning videos .* need'):
    gen(['a'], guidance=1., cond=(cond[None, :, :8, :8], mask[None, :, :8, :8]))
  t2v = Generator.from_config(build_model(_configs()[0].model), params, FixedTokens(),
                                       _configs()[0])
  with pytest.raises(ValueError, match='given to a text-to-video model'):
    C.generate(t2v, ['a'], cond, mask, guidance=1.)
