"""The train step's numerics: gradient accumulation equals the full batch, remat and
bfloat16 keep the step, a non-finite step is skipped (or stops the run) and never saved.
(The sharded step is tested on 8 devices in tests/multidevice.)"""

import os

import jax
import numpy as np
import pytest

from conftest import flat_params
from conftest import light_config
from conftest import real_batch
from conftest import step_setup
from data import pipeline
from stunet import checkpoints
from stunet import monitoring
from stunet import sharding
from stunet import train_loop
from stunet import train_step


def _light4():
  """The light config with 4 clips a step: every full-batch step of this file is one
  program, compiled once (the session's persistent compilation cache)."""
  cfg = light_config()
  cfg.train.batch_size = 4
  return cfg


def test_gradient_accumulation_matches_the_full_batch():
  cfg = _light4()
  spec, mesh, step = step_setup(cfg)
  cfg2 = _light4()
  cfg2.train.grad_accum = 2
  _, _, step2 = step_setup(cfg2)
  state = spec.init(jax.random.key(0))
  init = flat_params(state.params)
  state2 = jax.device_put(jax.device_get(state), spec.shardings)  # a copy: steps donate
  batch = sharding.global_batch(real_batch(cfg), mesh)
  for _ in range(2):
    state, m = step(state, batch, jax.random.key(1))
    state2, m2 = step2(state2, batch, jax.random.key(1))
  np.testing.assert_allclose(float(m2['loss']), float(m['loss']), rtol=1e-5)
  p, p2 = flat_params(state.params), flat_params(state2.params)
  assert any(not np.array_equal(p[k], init[k]) for k in p)
  for k in p:
    np.testing.assert_allclose(p2[k], p[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_remat_and_bfloat16_keep_the_step():
  def first_step(**model):
    cfg = _light4()
    for k, v in model.items():
      setattr(cfg.model, k, v)
    spec, mesh, step = step_setup(cfg)
    args = (spec.init(jax.random.key(0)), sharding.global_batch(real_batch(cfg), mesh),
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
  cfg = _light4()
  spec, mesh, step = step_setup(cfg)
  state = spec.init(jax.random.key(0))
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
  cfg = light_config()
  cfg.data.data_dir = data_dir
  cfg.train.num_steps, cfg.train.ckpt_every, cfg.train.log_every = 4, 1, 1
  cfg.train.nan_policy, cfg.train.inject_nan_steps = policy, (2,)  # the 3rd step
  workdir = str(tmp_path / 'run')
  if policy == 'stop':
    with pytest.raises(FloatingPointError, match='a non-finite loss or gradient at step 3'):
      train_loop.train(cfg, workdir, pipeline.TrainInputs(cfg))
  else:
    train_loop.train(cfg, workdir, pipeline.TrainInputs(cfg))
    summaries = monitoring.read_metrics(workdir)
    assert summaries['skipped_steps'] == {1: 0., 2: 0., 3: 1., 4: 1.}
    assert set(summaries) >= {'loss', 'learning_rate', 'grad_norm', 'examples_per_sec',
                              'steps_per_sec'}
  ckpt = checkpoints.Checkpointer(workdir, read_only=True)
  steps = ckpt.manager.all_steps()
  assert steps and (max(steps) == 4 if policy == 'skip' else max(steps) <= 3)
  assert not any(n.endswith('orbax-checkpoint-tmp') for n in os.listdir(ckpt.directory))
  spec = train_step.TrainSpec(cfg, sharding.make_mesh(cfg.mesh))
  for s in steps:
    state = ckpt.restore(spec.abstract_state, s)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state.params)))


def test_a_run_of_non_finite_steps_ends_training_in_one_line_naming_the_causes(tmp_path):
  cfg = light_config()
  cfg.train.max_nonfinite_steps, cfg.train.log_every = 3, 100
  monitor = monitoring.Monitor(cfg, monitoring.MetricWriter(str(tmp_path)))
  ok = dict(loss=0.5, grad_norm=1., lr=1e-3, finite=True, skipped=0)
  bad = lambda n: dict(ok, loss=float('nan'), finite=False, skipped=n)
  monitor(1, ok)
  monitor(2, bad(1))
  monitor(3, bad(2))
  monitor(4, ok)  # the count is of steps in a row
  monitor(5, bad(3))
  monitor(6, bad(4))
  with pytest.raises(FloatingPointError) as error:
    monitor(7, bad(5))
  assert '\n' not in str(error.value)
  assert str(error.value).startswith('stopped after 3 non-finite steps in a row up to step 7')
  assert 'config.train.lr=0.001' in str(error.value) and 'non-finite values in the data' in str(error.value)
