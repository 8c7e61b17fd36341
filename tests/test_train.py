"""Train step, frozen spatial weights, inflation, checkpoint resume."""

import json

import jax
import numpy as np
import pytest

from conftest import light_config
from conftest import perturb
from conftest import real_batch
from conftest import small_config
from data import pipeline
from stunet import checkpoints
from stunet import config as config_lib
from stunet import inflate
from stunet import sharding
from stunet import train_loop
from stunet import train_step


def _step_fn(cfg):
  mesh = sharding.make_mesh(cfg.mesh)
  spec = train_step.TrainSpec(cfg, mesh)
  null = np.zeros(cfg.data.max_text_len, np.int32)
  null[0] = 1
  return spec, mesh, train_step.make_train_step(spec, null, null > 0)


def test_frozen_spatial_weights_do_not_move():
  cfg = small_config('stunet')
  cfg.train.freeze_spatial = True
  spec, mesh, step = _step_fn(cfg)
  state = spec.init(jax.random.key(0))
  # Stand-in for trained T2I weights: fresh zero-initialised output layers would block
  # every gradient to the temporal layers.
  params = perturb(state.params, where=lambda k: not inflate.is_temporal(k))
  state = state.replace(params=jax.device_put(params, spec.shardings.params))
  before = jax.device_get(state.params)
  for _ in range(2):  # the first step has learning rate 0 (warmup)
    state, metrics = step(state, sharding.global_batch(real_batch(cfg), mesh), jax.random.key(1))
  after = jax.device_get(state.params)
  flat_b = inflate.traverse_util.flatten_dict(before)
  flat_a = inflate.traverse_util.flatten_dict(after)
  moved = {k for k in flat_b if not np.array_equal(flat_b[k], flat_a[k])}
  assert moved, 'no parameter trained'
  assert all(inflate.is_temporal(k) for k in moved), sorted(moved)[:3]
  assert any(k[0] == 'text_encoder' for k in flat_b)  # the text encoder is frozen too
  assert np.isfinite(float(metrics['loss']))
  # Only the trainable part has optimizer state.
  n_opt = sum(x.size for x in jax.tree.leaves(state.opt_state))
  n_train, n_frozen = spec.count_params(after)
  assert n_frozen > 0 and n_opt < 2 * n_train + 10 < 2 * (n_train + n_frozen)


def test_training_fits_a_fixed_batch():
  cfg = small_config('t2i')
  cfg.train.batch_size, cfg.train.lr, cfg.train.warmup_steps = 8, 3e-3, 5
  cfg.train.cfg_drop = 0.
  spec, mesh, step = _step_fn(cfg)
  state = spec.init(jax.random.key(0))
  batch = sharding.global_batch(real_batch(cfg), mesh)
  losses = []
  for _ in range(60):
    state, m = step(state, batch, jax.random.key(1))
    losses.append(float(m['loss']))
  assert np.mean(losses[-10:]) < 0.75 * np.mean(losses[:10]), losses


def test_inflate_copies_every_spatial_weight_and_checks_configs():
  t2i_cfg, st_cfg = small_config('t2i'), small_config('scratch')
  mesh = sharding.make_mesh(t2i_cfg.mesh)
  t2i = train_step.TrainSpec(t2i_cfg, mesh).init(jax.random.key(0)).params
  st = train_step.TrainSpec(st_cfg, mesh).init(jax.random.key(1)).params
  out = inflate.inflate(t2i, st)
  flat_o, flat_t, flat_s = (inflate.traverse_util.flatten_dict(p) for p in (out, t2i, st))
  for k, v in flat_o.items():
    np.testing.assert_array_equal(v, flat_t[k] if k in flat_t else flat_s[k])
  assert set(flat_o) == set(flat_s)
  wide = small_config('t2i')
  wide.model.channels = 12
  wide.model.num_heads = 2
  other = train_step.TrainSpec(wide, mesh).init(jax.random.key(0)).params
  with pytest.raises(ValueError, match='shape'):
    inflate.inflate(other, st)


def _data_config(cfg, data_dir):
  cfg.data.data_dir = data_dir
  return cfg


