"""The run's metrics (metrics.jsonl and TensorBoard events) and preemption."""

import os

import jax
import numpy as np

from stunet import monitoring


def test_metrics_are_jsonl_and_tensorboard_events(tmp_path):
  workdir = str(tmp_path)
  writer = monitoring.MetricWriter(workdir)
  writer.write(10, {'loss': 0.5, 'grad_norm': np.float32(2.)})
  writer.write(20, {'loss': 0.25, 'grad_norm': 1.})
  writer.close()
  writer = monitoring.MetricWriter(workdir)  # a resumed run logs step 20 again
  writer.write(20, {'loss': 0.125, 'grad_norm': 1.})
  writer.close()
  assert monitoring.read_metrics(workdir) == {'loss': {10: 0.5, 20: 0.125},
                                              'grad_norm': {10: 2., 20: 1.}}
  # TensorBoard reads the same scalars from the event files (tensorboardX writes them).
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.core.util import event_pb2  # pylint: disable=g-import-not-at-top
  seen = {}
  for name in sorted(os.listdir(os.path.join(workdir, 'tensorboard'))):
    for record in tf.data.TFRecordDataset(os.path.join(workdir, 'tensorboard', name)):
      event = event_pb2.Event.FromString(record.numpy())
      for v in event.summary.value:
        seen.setdefault(v.tag, {})[event.step] = v.simple_value
  assert seen == {'loss': {10: 0.5, 20: 0.125}, 'grad_norm': {10: 2., 20: 1.}}


def test_several_processes_agree_on_a_sigterm_only_every_n_steps(monkeypatch):
  """The all-gather that makes processes agree is a collective the host waits on: it
  runs at multiples of train.preemption_check_every only (one process: every step)."""
  import signal  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  gathers = []
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(multihost_utils, 'process_allgather',
                      lambda x: gathers.append(int(x)) or np.stack([x, x]))
  p = monitoring.Preemption(check_every=5)
  try:
    assert not any(p.should_stop(s) for s in range(1, 5)) and not gathers
    assert not p.should_stop(5) and gathers == [0]
    signal.raise_signal(signal.SIGTERM)  # the handler only sets the flag
    assert not p.should_stop(6) and p.should_stop(10) and gathers == [0, 1]
    monkeypatch.setattr(jax, 'process_count', lambda: 1)
    assert p.should_stop(11) and gathers == [0, 1]  # one process: its own flag, no collective
  finally:
    p.close()
