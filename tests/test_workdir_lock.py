"""One run per workdir (stunet/workdir_lock.py): a live owner is refused, a dead one's
lock is taken over, and the trainer takes the lock before it writes anything."""

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import small_config
from data import pipeline
from stunet import train_loop
from stunet import workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_second_process_is_refused_while_the_owner_lives(tmp_path):
  with workdir_lock.WorkdirLock(str(tmp_path)) as lock:
    owner = json.loads((tmp_path / 'LOCK').read_text())
    assert owner['pid'] == os.getpid() and owner['host'] == socket.gethostname()
    assert lock.took_over is None
    code = ('import sys; from stunet import workdir_lock; '
            f'workdir_lock.WorkdirLock({str(tmp_path)!r}).acquire()')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert out.returncode != 0
    assert f'is in use by process {os.getpid()}' in out.stderr, out.stderr
    with pytest.raises(workdir_lock.WorkdirLocked, match='two runs must not write one'):
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert not (tmp_path / 'LOCK').exists()  # released


def test_a_dead_owners_lock_is_taken_over(tmp_path):
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  (tmp_path / 'LOCK').write_text(json.dumps({'host': socket.gethostname(), 'pid': dead.pid}))
  with workdir_lock.WorkdirLock(str(tmp_path)) as lock:
    assert lock.took_over['pid'] == dead.pid
    assert json.loads((tmp_path / 'LOCK').read_text())['pid'] == os.getpid()


def test_another_hosts_lock_is_refused_with_the_way_out(tmp_path):
  (tmp_path / 'LOCK').write_text(json.dumps({'host': 'elsewhere', 'pid': 1}))
  with pytest.raises(workdir_lock.WorkdirLocked, match='delete .*LOCK'):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()


def test_a_file_as_workdir_is_refused(tmp_path):
  (tmp_path / 'f').write_text('')
  with pytest.raises(NotADirectoryError, match='is a file'):
    workdir_lock.WorkdirLock(str(tmp_path / 'f')).acquire()


def test_training_takes_the_lock_before_writing(tmp_path, data_dir):
  cfg = small_config('scratch')
  cfg.data.data_dir = data_dir
  workdir = str(tmp_path / 'run')
  with workdir_lock.WorkdirLock(workdir):
    with pytest.raises(workdir_lock.WorkdirLocked):
      train_loop.train(cfg, workdir, pipeline.TrainInputs(cfg))
  assert sorted(os.listdir(workdir)) == []  # no config.json, no checkpoints/
