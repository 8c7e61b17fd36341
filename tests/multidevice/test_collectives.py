"""benchmarks/hlo.py's accounting of collectives on compiled 8-device programs: an op in
a scanned loop counts once per iteration, and its replica groups say whether it stays
inside a node. (Run by tests/test_multidevice.py; alone with
STUNET_MULTIDEVICE=1 XLA_FLAGS=--xla_force_host_platform_device_count=8
python -m pytest -q tests/multidevice/test_collectives.py)"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'benchmarks'))
import hlo  # pylint: disable=g-import-not-at-top,wrong-import-position  # benchmarks/hlo.py


def _programs(steps: int):
  """The same body once and scanned ``steps`` times, on a (2, 4) mesh: each step
  gathers an array split over 'inner' (4 consecutive devices) and one split over 'outer'
  (devices 4 apart), from values that change every step (nothing can be hoisted)."""
  mesh = jax.make_mesh((2, 4), ('outer', 'inner'), devices=jax.devices()[:8],
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  inner, outer = NamedSharding(mesh, P('inner')), NamedSharding(mesh, P('outer'))
  whole = NamedSharding(mesh, P())

  def body(c, x):
    a = jax.lax.with_sharding_constraint(c[0] * x[0], inner)
    b = jax.lax.with_sharding_constraint(c[1] + x[1], outer)
    a = jax.lax.with_sharding_constraint(a, whole)  # all-gather over 'inner'
    b = jax.lax.with_sharding_constraint(b, whole)  # all-gather over 'outer'
    return (jnp.sin(a), jnp.cos(b)), None

  def once(c, x):
    return body(c, x)[0]

  def looped(c, xs):
    return jax.lax.scan(body, c, xs)[0]

  c = (jax.device_put(jnp.ones(256), inner), jax.device_put(jnp.ones(512), outer))
  x = (jnp.ones(256), jnp.ones(512))
  xs = (jnp.ones((steps, 256)), jnp.ones((steps, 512)))
  return (jax.jit(once).lower(c, x).compile().as_text(),
          jax.jit(looped).lower(c, xs).compile().as_text())


def test_collectives_in_a_scan_count_once_per_iteration_and_by_link():
  assert jax.device_count() == 8
  steps = 5
  once, looped = _programs(steps)
  one, many = hlo.collective_bytes(once), hlo.collective_bytes(looped)
  assert one['all-gather'][1] > 0
  for kind in hlo.COLLECTIVES:  # the loop runs the body's collectives 5 times
    assert many[kind] == (steps * one[kind][0], steps * one[kind][1]), (kind, one, many)
  assert not hlo.unbounded_loops(looped)
  # Every gather inside the loop runs 5 times, each gathering its whole f32 result.
  ops = hlo.hlo_collectives(looped, node_size=4)
  gathers = [op for op in ops if op[0] == 'all-gather']
  assert {op[3] for op in gathers} == {steps}
  # The array split over 'inner' is gathered among 4 consecutive devices (one node of
  # 4), the one split over 'outer' among devices 4 apart (across nodes).
  by_size = {op[2]: op[-2:] for op in gathers}
  assert by_size[256 * 4] == (4, 'node') and by_size[512 * 4] == (2, 'cross'), by_size
  links = hlo.collective_links(looped, node_size=4)
  np.testing.assert_allclose(links[('all-gather', 'node')], steps * 1024 * 3 / 4)
  np.testing.assert_allclose(links[('all-gather', 'cross')], steps * 2048 / 2)
  # With nodes of 8 devices both stay inside one.
  assert {op[-1] for op in hlo.hlo_collectives(looped, node_size=8)} == {'node'}


def _network_gathers(regather: bool) -> list:
  """The all-gathers of network parameters in the compiled step (FSDP over 8 devices,
  2 micro-batches), with how often each runs."""
  from conftest import sharded_config  # pylint: disable=g-import-not-at-top
  from conftest import step_setup  # pylint: disable=g-import-not-at-top
  cfg = sharded_config((1, 8, 1, 1))
  cfg.train.batch_size, cfg.train.grad_accum = 16, 2
  cfg.train.regather_params = regather
  spec, _, step = step_setup(cfg)
  state = spec.abstract_state
  shapes = {tuple(x.shape) for x in jax.tree.leaves(state.params)}
  batch = {'video': jax.ShapeDtypeStruct((16, cfg.data.num_frames, cfg.data.size,
                                          cfg.data.size, 3), jnp.float32),
           'tokens': jax.ShapeDtypeStruct((16, cfg.data.max_text_len), jnp.int32),
           'mask': jax.ShapeDtypeStruct((16, cfg.data.max_text_len), jnp.bool_)}
  text = step.lower(state, batch, jax.random.key(0)).compile().as_text()
  return [op for op in hlo.hlo_collectives(text, with_ops=True)  # the network's gathers
          if op[0] == 'all-gather' and 'TextToVideo' in op[4]
          and all(s in shapes for _, s in op[1])]


def test_accumulation_regathers_parameters_every_micro_batch():
  """train.regather_params (the default): with FSDP over 8 devices and 2 micro-batches,
  every all-gather of a parameter runs inside the accumulation loop, once per
  micro-batch; none is hoisted out of it (which would keep every gathered weight alive
  for the whole step)."""
  regathered = _network_gathers(True)
  assert regathered and {op[3] for op in regathered} == {2}, {op[3] for op in regathered}


@pytest.mark.slow  # checks that the option above still matters: not in the CI run
def test_without_regathering_xla_hoists_the_gathers():
  """What the barrier prevents (XLA's loop-invariant code motion, as measured): weights
  gathered once, before the loop, and kept, so fewer gathers run."""
  regathered, hoisted = _network_gathers(True), _network_gathers(False)
  assert any(op[3] == 1 for op in hoisted), 'XLA no longer hoists: regather_params moot'
  assert sum(op[3] for op in hoisted) < sum(op[3] for op in regathered)
