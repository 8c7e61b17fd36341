"""The training loop: resume or init, compile ahead of time, step, log, checkpoint.

What a pod run needs around the pure step of ``train_step``:
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
from stunet import config as config_lib
from stunet import inflate
from stunet import monitoring
from stunet import sharding
from stunet import t5
from stunet import text as text_lib
from stunet import train_step
from stunet import workdir_lock
from stunet.monitoring import report


def prepare(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Everything a run checks before it builds or writes anything: the text fields that
  files determine (``text.resolve``), the config's rules (``config.validate``), the
  batch against the devices, and a fresh run's ``init_from`` against this model."""
  text_lib.resolve(config)
  config_lib.validate(config)
  sharding.check_batch(config, jax.device_count())
  if not checkpoints.Checkpointer.has_checkpoint(workdir):
    check_init_from(config)


def initial_state(spec: train_step.TrainSpec, ckpt: checkpoints.Checkpointer, rng):
  """Resume from the latest checkpoint, else init (from config.train.init_from if set)."""
  if ckpt.latest_step() is not None:
    state = ckpt.restore(spec.abstract_state)  # the newest readable step
    for step, reason in ckpt.unreadable:
      report('skipped unreadable checkpoint step %d (moved to %s/%d.unreadable): %s', step,
             ckpt.directory, step, reason)
    report('resuming from %s/%d', ckpt.directory, int(state.step))
    return state
  state = spec.init(rng)
  params, config = state.params, spec.config
  if config.train.init_from:
    src = config.train.init_from  # checked by prepare
    src_config, src_params = checkpoints.load_params(src, spec.mesh)
    params = inflate.inflate(src_params, params)
    report('initialised %s from %s', 'every weight it has' if src_config.model.temporal
           else 'spatial weights', src)
  if config.model.text.pretrained and not spec.precomputed_text:
    params = t5.with_t5_encoder(config.model, params)
    report('loaded the frozen text encoder from %s', config.model.text.pretrained)
  if params is not state.params:
    params = jax.device_put(params, spec.shardings.params)
    train, _ = spec.split(params)
    ema = jax.tree.map(jnp.copy, train_step.unflatten(train))
    state = state.replace(params=params, ema_params=ema)  # separate buffers: donated
  return state


def check_init_from(config: ml_collections.ConfigDict) -> None:
  """Refuses a config.train.init_from whose weights cannot be copied into this model,
  from its config.json and the two models' parameter shapes (before anything is
  restored). It may be a T2I run (inflated) or a STUNet run (continued, with any
  temporal layers it lacks)."""
  src = config.train.init_from
  if not src:
    return
  other = config_lib.load(src)
  inflate.check_fits(train_step.param_shapes(other), train_step.param_shapes(config),
                     f'config.train.init_from={src!r}')


def describe_sharding(spec: train_step.TrainSpec) -> None:
  """Logs how the state is laid out and refuses a mostly replicated one."""
  abstract = spec.abstract_state
  frac = sharding.check_replication(abstract.params, spec.mesh, spec.config.mesh)
  parts = []
  for name in ('params', 'ema_params', 'opt_state'):
    total, per_device = sharding.shard_bytes(getattr(abstract, name))
    parts.append(f'{name} {total / 2**20:.1f} MiB ({per_device / 2**20:.1f} MiB/device)')
  report('mesh %s over %d devices in %d process(es); %s; %.0f%% of parameter bytes '
         'replicated over fsdp x tensor x context', dict(spec.mesh.shape), spec.mesh.size,
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


def train(config: ml_collections.ConfigDict, workdir: str, inputs) -> dict:
  """Trains to ``config.train.num_steps`` (or a SIGTERM); returns the last metrics.

  config: prepared (``prepare``). inputs: where the data come from
  (``data.pipeline.TrainInputs(config)``, or anything with ``batches(start_step)`` ->
  an iterator of this host's batches as numpy dicts, and ``null_text()`` -> the empty
  caption's (tokens or embedding, mask)).
  """
  try:
    # Process 0 owns the workdir for the whole run: nothing is written before the lock.
    lock = workdir_lock.WorkdirLock(workdir) if jax.process_index() == 0 else None
    if lock is not None:
      lock.acquire()
      if lock.took_over:
        report('took over the stale lock of process %s on %s (no longer running)',
               lock.took_over.get('pid'), lock.took_over.get('host'))
    try:
      return _train(config, workdir, inputs)
    finally:
      if lock is not None:
        lock.release()
  except OSError as e:  # the workdir's other files: its lock, config.json, metrics
    if isinstance(e, (workdir_lock.WorkdirLocked, NotADirectoryError)):
      raise
    path = e.filename or workdir
    raise checkpoints.CheckpointWriteError(
        f'cannot write {path}: {e.strerror or e}; {checkpoints.newest_step(workdir)}') from e


def _train(config, workdir, inputs) -> dict:
  tc = config.train
  mesh = sharding.make_mesh(config.mesh)
  spec = train_step.TrainSpec(config, mesh)
  describe_sharding(spec)
  config_lib.save(workdir, config)
  report('stage=%s workdir=%s process %d/%d (resolved config saved there as config.json)',
         config.train.stage, workdir, jax.process_index(), jax.process_count())
  ckpt = checkpoints.Checkpointer(workdir, save_every=tc.ckpt_every, keep=tc.keep)
  for name in ckpt.removed_partial:
    report('removed %s/%s: an unfinished checkpoint left by a save that did not complete',
           ckpt.directory, name)
  rng = jax.random.key(config.seed)
  state = initial_state(spec, ckpt, jax.random.fold_in(rng, 0))
  start = int(state.step)
  n_train, n_frozen = spec.count_params(state.params)
  report('parameters: %.2fM trained, %.2fM frozen', n_train / 1e6, n_frozen / 1e6)

  null_text, null_mask = inputs.null_text()
  step_fn = train_step.make_train_step(spec, null_text, null_mask)
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
