"""A checkpoint that cannot be written (a full disk, a read-only folder) ends the run with
one error that names the folder, the reason and the newest complete step; nothing saved
earlier is touched and the run resumes from that step elsewhere.

The filesystems are small tmpfs mounts made by the test, which needs root (skipped
with the reason otherwise).
"""

import contextlib
import os
import shutil
import subprocess
import uuid

import pytest

from conftest import light_config
from data import pipeline
from stunet import checkpoints
from stunet import train_loop


@contextlib.contextmanager
def _tmpfs(path, size: str):
  os.makedirs(path, exist_ok=True)
  made = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}',
                         f'stunet-{uuid.uuid4().hex[:8]}', str(path)],
                        capture_output=True, text=True, check=False)
  if made.returncode:
    pytest.skip(f'cannot mount a small tmpfs here ({made.stderr.strip() or "not root"})')
  try:
    yield str(path)
  finally:
    subprocess.run(['umount', '-l', str(path)], check=False)


def _config(data_dir, steps):
  cfg = light_config()
  cfg.data.data_dir = data_dir
  cfg.train.num_steps, cfg.train.ckpt_every, cfg.train.log_every = steps, 2, 2
  cfg.train.keep = 50
  return cfg


def test_a_full_disk_stops_the_run_in_one_error_and_it_resumes_elsewhere(tmp_path, data_dir):
  with _tmpfs(tmp_path / 'small', '5m') as fs:
    workdir = os.path.join(fs, 'run')
    cfg = _config(data_dir, 40)  # ~0.3 MB a checkpoint: the disk fills first
    with pytest.raises(checkpoints.CheckpointWriteError) as error:
      train_loop.train(cfg, workdir, pipeline.TrainInputs(cfg))
    message = str(error.value)
    assert '\n' not in message
    assert 'space' in message and f'{workdir}/checkpoints' in message, message
    newest = int(message.split('the newest complete step is ')[1].split('.')[0])
    assert 1 <= newest < 40
    names = os.listdir(os.path.join(workdir, 'checkpoints'))
    assert not any('tmp' in n for n in names), names  # no unfinished step left
    assert max(int(n) for n in names) == newest
    bigger = str(tmp_path / 'bigger')
    shutil.copytree(workdir, bigger)
  metrics = train_loop.train(_config(data_dir, newest + 2), bigger,
                             pipeline.TrainInputs(_config(data_dir, newest + 2)))
  assert float(metrics['loss']) > 0
  assert max(int(n) for n in os.listdir(os.path.join(bigger, 'checkpoints'))) == newest + 2


def test_a_read_only_workdir_is_one_error_naming_the_newest_step(tmp_path, data_dir):
  with _tmpfs(tmp_path / 'fs', '8m') as fs:
    workdir = os.path.join(fs, 'run')
    train_loop.train(_config(data_dir, 2), workdir, pipeline.TrainInputs(_config(data_dir, 2)))
    saved = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
    subprocess.run(['mount', '-o', 'remount,ro', fs], check=True)
    with pytest.raises(checkpoints.CheckpointWriteError,
                       match=r'Read-only file system; the newest complete step is 2\. '):
      train_loop.train(_config(data_dir, 4), workdir,
                       pipeline.TrainInputs(_config(data_dir, 4)))
    assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == saved


def test_an_unfinished_step_left_behind_is_removed_and_listed(tmp_path):
  partial = tmp_path / 'checkpoints' / '6.orbax-checkpoint-tmp' / 'default'
  partial.mkdir(parents=True)
  (partial / 'data').write_text('half written')
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  ckpt.close()
  assert ckpt.removed_partial == ['6.orbax-checkpoint-tmp']
  assert not (tmp_path / 'checkpoints' / '6.orbax-checkpoint-tmp').exists()
