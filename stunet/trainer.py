"""The training loop: resume or init, compile ahead of time, step, log, checkpoint.

What a pod run needs around the pure step of ``train_lib``:
- state created straight into its shardings; a start-up report of how the state is
  sharded (bytes per device) and a refusal when too much of it is replicated;
- the step compiled ahead of time, with XLA's per-device memory and FLOPs logged
  before the first step runs;
- metrics read one step late, so the host never stalls the device queue;
- non-finite steps skipped and counted, or the run stopped (``train.nan_policy``);
  the state is checked finite before every checkpoint write;
- SIGTERM (the preemption signal) saves and exits at the next step boundary, agreed
  by every process; SIGKILL loses at most the steps since the last checkpoint, and a
  resumed run sees the same data and noise as an uninterrupted one;
- metrics in ``workdir/metrics.jsonl`` and ``workdir/tensorboard`` (process 0).

Progress lines, the metric writer, the NaN policy and preemption live in
``stunet.monitoring``.
"""

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stunet import checkpoints
from stunet import inflate
from stunet import monitoring
from stunet.monitoring import report
from stunet import sharding
from stunet import train_lib
from stunet import workdir_lock


def initial_state(setup: train_lib.Setup, ckpt: checkpoints.Checkpointer, rng,
                  defaults: ml_collections.ConfigDict | None = None):
  """Resume from the latest checkpoint, else init (from config.train.init_from if set,
  its config.json read over ``defaults``)."""
  if ckpt.latest_step() is not None:
    state = ckpt.restore(setup.abstract_state)  # the newest readable step
    for step, reason in ckpt.unreadable:
      report('skipped unreadable checkpoint step %d (moved to %s/%d.unreadable): %s', step,
             ckpt.directory, step, reason)
    report('resuming from %s/%d', ckpt.directory, int(state.step))
    return state
  state = setup.init(rng)
  params, config = state.params, setup.config
  if config.train.init_from:
    src = config.train.init_from  # checked by train_and_evaluate
    src_config, src_params = train_lib.load_params(src, setup.mesh,
                                                   defaults=_defaults(config, defaults))
    params = inflate.inflate(src_params, params)
    report('initialised %s from %s', 'every weight it has' if src_config.model.temporal
           else 'spatial weights', src)
  if config.model.text.pretrained and not setup.precomputed_text:
    params = train_lib.with_pretrained_text(config.model, params)
    report('loaded the frozen text encoder from %s', config.model.text.pretrained)
  if params is not state.params:
    params = jax.device_put(params, setup.shardings.params)
    train, _ = setup.split(params)
    ema = jax.tree.map(jnp.copy, train_lib._unflat(train))  # pylint: disable=protected-access
    state = state.replace(params=params, ema_params=ema)  # separate buffers: donated
  return state


# Fields of config.model that the run in config.train.init_from must share with this
# one: they decide the shapes of the weights that are copied.
SHARED_MODEL_FIELDS = ('channels', 'channel_mult', 'num_res_blocks', 'attn_levels',
                       'cross_attn_levels', 'num_heads', 'lowres_size', 'coord_channels',
                       'text.width',
                       'text.num_layers', 'text.num_heads', 'text.mlp_dim')


def _defaults(config, defaults):
  """What an init_from run's config.json is read over: fields it lacks were added
  after it was written, so the defaults of today's code (``configs.common.base_config()``,
  which train.py passes) describe that run; without them, this run's config."""
  return config if defaults is None else defaults


def check_init_from(config: ml_collections.ConfigDict,
                    defaults: ml_collections.ConfigDict | None = None) -> None:
  """Refuses a config.train.init_from whose weights cannot be copied into this model,
  from its config.json alone (before anything is built or restored). It may be a T2I
  run (inflated) or a STUNet run (continued, with any temporal layers it lacks)."""
  src = config.train.init_from
  if not src:
    return
  other = checkpoints.load_config(src, defaults=_defaults(config, defaults))
  get = lambda c, path: c.model[path] if '.' not in path else c.model.text[path[5:]]
  for field in SHARED_MODEL_FIELDS:
    mine, theirs = get(config, field), get(other, field)
    if tuple(np.atleast_1d(mine)) != tuple(np.atleast_1d(theirs)):
      raise ValueError(f'config.train.init_from={src!r} has model.{field}={theirs!r}, this '
                       f'run {mine!r}: its weights do not fit this model; use its '
                       f'config.model or another run.')


def describe_sharding(setup: train_lib.Setup) -> None:
  """Logs how the state is laid out and refuses a mostly replicated one."""
  abstract = setup.abstract_state
  frac = sharding.check_replication(abstract.params, setup.mesh, setup.config.mesh)
  parts = []
  for name in ('params', 'ema_params', 'opt_state'):
    total, per_device = sharding.shard_bytes(getattr(abstract, name))
    parts.append(f'{name} {total / 2**20:.1f} MiB ({per_device / 2**20:.1f} MiB/device)')
  report('mesh %s over %d devices in %d process(es); %s; %.0f%% of parameter bytes '
         'replicated over fsdp x tensor x context', dict(setup.mesh.shape), setup.mesh.size,
         jax.process_count(), ', '.join(parts), 100 * frac)


