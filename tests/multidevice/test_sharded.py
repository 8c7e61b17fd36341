"""Tests that need 8 devices: a sharded train step and the sampler on a mesh equal one
device, and checkpoints restore onto another mesh.

They run in their own process with 8 fake CPU devices, started once by
tests/test_multidevice.py (which reports each of them); run them alone with

  STUNET_MULTIDEVICE=1 XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python -m pytest -q tests/multidevice
"""

import os
import sys

import jax
import numpy as np
import pytest

from conftest import FixedTokens
from conftest import flat_params
from conftest import perturb
from conftest import real_batch
from conftest import sharded_config
from conftest import small_config
from conftest import step_setup
from stunet import checkpoints
from stunet import multidiffusion
from stunet import sampling
from stunet import sharding
from stunet import train_loop
from stunet import train_step

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'benchmarks'))
import hlo  # pylint: disable=g-import-not-at-top,wrong-import-position  # benchmarks/hlo.py

pytestmark = pytest.mark.skipif(jax.device_count() != 8, reason='needs 8 (fake) devices')


def test_sharded_steps_equal_one_device():
  """Four clips on 8 devices, two meshes: data 2 x fsdp 2 x context 2 (each clip over 2
  devices, parameters over fsdp x context) and context 8 (every clip over all 8; the
  coarse level's 4 frames are padded to 8, see folding.padded_frames). Two steps equal
  the one-device steps (loss, gradient norm, every parameter), the compiled steps
  switch layouts through all-to-alls and gather parameters only, never an activation."""
  assert jax.device_count() == 8
  cfg1 = sharded_config((1, 1, 1))
  s1, m1, f1 = step_setup(cfg1, jax.devices()[:1])
  init = jax.device_get(s1.init(jax.random.key(0)))
  batch = real_batch(cfg1)
  st1 = jax.device_put(init, s1.shardings)
  for _ in range(2):  # the first step has learning rate 0 (warmup)
    st1, mt1 = f1(st1, sharding.global_batch(batch, m1), jax.random.key(1))
  p1 = flat_params(st1.params)
  param_shapes = {tuple(x.shape) for x in jax.tree.leaves(init.params)}
  for mesh_shape in ((2, 2, 1, 2), (1, 1, 1, 8)):
    cfg8 = sharded_config(mesh_shape)
    s8, m8, f8 = step_setup(cfg8)
    st8 = jax.device_put(init, s8.shardings)
    step = f8.lower(st8, sharding.global_batch(batch, m8), jax.random.key(1)).compile()
    ops = hlo.hlo_collectives(step.as_text())
    assert any(kind == 'all-to-all' for kind, *_ in ops), mesh_shape
    # Gathered video activations: not a parameter's shape, and at least one clip's
    # smallest activation (4 frames x 8x8 x 16 channels; the text's keys and values,
    # [4 clips, 8 tokens, 32], are below it).
    gathered = [sh for kind, shapes, *_ in ops if kind == 'all-gather' for _, sh in shapes
                if sh not in param_shapes and np.prod(sh) >= 4 * 8 * 8 * 16]
    assert not gathered, (mesh_shape, gathered)
    for _ in range(2):
      st8, mt8 = step(st8, sharding.global_batch(batch, m8), jax.random.key(1))
    np.testing.assert_allclose(float(mt8['loss']), float(mt1['loss']), rtol=1e-5)
    np.testing.assert_allclose(float(mt8['grad_norm']), float(mt1['grad_norm']), rtol=1e-5)
    p8 = flat_params(st8.params)
    for k in p1:
      np.testing.assert_allclose(p8[k], p1[k], rtol=1e-5, atol=1e-6, err_msg=f'{mesh_shape} {k}')
  # (2, 2, 1, 2): parameters, their EMA and Adam moments are split along fsdp x context.
  cfg8 = sharded_config((2, 2, 1, 2))
  s8, m8, _ = step_setup(cfg8)
  st8 = jax.device_put(init, s8.shardings)
  for tree in (st8.params, st8.ema_params, st8.opt_state):
    leaves = [x for x in jax.tree.leaves(tree) if x.shape == (3, 3, 8, 8)]
    assert leaves and all("('fsdp', 'context')" in str(x.sharding.spec) for x in leaves)
  x = train_step.flatten(st8.params)['unet/down_0_0_res/conv_0/kernel']
  assert x.addressable_shards[0].data.shape == (3, 3, 2, 8)
  assert sharding.check_replication(s8.abstract_state.params, m8, cfg8.mesh) < 0.1
  # Too much replication is refused, with the fix in the message.
  cfg8.mesh.fsdp_min_size = 10 ** 9
  with pytest.raises(ValueError, match='fsdp_min_size'):
    train_loop.describe_sharding(train_step.TrainSpec(cfg8, m8))


def test_checkpoint_restores_on_another_mesh(tmp_path):
  workdir = str(tmp_path)
  cfg8 = sharded_config((1, 8, 1))
  s8, _, _ = step_setup(cfg8)
  state = s8.init(jax.random.key(0))
  ckpt = checkpoints.Checkpointer(workdir)
  ckpt.save(1, state)
  ckpt.close()
  cfg4 = sharded_config((2, 2, 1))
  s4, m4, _ = step_setup(cfg4, jax.devices()[:4])
  restored = checkpoints.Checkpointer(workdir, read_only=True).restore(s4.abstract_state)
  for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, np.asarray(b))
  leaf = train_step.flatten(restored.params)['unet/down_0_0_res/conv_0/kernel']
  assert leaf.sharding.mesh.shape == m4.shape and len(leaf.sharding.device_set) == 4
  # Every leaf is laid out as the 4-device train step takes it (its input shardings:
  # the step runs on it without a copy; test_sharded_steps_equal_one_device runs such
  # steps).
  for (path, a), want in zip(jax.tree_util.tree_leaves_with_path(restored),
                             jax.tree.leaves(s4.shardings), strict=True):
    assert a.sharding.is_equivalent_to(want, a.ndim), (jax.tree_util.keystr(path),
                                                       a.sharding, want)


def test_sampler_on_the_mesh_equals_one_device():
  """make_sampler on mesh data 2 x context 4 == on one device (same seed): two prompts
  over 16 frames in MultiDiffusion windows of 8, two windows per call, so the four
  clip-windows of a call are split over the data devices (each over 4 context ones)."""
  cfg1 = small_config('scratch')
  s1, _, _ = step_setup(cfg1, jax.devices()[:1])
  cfg = small_config('scratch')
  cfg.mesh.shape, cfg.mesh.fsdp_min_size = (2, 1, 1, 4), 64
  s, mesh, _ = step_setup(cfg)
  params = perturb(s1.init(jax.random.key(0)).params)  # so the zero-init layers act
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
  assert any(k == 'all-to-all' for k, *_ in hlo.hlo_collectives(compiled.as_text()))
  out = compiled({'params': sharded}, *args)
  assert len(out.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(out), np.asarray(one), atol=2e-5)
