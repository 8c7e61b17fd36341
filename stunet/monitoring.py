"""What the training loop tells the user and writes down, apart from checkpoints.

- ``report``: a progress line, printed by process 0 and logged by every process;
- ``MetricWriter``: the scalars of a run, written by process 0 to
  ``workdir/metrics.jsonl`` (one JSON object per logged step, readable without
  TensorFlow: ``read_metrics``) and to ``workdir/tensorboard`` (tensorboardX event
  files for TensorBoard);
- ``Monitor``: the host side of each step's metrics: progress lines with ETA, the
  scalars above, and the NaN policy (``train.nan_policy``);
- ``Preemption``: SIGTERM -> stop at a step boundary that every process agrees on.
"""

import json
import math
import os
import signal
import time

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

METRICS_FILE = 'metrics.jsonl'
# config.train.nan_policy: a non-finite step is skipped (counted) or stops the run.
NAN_POLICIES = ('skip', 'stop')


def report(fmt: str, *args) -> None:
  """A progress line: printed by process 0 (the user's view) and logged by all."""
  logging.info(fmt, *args)
  if jax.process_index() == 0:
    print(fmt % args, flush=True)


class MetricWriter:
  """Scalars per step, by process 0 only: ``metrics.jsonl`` and TensorBoard events."""

  def __init__(self, workdir: str):
    self._jsonl = self._tb = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._jsonl = open(os.path.join(workdir, METRICS_FILE), 'a')
      # Event files are named by the second they are opened in: a run resumed within
      # the same second would overwrite the last one without the suffix.
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'), flush_secs=30,
                               filename_suffix=f'.{time.time_ns()}')

  def write(self, step: int, scalars: dict) -> None:
    if self._jsonl is None:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({'step': int(step), **scalars}) + '\n')
    self._jsonl.flush()
    for k, v in scalars.items():
      if math.isfinite(v):  # (metrics.jsonl keeps a NaN; TensorBoard would warn about it)
        self._tb.add_scalar(k, v, global_step=int(step))

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._tb.close()
      self._jsonl = self._tb = None


def read_metrics(workdir: str) -> dict:
  """{name: {step: value}} from ``workdir/metrics.jsonl``. A resumed run logs again the
  steps after its last checkpoint; the later value of a step wins."""
  out = {}
  with open(os.path.join(workdir, METRICS_FILE)) as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        step = row.pop('step')
        for k, v in row.items():
          out.setdefault(k, {})[step] = v
  return out


class Monitor:
  """Host side of the metrics: progress lines, the metric writer, the NaN policy.

  Call it with (steps done, the step's metrics) after each step; ``data_wait``
  accumulates the seconds the loop waited for its input since the last line.
  """

  def __init__(self, config, writer: MetricWriter):
    self.tc, self.writer = config.train, writer
    self.window, self.in_a_row, self.t0 = [], 0, time.time()
    self.data_wait = 0.

  def restart_clock(self) -> None:
    """After compilation: rates and ETA count training steps only."""
    self.t0, self.data_wait = time.time(), 0.

  def __call__(self, done: int, metrics: dict) -> None:
    tc = self.tc
    m = jax.device_get(metrics)
    self.window.append(m)
    if bool(m['finite']):
      self.in_a_row = 0
    else:  # skipped (counted on the progress lines) or, at the limit, the end
      self.in_a_row += 1
      if tc.nan_policy == 'stop' or self.in_a_row >= tc.max_nonfinite_steps:
        what = (f'a non-finite loss or gradient at step {done}' if self.in_a_row == 1 else
                f'{self.in_a_row} non-finite steps in a row up to step {done} '
                f'(config.train.max_nonfinite_steps)')
        raise FloatingPointError(
            f'stopped after {what}; no update was applied and the last checkpoint is '
            f'intact. Likely causes: a learning rate too high for this model '
            f'(config.train.lr={tc.lr}; lower it or raise config.train.warmup_steps) or '
            f'non-finite values in the data.')
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
      self.writer.write(done, {
          'loss': loss, 'learning_rate': float(m['lr']), 'grad_norm': float(m['grad_norm']),
          'steps_per_sec': rate, 'examples_per_sec': rate * tc.batch_size,
          'skipped_steps': int(m['skipped']), 'data_wait_fraction': wait})
      self.window, self.t0, self.data_wait = [], time.time(), 0.


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