def compile_step(step_fn, state, batch, rng):
  """Ahead-of-time compilation, logging XLA's per-device memory and FLOPs."""
  t0 = time.time()
  compiled = step_fn.lower(state, batch, rng).compile()
  cost = compiled.cost_analysis() or {}
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0] if cost else {}
  mem = compiled.memory_analysis()
  mib = lambda n: n / 2**20
  report('compiled the train step in %.1fs: %.2f GFLOP/step per device', time.time() - t0,
         float(cost.get('flops', 0.)) / 1e9)
  if mem is not None:
    peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes
            + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
    report('per-device memory: arguments %.1f MiB, outputs %.1f MiB (%.1f MiB aliased), '
           'temporaries %.1f MiB, code %.1f MiB; peak about %.1f MiB',
           mib(mem.argument_size_in_bytes), mib(mem.output_size_in_bytes),
           mib(mem.alias_size_in_bytes), mib(mem.temp_size_in_bytes),
           mib(mem.generated_code_size_in_bytes), mib(peak))
  return compiled


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _save(ckpt, step: int, state, force: bool = False) -> None:
  """Saves unless the state holds a non-finite value (then stops, saving nothing)."""
  if not (force or ckpt.manager.should_save(step)):
    return
  if not bool(_all_finite((state.params, state.ema_params))):
    raise FloatingPointError(
        f'the parameters are not finite at step {step}; nothing was saved and the last '
        f'checkpoint ({ckpt.latest_step()}) is intact. Lower config.train.lr.')
  ckpt.save(step, state, force=force)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, inputs,
                       defaults: ml_collections.ConfigDict | None = None) -> dict:
  """Trains to ``config.train.num_steps`` (or a SIGTERM); returns the last metrics.

  inputs: where the data come from (``data.pipeline.TrainInputs(config)``, or anything
  with ``batches(start_step)`` -> an iterator of this host's batches as numpy dicts,
  and ``null_text()`` -> the empty caption's (tokens or embedding, mask)).
  defaults: what config.train.init_from's config.json is read over (see _defaults).
  """
  if not checkpoints.Checkpointer.has_checkpoint(workdir):  # a fresh run: check first
    check_init_from(config, defaults)
  # Process 0 owns the workdir for the whole run: nothing is written before the lock.
  lock = workdir_lock.WorkdirLock(workdir) if jax.process_index() == 0 else None
  if lock is not None:
    lock.acquire()
    if lock.took_over:
      report('took over the stale lock of process %s on %s (no longer running)',
             lock.took_over.get('pid'), lock.took_over.get('host'))
  try:
    return _train(config, workdir, inputs, defaults)
  finally:
    if lock is not None:
      lock.release()


def _train(config, workdir, inputs, defaults) -> dict:
  tc = config.train
  mesh = sharding.make_mesh(config.mesh)
  setup = train_lib.Setup(config, mesh)
  describe_sharding(setup)
  checkpoints.save_config(workdir, config)
  ckpt = checkpoints.Checkpointer(workdir, save_every=tc.ckpt_every, keep=tc.keep)
  rng = jax.random.key(config.seed)
  state = initial_state(setup, ckpt, jax.random.fold_in(rng, 0), defaults)
  start = int(state.step)
  n_train, n_frozen = train_lib.count_params(state.params, setup.freeze,
                                             setup.freeze_text, setup.freeze_temporal)
  report('parameters: %.2fM trained, %.2fM frozen', n_train / 1e6, n_frozen / 1e6)

  null_text, null_mask = inputs.null_text()
  step_fn = train_lib.make_train_step(setup, null_text, null_mask)
  batches = inputs.batches(start)
  inject = set(tc.inject_nan_steps)
  step_rng = jax.random.fold_in(rng, 1)
  writer, preemption = monitoring.MetricWriter(workdir), monitoring.Preemption(
      tc.preemption_check_every)
  monitor = monitoring.Monitor(config, writer)
  t_start, compiled, pending, metrics = time.time(), None, None, {}
  try:
    for step in range(start, tc.num_steps):
      t_wait = time.time()
      local = {k: v for k, v in next(batches).items()
               if k in ('video', 'tokens', 'text', 'mask')}
      monitor.data_wait += time.time() - t_wait
      if step in inject:
        local['video'] = np.full_like(local['video'], np.nan)
      batch = sharding.global_batch(local, mesh)
      if compiled is None:
        compiled = compile_step(step_fn, state, batch, step_rng)
        monitor.restart_clock()
      state, metrics = compiled(state, batch, step_rng)
      if pending is not None:  # one step late: the device already has the next step
        monitor(*pending)
      pending = (step + 1, metrics)
      if preemption.should_stop(step + 1):
        monitor(*pending)
        _save(ckpt, step + 1, state, force=True)
        ckpt.close()  # waits for the write to finish
        report('SIGTERM: saved step %d and stopped; rerun the same command to resume.',
               step + 1)
        return jax.device_get(metrics)
      _save(ckpt, step + 1, state)
    if pending is not None:
      monitor(*pending)
    if ckpt.latest_step() != int(state.step):
      _save(ckpt, int(state.step), state, force=True)
  finally:
    ckpt.close()  # an error still lets a started (async) save finish
    preemption.close()
    writer.close()
  report('trained to step %d in %.1fs; checkpoints in %s', int(state.step),
         time.time() - t_start, ckpt.directory)
  return jax.device_get(metrics)
