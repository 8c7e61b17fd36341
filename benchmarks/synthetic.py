"""What the step benchmarks share: a config's train step, compiled, with random
weights and a synthetic batch of its shapes (compute, not the input pipeline)."""

import time
from typing import Any, NamedTuple

import jax
import numpy as np

from stunet import config as config_lib
from stunet import sharding
from stunet import text as text_lib
from stunet import train_step as train_step_lib


class TrainStep(NamedTuple):
  spec: Any            # train_step.TrainSpec
  state: Any           # the initial TrainState
  compiled: Any        # compiled(state, batch, rng) -> (state, metrics)
  batch: Any
  rng: jax.Array
  compile_s: float


def train_step(config) -> TrainStep:
  """Validates ``config`` (a STUNet stage without init_from gets random spatial weights)
  and AOT-compiles its train step on the config's mesh."""
  needs_t2i = config.train.freeze_spatial or config.train.stage == 'stunet'
  if needs_t2i and not config.train.init_from:
    config.train.init_from = '(benchmark: random spatial weights)'
  text_lib.resolve(config)
  config_lib.validate(config)
  mesh = sharding.make_mesh(config.mesh)
  spec = train_step_lib.TrainSpec(config, mesh)
  state = spec.init(jax.random.key(0))
  null = np.zeros(config.data.max_text_len, np.int32)
  null[0] = 1
  step = train_step_lib.make_train_step(spec, null, null > 0)
  tc, d = config.train, config.data
  clips = sharding.clips_per_step(tc)
  batch = sharding.global_batch({
      'video': np.zeros((clips, d.num_frames, d.size, d.size, 3), np.float32),
      'tokens': np.ones((clips, d.max_text_len), np.int32),
      'mask': np.ones((clips, d.max_text_len), bool)}, mesh)
  rng = jax.random.key(1)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()
  return TrainStep(spec, state, compiled, batch, rng, time.perf_counter() - t0)


def median_s(fn, n: int) -> float:
  """Median wall time of ``n`` calls of ``fn`` (each waited for), in seconds."""
  times = []
  for _ in range(n):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def flops(compiled) -> float:
  """XLA's cost analysis of a compiled program: its FLOPs (one device's)."""
  cost = compiled.cost_analysis() or {}
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0] if cost else {}
  return float(cost.get('flops', 0.))


class FixedTokenizer:
  """Fixed tokens: the benchmark measures the network, not the text."""

  def __init__(self, n):
    self.n = n

  def encode(self, texts):
    tokens = np.zeros((len(texts), self.n), np.int32)
    tokens[:, :3] = [3, 4, 1]
    return tokens, tokens > 0

  def null(self, b):
    tokens = np.zeros((b, self.n), np.int32)
    tokens[:, 0] = 1
    return tokens, tokens > 0
