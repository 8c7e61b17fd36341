"""Checkpoint integrity: an unreadable step is reported with its path and reason, and
restore falls back to the newest readable one, never deleting the damaged step."""

import contextlib
import os

import jax
import numpy as np
import pytest

from stunet import checkpoints

# Restoring a truncated step makes orbax's async reader fail; a callback it queued can
# then reach its closed event loop and print "Event loop is closed" (an unraisable
# exception, reported by pytest in whichever test is running when it fires). The
# failure itself is what these tests check (one clear error, the step skipped).
pytestmark = pytest.mark.filterwarnings(
    'ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning')


def _state(v):
  return {'w': np.full((64, 64), v, np.float32), 'step': np.int32(v)}


def _abstract():
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                      _state(0))


@pytest.fixture
def workdir(tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path), save_every=1, async_save=False)
  for step in (1, 2, 3):
    ckpt.save(step, _state(step))
  ckpt.close()
  return tmp_path


def _opened(workdir):
  """A read-only Checkpointer that is closed on exit: an orbax manager left to the
  garbage collector can report 'Event loop is closed' during a later test."""
  return contextlib.closing(checkpoints.Checkpointer(str(workdir), read_only=True))


def _data_files(step_dir):
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs
           if '/d/' in os.path.join(d, f)]
  assert files, sorted(os.walk(step_dir))
  return files


def _truncate_data(step_dir):
  """Halves every array data file of a step (as an interrupted copy would)."""
  for f in _data_files(step_dir):
    with open(f, 'r+b') as fh:
      fh.truncate(os.path.getsize(f) // 2)


def test_read_only_restore_falls_back_and_leaves_the_damage(workdir):
  ckpts = workdir / 'checkpoints'
  _truncate_data(ckpts / '3')
  for f in _data_files(ckpts / '2'):  # and a step whose data files are missing
    os.remove(f)
  with _opened(workdir) as ckpt:
    state = ckpt.restore(_abstract())
    assert int(state['step']) == 1 and float(state['w'][0, 0]) == 1.
    assert [s for s, _ in ckpt.unreadable] == [3, 2]
    for s, reason in ckpt.unreadable:
      assert f'cannot restore checkpoint {ckpts}/{s}:' in reason, reason
    assert (ckpts / '3').exists() and (ckpts / '2').exists()  # nothing deleted or moved
    with pytest.raises(ValueError, match=f'{ckpts}/3'):  # an explicit step: no fallback
      ckpt.restore(_abstract(), 3)
    with pytest.raises(FileNotFoundError, match=r'has no step 7; it has \[1, 2, 3\]'):
      ckpt.restore(_abstract(), 7)


def test_training_restore_moves_the_damaged_step_aside_and_can_save_it_again(workdir):
  ckpts = workdir / 'checkpoints'
  _truncate_data(ckpts / '3')
  ckpt = checkpoints.Checkpointer(str(workdir), save_every=1, async_save=False)
  assert int(ckpt.restore(_abstract())['step']) == 2
  assert (ckpts / '3.unreadable').is_dir() and not (ckpts / '3').exists()
  assert ckpt.latest_step() == 2
  ckpt.save(3, _state(30))  # the run redoes step 3
  ckpt.close()
  with _opened(workdir) as ckpt:
    again = ckpt.restore(_abstract())
  assert float(again['w'][0, 0]) == 30.


def test_no_readable_step_is_one_clear_error(workdir):
  for s in ('1', '2', '3'):
    _truncate_data(workdir / 'checkpoints' / s)
  with _opened(workdir) as ckpt, pytest.raises(ValueError,
                                               match='no step in .* can be restored'):
    ckpt.restore(_abstract())
