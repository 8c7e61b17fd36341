"""train.py as real processes: SIGTERM / SIGKILL followed by a resume == an uninterrupted
run of two hosts (gloo on 127.0.0.1) with the same 4 devices. The light config: what is
tested is the loop, the checkpoints and the collectives, not the layers."""

import os
import shutil
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import all_cores
from conftest import xla_flags
from stunet import monitoring

# The tests share one preempted run (a session fixture, made once per worker; the
# suite runs with --dist loadfile, so both tests are on the same worker).

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 12
# Two processes all-reduce through gloo, in another order than one process's devices.
RTOL = 1e-4


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _command(workdir, data_dir, *extra, steps=STEPS):
  overrides = {'data.data_dir': data_dir, 'data.num_shards': 2, 'train.batch_size': 4,
               'train.num_steps': steps, 'train.warmup_steps': 2, 'train.log_every': 1,
               'train.ckpt_every': 3, 'train.schedule': 'constant', 'mesh.shape': '(2,2,1)',
               'mesh.fsdp_min_size': 64}
  return [sys.executable, os.path.join(ROOT, 'train.py'),
          f'--config={ROOT}/tests/small_config_file.py:light', f'--workdir={workdir}',
          *[f'--config.{k}={v}' for k, v in overrides.items()], *extra]


def _env(devices):
  return dict(os.environ, PYTHONPATH=f'{ROOT}:{ROOT}/tests', PYTHONUNBUFFERED='1',
              XLA_FLAGS=xla_flags(devices))


def _run(cmd, devices, signal_at=None, sig=None):
  """Runs to the end, or sends ``sig`` once the progress line of step ``signal_at``
  appears. Returns (return code, output)."""
  with all_cores():
    p = subprocess.Popen(cmd, cwd=ROOT, env=_env(devices), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
  out = []
  for line in p.stdout:
    out.append(line)
    if signal_at and line.startswith(f'step {signal_at}/'):
      p.send_signal(sig)
      signal_at = None
  return p.wait(timeout=600), ''.join(out)


def _losses(workdir):
  return monitoring.read_metrics(workdir)['loss']


@pytest.fixture(scope='session')
def preempted(tmp_path_factory, data_dir):
  """One process on 4 devices, SIGTERM'd, resumed and SIGKILL'd, resumed to the end.

  Returns the final losses and those logged up to the SIGKILL (a copy of the summaries
  taken before the last resume recomputes the steps after the last checkpoint)."""
  workdir = str(tmp_path_factory.mktemp('preempted'))
  cmd = _command(workdir, data_dir)
  rc, out = _run(cmd, devices=4, signal_at=4, sig=signal.SIGTERM)
  assert rc == 0 and 'SIGTERM: saved step' in out, out[-4000:]
  assert 'per-device memory' in out and 'replicated over fsdp x tensor' in out, out[-4000:]
  saved = int(out.split('SIGTERM: saved step ')[1].split()[0])
  assert saved < STEPS
  rc, out = _run(cmd, devices=4, signal_at=saved + 4, sig=signal.SIGKILL)
  assert rc == -signal.SIGKILL, out[-4000:]
  assert 'resuming from' in out and f'/{saved}' in out
  killed = str(tmp_path_factory.mktemp('killed'))
  shutil.copytree(workdir, killed, dirs_exist_ok=True)
  rc, out = _run(cmd, devices=4)
  assert rc == 0 and 'resuming from' in out, out[-4000:]
  return _losses(workdir), _losses(killed), saved


def test_sigkill_then_resume_recomputes_the_same_steps(preempted):
  losses, before_kill, saved = preempted
  assert sorted(losses) == list(range(1, STEPS + 1))  # the last value logged per step wins
  redone = [s for s in before_kill if s > saved]  # logged before the kill, then redone
  assert redone, before_kill
  np.testing.assert_allclose([losses[s] for s in redone], [before_kill[s] for s in redone],
                             rtol=1e-6)


def test_two_processes_match_the_preempted_one_process_run(tmp_path, data_dir, preempted):
  """Two hosts (2 devices each, gloo) == one host with the same 4 devices, SIGTERM'd and
  SIGKILL'd on the way: an uninterrupted run is the reference for both. The two hosts
  run the first half of its steps (the schedule is constant after warmup, so the length
  of the run does not change a step) and save twice on the way."""
  steps = STEPS // 2
  reference = {s: v for s, v in preempted[0].items() if s <= steps}
  workdir = str(tmp_path / 'two')
  port = _free_port()
  with all_cores():
    procs = [subprocess.Popen(
        _command(workdir, data_dir, f'--coordinator_address=127.0.0.1:{port}',
                 '--num_processes=2', f'--process_id={i}', steps=steps),
        cwd=ROOT, env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-4000:]
  assert 'process 0/2' in outs[0] and 'in 2 process(es)' in outs[0]
  losses = _losses(workdir)  # written by process 0 only
  assert sorted(losses) == sorted(reference)
  np.testing.assert_allclose([losses[s] for s in sorted(losses)],
                             [reference[s] for s in sorted(reference)], rtol=RTOL)