def test_train_resume_and_inflate_end_to_end(tmp_path, data_dir):
  # Stage 1: T2I on frames, 4 steps with checkpoints every 2.
  # The light config: the loop, checkpoints and inflation, not the layers, are tested.
  t2i_cfg = _data_config(light_config('t2i'), data_dir)
  config_lib.validate(t2i_cfg)
  t2i_dir = str(tmp_path / 't2i')
  train_loop.train(t2i_cfg, t2i_dir, pipeline.TrainInputs(t2i_cfg))
  assert checkpoints.Checkpointer(t2i_dir, read_only=True).latest_step() == 4

  # Stage 2: STUNet from the T2I run, spatial frozen; stop at 2, resume to 4.
  st_cfg = _data_config(light_config('stunet'), data_dir)
  st_cfg.train.freeze_spatial, st_cfg.train.init_from = True, t2i_dir
  config_lib.validate(st_cfg)
  st_dir = str(tmp_path / 'stunet')
  st_cfg.train.num_steps = 2
  train_loop.train(st_cfg, st_dir, pipeline.TrainInputs(st_cfg))
  st_cfg.train.num_steps = 4
  # Resumes from step 2.
  train_loop.train(st_cfg, st_dir, pipeline.TrainInputs(st_cfg))
  saved = config_lib.load(st_dir)
  assert saved.train.num_steps == 4 and saved.model.temporal

  _, t2i_params = checkpoints.load_params(t2i_dir)
  _, st_params = checkpoints.load_params(st_dir)
  _, st_params_2 = checkpoints.load_params(st_dir, step=2)
  flat_t = inflate.traverse_util.flatten_dict(jax.device_get(t2i_params))
  flat_s = inflate.traverse_util.flatten_dict(jax.device_get(st_params))
  flat_2 = inflate.traverse_util.flatten_dict(jax.device_get(st_params_2))
  for k, v in flat_t.items():  # spatial weights are the T2I run's, unchanged
    np.testing.assert_array_equal(flat_s[k], v)
  assert any(not np.array_equal(flat_s[k], flat_2[k]) for k in flat_s if inflate.is_temporal(k))

  # Stage 3: from that STUNet run into one with a layer it lacks. Its config.json is
  # read over today's defaults (config.load), so a field it was written without (here
  # layout_basis) means "off" there, not this run's value.
  saved = json.loads((tmp_path / 'stunet' / 'config.json').read_text())
  del saved['model']['layout_basis']
  (tmp_path / 'stunet' / 'config.json').write_text(json.dumps(saved))
  more = _data_config(light_config('stunet'), data_dir)
  more.train.init_from, more.model.layout_basis = st_dir, 2
  train_loop.check_init_from(more)
  spec = train_step.TrainSpec(more, sharding.make_mesh(more.mesh))
  ckpt = checkpoints.Checkpointer(str(tmp_path / 'more'))
  state = train_loop.initial_state(spec, ckpt, jax.random.key(0))
  ckpt.close()
  flat_m = inflate.traverse_util.flatten_dict(jax.device_get(state.params))
  assert any('temporal_layout_bias' in k for k in flat_m) and set(flat_s) < set(flat_m)
  for k, v in flat_s.items():  # every weight of the STUNet run, copied
    np.testing.assert_array_equal(flat_m[k], v)


def test_init_from_must_fit_this_model_and_is_checked_first(tmp_path, data_dir, monkeypatch):
  # Refused from its config.json and the parameter shapes: no state is built, nothing
  # restored or written.
  monkeypatch.setattr(train_step, 'TrainSpec', None)
  wide = small_config('t2i')
  wide.model.channels = 12
  config_lib.save(str(tmp_path / 'a'), wide)
  cfg = _data_config(small_config('stunet'), data_dir)
  cfg.train.init_from, cfg.train.freeze_spatial = str(tmp_path / 'a'), True
  with pytest.raises(ValueError, match=r'does not fit this model: unet/.* has shape '
                     r'\(.*12,?\) there and \(.*8,?\) here'):
    train_loop.prepare(cfg, str(tmp_path / 'b'))
  cfg.train.init_from = str(tmp_path / 'nowhere')
  with pytest.raises(FileNotFoundError, match='not a train.py workdir'):
    train_loop.prepare(cfg, str(tmp_path / 'b'))
  assert not (tmp_path / 'b').exists()


def test_inflate_from_a_stunet_run_copies_everything_and_adds_new_temporal_layers():
  cfg = small_config('scratch')
  mesh = sharding.make_mesh(cfg.mesh)
  src = train_step.TrainSpec(cfg, mesh).init(jax.random.key(0)).params
  cfg.model.temporal_cond = 'film_xattn'
  dst = train_step.TrainSpec(cfg, mesh).init(jax.random.key(1)).params
  flat_src, flat_dst, flat_out = (inflate.traverse_util.flatten_dict(p)
                                  for p in (src, dst, inflate.inflate(src, dst)))
  assert set(flat_out) == set(flat_dst) > set(flat_src)
  for k, v in flat_out.items():
    np.testing.assert_array_equal(v, flat_src[k] if k in flat_src else flat_dst[k])
  with pytest.raises(ValueError, match='that this model lacks'):  # the other way: weights lost
    inflate.inflate(dst, src)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='not a train.py workdir'):
    checkpoints.load_params(str(tmp_path))


def test_freeze_temporal_trains_only_the_spatial_unet():
  """The stylized-generation fine-tune: temporal layers and the text encoder stay."""
  params = {'unet': {'conv_in': {'kernel': np.ones(2)},
                     'down_0_0_temporal_conv': {'kernel': np.ones(2)},
                     'mid_0_temporal_attn_0': {'bias': np.ones(2)},
                     'down_0_0_res': {'scale': np.ones(2)}},
            'text_encoder': {'embed': np.ones(2)}}
  train, frozen = train_step.split_params(params, False, freeze_temporal=True)
  assert sorted(train) == ['unet/conv_in/kernel', 'unet/down_0_0_res/scale']
  assert len(frozen) == 3


def test_spatial_lr_scale_scales_only_the_inflated_image_networks_steps():
  tc = config_lib.base_config().train
  tc.warmup_steps = 0
  params = {k: np.ones((3, 4), np.float32)
            for k in ('unet/conv/kernel', 'unet/temporal_conv/kernel')}
  grads = {k: np.random.default_rng(i).standard_normal((3, 4)).astype(np.float32)
           for i, k in enumerate(params)}
  updates = {}
  for scale in (1., 0.25):
    tc.spatial_lr_scale = scale
    tx = train_step.make_optimizer(tc)
    updates[scale], _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates[0.25]['unet/conv/kernel'],
                             0.25 * updates[1.]['unet/conv/kernel'], rtol=1e-6)
  np.testing.assert_array_equal(updates[0.25]['unet/temporal_conv/kernel'],
                                updates[1.]['unet/temporal_conv/kernel'])
  assert np.abs(updates[1.]['unet/conv/kernel']).min() > 0
