"""Pod-scale training on CPU: sharded step == single device, checkpoints across mesh
shapes, NaN policy, gradient accumulation, remat and bf16.

Tests that need several devices run their body in a subprocess with
``--xla_force_host_platform_device_count`` (the main pytest process keeps one device).
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import real_batch
from conftest import small_config
from conftest import xla_flags
from data import pipeline
from stunet import checkpoints
from stunet import monitoring
from stunet import sharding
from stunet import train_lib
from stunet import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NULL = np.array([1] + [0] * 7, np.int32)


def run_with_devices(fn_names, devices: int = 8) -> None:
  """Runs the functions ``fn_names`` of this module, in order, in one fresh process with
  ``devices`` fake CPU devices (one start-up for all of them)."""
  env = dict(os.environ, PYTHONPATH=ROOT,
             XLA_FLAGS=xla_flags(devices))
  calls = '; '.join(f'print({n!r}, flush=True); test_pod.{n}()' for n in fn_names)
  code = (f'import sys; sys.path.insert(0, {os.path.join(ROOT, "tests")!r}); '
          f'import test_pod; {calls}')
  r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                     timeout=900, check=False)
  assert r.returncode == 0, f'{fn_names} failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}'
  assert r.stdout.split() == list(fn_names), r.stdout  # every body ran


def _setup(cfg, devices=None):
  mesh = sharding.make_mesh(cfg.mesh, devices)
  setup = train_lib.Setup(cfg, mesh)
  return setup, mesh, train_lib.make_train_step(setup, NULL, NULL > 0)


def _flat(tree):
  return train_lib._flat(jax.device_get(tree))  # pylint: disable=protected-access


def _light_config():
  """small_config without spatial self-attention and with cross-attention at the coarse
  level only: what the step does around the network (accumulation, remat, dtype, the
  NaN policy) does not depend on its layers, and the step compiles about 30% faster."""
  cfg = small_config('scratch')
  cfg.model.attn_levels, cfg.model.cross_attn_levels = (), (1,)
  return cfg


def _sharded_config(mesh_shape, light=False):
  cfg = _light_config() if light else small_config('scratch')
  cfg.train.batch_size = 4
  cfg.mesh.shape, cfg.mesh.fsdp_min_size = mesh_shape, 64
  return cfg


def sharded_steps_equal_one_device():
  """Four clips on 8 devices, two meshes: data 2 x fsdp 2 x context 2 (each clip over 2
  devices, parameters over fsdp x context) and context 8 (every clip over all 8; the
  coarse level's 4 frames are padded to 8, see layers.padded_frames). Two steps equal
  the one-device steps (loss, gradient norm, every parameter), the compiled steps
  switch layouts through all-to-alls and gather parameters only, never an activation."""
  assert jax.device_count() == 8
  cfg1 = _sharded_config((1, 1, 1))
  s1, m1, f1 = _setup(cfg1, jax.devices()[:1])
  init = jax.device_get(s1.init(jax.random.key(0)))
  batch = real_batch(cfg1)
  st1 = jax.device_put(init, s1.shardings)
  for _ in range(2):  # the first step has learning rate 0 (warmup)
    st1, mt1 = f1(st1, sharding.global_batch(batch, m1), jax.random.key(1))
  p1 = _flat(st1.params)
  param_shapes = {tuple(x.shape) for x in jax.tree.leaves(init.params)}
  for mesh_shape in ((2, 2, 1, 2), (1, 1, 1, 8)):
    cfg8 = _sharded_config(mesh_shape)
    s8, m8, f8 = _setup(cfg8)
    st8 = jax.device_put(init, s8.shardings)
    step = f8.lower(st8, sharding.global_batch(batch, m8), jax.random.key(1)).compile()
    ops = sharding.hlo_collectives(step.as_text())
    assert any(kind == 'all-to-all' for kind, _, _ in ops), mesh_shape
    # Gathered video activations: not a parameter's shape, and at least one clip's
    # smallest activation (4 frames x 8x8 x 16 channels; the text's keys and values,
    # [4 clips, 8 tokens, 32], are below it).
    gathered = [sh for kind, shapes, _ in ops if kind == 'all-gather' for _, sh in shapes
                if sh not in param_shapes and np.prod(sh) >= 4 * 8 * 8 * 16]
    assert not gathered, (mesh_shape, gathered)
    for _ in range(2):
      st8, mt8 = step(st8, sharding.global_batch(batch, m8), jax.random.key(1))
    np.testing.assert_allclose(float(mt8['loss']), float(mt1['loss']), rtol=1e-5)
    np.testing.assert_allclose(float(mt8['grad_norm']), float(mt1['grad_norm']), rtol=1e-5)
    p8 = _flat(st8.params)
    for k in p1:
      np.testing.assert_allclose(p8[k], p1[k], rtol=1e-5, atol=1e-6, err_msg=f'{mesh_shape} {k}')
  # (2, 2, 1, 2): parameters, their EMA and Adam moments are split along fsdp x context.
  cfg8 = _sharded_config((2, 2, 1, 2))
  s8, m8, _ = _setup(cfg8)
  st8 = jax.device_put(init, s8.shardings)
  for tree in (st8.params, st8.ema_params, st8.opt_state):
    leaves = [x for x in jax.tree.leaves(tree) if x.shape == (3, 3, 8, 8)]
    assert leaves and all("('fsdp', 'context')" in str(x.sharding.spec) for x in leaves)
  x = train_lib._flat(st8.params)['unet/down_0_0_res/conv_0/kernel']  # pylint: disable=protected-access
  assert x.addressable_shards[0].data.shape == (3, 3, 2, 8)
  assert sharding.check_replication(s8.abstract_state.params, m8, cfg8.mesh) < 0.1
  # Too much replication is refused, with the fix in the message.
  cfg8.mesh.fsdp_min_size = 10 ** 9
  with pytest.raises(ValueError, match='fsdp_min_size'):
    trainer.describe_sharding(train_lib.Setup(cfg8, m8))


def checkpoint_restores_on_another_mesh():
  import tempfile  # pylint: disable=g-import-not-at-top
  workdir = tempfile.mkdtemp()
  cfg8 = _sharded_config((1, 8, 1), light=True)
  s8, _, _ = _setup(cfg8)
  state = s8.init(jax.random.key(0))
  ckpt = checkpoints.Checkpointer(workdir)
  ckpt.save(1, state)
  ckpt.close()
  cfg4 = _sharded_config((2, 2, 1), light=True)
  s4, m4, f4 = _setup(cfg4, jax.devices()[:4])
  restored = checkpoints.Checkpointer(workdir, read_only=True).restore(s4.abstract_state)
  for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, np.asarray(b))
  leaf = train_lib._flat(restored.params)['unet/down_0_0_res/conv_0/kernel']  # pylint: disable=protected-access
  assert leaf.sharding.mesh.shape == m4.shape and len(leaf.sharding.device_set) == 4
  restored, metrics = f4(restored, sharding.global_batch(real_batch(cfg4), m4), jax.random.key(1))
  assert np.isfinite(float(metrics['loss']))


def sampler_on_the_mesh_equals_one_device():
  """make_sampler on mesh data 2 x context 4 == on one device (same seed): two prompts
  over 16 frames in MultiDiffusion windows of 8, two windows per call, so the four
  clip-windows of a call are split over the data devices (each over 4 context ones)."""
  from conftest import FixedTokens  # pylint: disable=g-import-not-at-top
  from stunet import multidiffusion  # pylint: disable=g-import-not-at-top
  from stunet import sampling  # pylint: disable=g-import-not-at-top
  cfg1 = small_config('scratch')
  s1, _, _ = _setup(cfg1, jax.devices()[:1])
  cfg = small_config('scratch')
  cfg.mesh.shape, cfg.mesh.fsdp_min_size = (2, 1, 1, 4), 64
  s, mesh, _ = _setup(cfg)
  rng = np.random.default_rng(0)  # perturbed, so the zero-initialised layers act
  params = jax.tree.map(lambda p: p + 0.05 * rng.standard_normal(p.shape).astype(p.dtype),
                        jax.device_get(s1.init(jax.random.key(0)).params))
  tokens, mask = FixedTokens().encode(['a red square', 'a blue circle grows'])
  null, null_mask = FixedTokens().null(2)
  args = (tokens, mask, null, null_mask, jax.random.key(3), np.float32(2.))
  kw = dict(num_steps=2, sampler='ddpm', threshold=0.,
            windows=multidiffusion.Windows(16, 8, 2, batch=2))
  shape = (2, 16, 16, 16, 3)
  one = sampling.make_sampler(s1.model, shape, **kw)({'params': params}, *args)
  fn = sampling.make_sampler(s.model, shape, mesh=mesh, rules=sharding.rules(cfg.mesh), **kw)
  sharded = jax.device_put(params, s.shardings.params)
  compiled = fn.lower({'params': sharded}, *args).compile()
  assert any(k == 'all-to-all' for k, _, _ in sharding.hlo_collectives(compiled.as_text()))
  out = compiled({'params': sharded}, *args)
  assert len(out.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(out), np.asarray(one), atol=2e-5)


def test_on_8_devices_steps_and_sampling_equal_one_device_and_checkpoints_change_mesh():
  run_with_devices(['sharded_steps_equal_one_device', 'checkpoint_restores_on_another_mesh',
                    'sampler_on_the_mesh_equals_one_device'])


def test_hlo_collectives_reads_each_op_once_with_its_result_bytes():
  hlo = """
  %ag = bf16[4,8]{1,0} all-gather(%x), dimensions={0}, metadata={op_name="jit(f)/u/conv"}
  %a2a = (f32[2,3]{1,0}, f32[2,3]{1,0}) all-to-all(%a, %b), channel_id=2
  %ags = (f32[2]{0}, f32[8]{0}) all-gather-start(%y), channel_id=3
  %agd = f32[8]{0} all-gather-done(%ags)
  %ar = f32[] all-reduce(%z), to_apply=%add
  %cp = s32[5]{0} collective-permute(%w), source_target_pairs={{0,1}}
  %mul = f32[4,8]{1,0} multiply(%ag, %ag)
  """
  ops = sharding.hlo_collectives(hlo, with_ops=True)
  assert ops == [('all-gather', [('bf16', (4, 8))], 64, 'jit(f)/u/conv'),
                 ('all-to-all', [('f32', (2, 3)), ('f32', (2, 3))], 48, ''),
                 ('all-gather', [('f32', (8,))], 32, ''),
                 ('all-reduce', [('f32', ())], 4, ''),
                 ('collective-permute', [('s32', (5,))], 20, '')]
  assert sharding.collective_bytes(hlo) == {
      'all-gather': (2, 96), 'all-reduce': (1, 4), 'reduce-scatter': (0, 0),
      'all-to-all': (1, 48), 'collective-permute': (1, 20)}


def test_gradient_accumulation_matches_the_full_batch():
  cfg = _light_config()
  cfg.train.batch_size = 4
  setup, mesh, step = _setup(cfg)
  cfg2 = _light_config()
  cfg2.train.batch_size, cfg2.train.grad_accum = 4, 2
  _, _, step2 = _setup(cfg2)
  state = setup.init(jax.random.key(0))
  init = _flat(state.params)
  state2 = jax.device_put(jax.device_get(state), setup.shardings)  # a copy: steps donate
  batch = sharding.global_batch(real_batch(cfg), mesh)
  for _ in range(2):
    state, m = step(state, batch, jax.random.key(1))
    state2, m2 = step2(state2, batch, jax.random.key(1))
  np.testing.assert_allclose(float(m2['loss']), float(m['loss']), rtol=1e-5)
  p, p2 = _flat(state.params), _flat(state2.params)
  assert any(not np.array_equal(p[k], init[k]) for k in p)
  for k in p:
    np.testing.assert_allclose(p2[k], p[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_remat_and_bfloat16_keep_the_step():
  def first_step(**model):
    cfg = _light_config()
    for k, v in model.items():
      setattr(cfg.model, k, v)
    setup, mesh, step = _setup(cfg)
    args = (setup.init(jax.random.key(0)), sharding.global_batch(real_batch(cfg), mesh),
            jax.random.key(1))
    lowered = step.lower(*args)
    hlo = lowered.as_text()
    state, m = lowered.compile()(*args)  # compiled once: the call would compile again
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(state.params))
    return (float(m['loss']), float(m['grad_norm'])), hlo

  ref, hlo = first_step()
  remat, remat_hlo = first_step(remat='full')
  np.testing.assert_allclose(remat, ref, rtol=1e-5)
  assert 'optimization_barrier' in remat_hlo and 'optimization_barrier' not in hlo
  low, low_hlo = first_step(dtype='bfloat16')
  # Compute in bfloat16 (the convolutions), parameters and loss in float32.
  assert 'convolution' in low_hlo and 'bf16' in low_hlo and 'bf16' not in hlo
  np.testing.assert_allclose(low, ref, rtol=0.2)


def test_non_finite_step_is_skipped_and_counted():
  cfg = _light_config()
  setup, mesh, step = _setup(cfg)
  state = setup.init(jax.random.key(0))
  good = real_batch(cfg)
  state, _ = step(state, sharding.global_batch(good, mesh), jax.random.key(1))
  leaves = lambda st: jax.tree.leaves(jax.device_get((st.params, st.ema_params, st.opt_state)))
  before = leaves(state)
  bad = dict(good, video=np.full_like(good['video'], np.nan))
  state, m = step(state, sharding.global_batch(bad, mesh), jax.random.key(1))
  assert not bool(m['finite']) and int(m['skipped']) == 1 and int(state.step) == 2
  for a, b in zip(leaves(state), before, strict=True):
    np.testing.assert_array_equal(a, b)
  state, m = step(state, sharding.global_batch(good, mesh), jax.random.key(1))
  assert bool(m['finite']) and int(state.skipped) == 1


@pytest.mark.parametrize('policy', ['skip', 'stop'])
def test_nan_policy_in_the_loop_never_saves_a_poisoned_state(tmp_path, data_dir, policy):
  cfg = _light_config()
  cfg.data.data_dir = data_dir
  cfg.train.num_steps, cfg.train.ckpt_every, cfg.train.log_every = 4, 1, 1
  cfg.train.nan_policy, cfg.train.inject_nan_steps = policy, (2,)  # the 3rd step
  workdir = str(tmp_path / 'run')
  if policy == 'stop':
    with pytest.raises(FloatingPointError, match='step 3'):
      trainer.train_and_evaluate(cfg, workdir, pipeline.TrainInputs(cfg))
  else:
    trainer.train_and_evaluate(cfg, workdir, pipeline.TrainInputs(cfg))
    summaries = monitoring.read_metrics(workdir)
    assert summaries['skipped_steps'] == {1: 0., 2: 0., 3: 1., 4: 1.}
    assert set(summaries) >= {'loss', 'learning_rate', 'grad_norm', 'examples_per_sec',
                              'steps_per_sec'}
  ckpt = checkpoints.Checkpointer(workdir, read_only=True)
  steps = ckpt.manager.all_steps()
  assert steps and (max(steps) == 4 if policy == 'skip' else max(steps) <= 3)
  setup = train_lib.Setup(cfg, sharding.make_mesh(cfg.mesh))
  for s in steps:
    state = ckpt.restore(setup.abstract_state, s)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.params)))
