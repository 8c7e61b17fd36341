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
- TensorBoard summaries in ``workdir/tensorboard`` (process 0).
"""

import os
import signal
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from stunet import checkpoints
from stunet import inflate
from stunet import sharding
from stunet import train_lib
from stunet import workdir_lock


def report(fmt: str, *args) -> None:
  """A progress line: printed by process 0 (the user's view) and logged by all."""
  logging.info(fmt, *args)
  if jax.process_index() == 0:
    print(fmt % args, flush=True)


def initial_state(setup: train_lib.Setup, ckpt: checkpoints.Checkpointer, rng):
  """Resume from the latest checkpoint, else init (inflating from a T2I run if asked)."""
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
    src = config.train.init_from  # a T2I run: checked by train_and_evaluate
    _, t2i_params = train_lib.load_params(src, setup.mesh)
    params = inflate.inflate(t2i_params, params)
    report('initialised spatial weights from %s', src)
  if setup.freeze_text and not setup.precomputed_text:
    params = train_lib.with_pretrained_text(config.model, params)
    report('loaded the frozen text encoder from %s', config.model.text.pretrained)
  if params is not state.params:
    params = jax.device_put(params, setup.shardings.params)
    train, _ = setup.split(params)
    ema = jax.tree.map(jnp.copy, train_lib._unflat(train))  # pylint: disable=protected-access
    state = state.replace(params=params, ema_params=ema)  # separate buffers: donated
  return state


def check_init_from(config: ml_collections.ConfigDict) -> None:
  """Refuses a config.train.init_from that is not a T2I run, from its config.json alone
  (before anything is built or restored)."""
  src = config.train.init_from
  if src and checkpoints.load_config(src).model.temporal:
    raise ValueError(f'config.train.init_from={src!r} is a STUNet run; point it at a '
                     f'T2I run (stage=t2i).')


def describe_sharding(setup: train_lib.Setup) -> None:
  """Logs how the state is laid out and refuses a mostly replicated one."""
  abstract = setup.abstract_state
  frac = sharding.check_replication(abstract.params, setup.mesh, setup.config.mesh)
  parts = []
  for name in ('params', 'ema_params', 'opt_state'):
    total, per_device = sharding.shard_bytes(getattr(abstract, name))
    parts.append(f'{name} {total / 2**20:.1f} MiB ({per_device / 2**20:.1f} MiB/device)')
  report('mesh %s over %d devices in %d process(es); %s; %.0f%% of parameter bytes '
         'replicated over fsdp x tensor', dict(setup.mesh.shape), setup.mesh.size,
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


class Preemption:
  """SIGTERM -> stop at a step boundary that every process agrees on.

  One process stops at the next step. Several agree through a collective (an
  all-gather of the flags, which the host waits on), so they only ask every
  ``check_every`` steps, at the same steps: a SIGTERM then stops the run within that
  many steps.
  """

  def __init__(self, check_every: int = 1):
    self.requested = False
    self.check_every = max(1, int(check_every))
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def should_stop(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self.requested
    if step % self.check_every:
      return False
    flags = multihost_utils.process_allgather(np.asarray(self.requested))
    return bool(np.any(flags))

  def close(self):
    signal.signal(signal.SIGTERM, self._previous)


class Summaries:
  """TensorBoard scalars in workdir/tensorboard, written by process 0 only.

  Written with TensorFlow's core summary op and the scalars plugin's metadata, so
  TensorBoard shows them but this process does not need the tensorboard package.
  """

  def __init__(self, workdir: str):
    self.writer = None
    if jax.process_index() == 0:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
      self._tf = tf
      self._meta = summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars'))
      self.writer = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, scalars: dict) -> None:
    if self.writer is None:
      return
    tf = self._tf
    with self.writer.as_default():
      for k, v in scalars.items():
        tf.summary.write(k, tf.constant(float(v), tf.float32), step=step, metadata=self._meta)
    self.writer.flush()

  def close(self):
    if self.writer is not None:
      self.writer.close()


def read_summaries(workdir: str) -> dict:
  """{tag: {step: value}} from workdir/tensorboard (for tests and notebooks)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.core.util import event_pb2  # pylint: disable=g-import-not-at-top
  out = {}
  for path in sorted(tf.io.gfile.glob(os.path.join(workdir, 'tensorboard', 'events.*'))):
    for record in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(record.numpy())
      for v in event.summary.value:
        out.setdefault(v.tag, {})[event.step] = float(tf.make_ndarray(v.tensor))
  return out


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


class _Monitor:
  """Host side of the metrics: progress lines, summaries, the NaN policy."""

  def __init__(self, config, summaries: Summaries):
    self.tc, self.summaries = config.train, summaries
    self.window, self.in_a_row, self.t0 = [], 0, time.time()
    self.data_wait = 0.  # seconds spent waiting for the input pipeline since the last line

  def __call__(self, done: int, metrics: dict) -> None:
    tc = self.tc
    m = jax.device_get(metrics)
    self.window.append(m)
    if bool(m['finite']):
      self.in_a_row = 0
    else:
      self.in_a_row += 1
      msg = (f'non-finite loss or gradient at step {done} (loss {float(m["loss"])}, '
             f'grad norm {float(m["grad_norm"])}); the update was not applied')
      if tc.nan_policy == 'stop':
        raise FloatingPointError(f'{msg}. Stopping (config.train.nan_policy=stop); the '
                                 f'last checkpoint is intact.')
      report('%s (skipped: %d so far).', msg, int(m['skipped']))
      if self.in_a_row >= max(10, tc.log_every):
        raise FloatingPointError(
            f'{self.in_a_row} non-finite steps in a row up to step {done}: training has '
            f'diverged. Lower config.train.lr or raise config.train.warmup_steps.')
    if done % tc.log_every == 0 or done == tc.num_steps:
      elapsed = time.time() - self.t0
      rate = len(self.window) / max(elapsed, 1e-9)
      losses = [float(w['loss']) for w in self.window if bool(w['finite'])]
      loss = float(np.mean(losses)) if losses else float('nan')
      eta = (tc.num_steps - done) / max(rate, 1e-9)
      wait = min(1., self.data_wait / max(elapsed, 1e-9))
      report('step %d/%d loss %.4f grad_norm %.3f lr %.2e %.2f steps/s %.1f examples/s '
             '(%.0f%% waiting for data) ETA %dm%02ds%s',
             done, tc.num_steps, loss, float(m['grad_norm']), float(m['lr']), rate,
             rate * tc.batch_size, 100 * wait, eta // 60, eta % 60,
             f' skipped {int(m["skipped"])}' if int(m['skipped']) else '')
      self.summaries.write(done, {
          'loss': loss, 'learning_rate': float(m['lr']), 'grad_norm': float(m['grad_norm']),
          'steps_per_sec': rate, 'examples_per_sec': rate * tc.batch_size,
          'skipped_steps': int(m['skipped']), 'data_wait_fraction': wait})
      self.window, self.t0, self.data_wait = [], time.time(), 0.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, inputs) -> dict:
  """Trains to ``config.train.num_steps`` (or a SIGTERM); returns the last metrics.

  inputs: where the data come from (``data.pipeline.TrainInputs(config)``, or anything
  with ``batches(start_step)`` -> an iterator of this host's batches as numpy dicts,
  and ``null_text()`` -> the empty caption's (tokens or embedding, mask)).
  """
  if not checkpoints.Checkpointer.has_checkpoint(workdir):  # a fresh run: check first
    check_init_from(config)
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


def _train(config, workdir, inputs) -> dict:
  tc = config.train
  mesh = sharding.make_mesh(config.mesh)
  setup = train_lib.Setup(config, mesh)
  describe_sharding(setup)
  checkpoints.save_config(workdir, config)
  ckpt = checkpoints.Checkpointer(workdir, save_every=tc.ckpt_every, keep=tc.keep)
  rng = jax.random.key(config.seed)
  state = initial_state(setup, ckpt, jax.random.fold_in(rng, 0))
  start = int(state.step)
  n_train, n_frozen = train_lib.count_params(state.params, setup.freeze,
                                                setup.freeze_text)
  report('parameters: %.2fM trained, %.2fM frozen', n_train / 1e6, n_frozen / 1e6)

  null_text, null_mask = inputs.null_text()
  step_fn = train_lib.make_train_step(setup, null_text, null_mask)
  batches = inputs.batches(start)
  inject = set(tc.inject_nan_steps)
  step_rng = jax.random.fold_in(rng, 1)
  summaries, preemption = Summaries(workdir), Preemption(tc.get('preemption_check_every', 1))
  monitor = _Monitor(config, summaries)
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
        monitor.t0, monitor.data_wait = time.time(), 0.
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
    summaries.close()
  report('trained to step %d in %.1fs; checkpoints in %s', int(state.step),
         time.time() - t_start, ckpt.directory)
  return jax.device_get(metrics)
