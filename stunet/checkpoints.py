"""The one checkpoint wrapper: orbax CheckpointManager with async saves and restore
straight into (sharded) arrays described by an abstract tree; and loading a trained
run's parameters for sampling or for initialising another run.

Layout of a workdir:  workdir/config.json  (the resolved config of the run, stunet.config)
                      workdir/checkpoints/<step>/...
"""

import os
import re
import shutil
from typing import Any, Optional

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from stunet import config as config_lib
from stunet import sharding
from stunet import train_step

# The trained models that ship with the project (docs/models.md): sample.py and
# evaluate.py use them when no --workdir is given.
_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     'pretrained')
PRETRAINED = os.path.join(_ROOT, 'stunet_tiny')                 # text-to-video
PRETRAINED_CONDITIONAL = os.path.join(_ROOT, 'stunet_tiny_conditional')  # <J, C, M> input
PRETRAINED_STYLE = os.path.join(_ROOT, 'style_outline')          # spatial weights, a style
PRETRAINED_SSR = os.path.join(_ROOT, 'ssr_tiny')                 # 32 -> 64 px SSR


def default_workdir(path: Optional[str] = None) -> str:
  """A shipped model's workdir (default: the text-to-video one, ``PRETRAINED``), or a
  clear error when this checkout lacks it."""
  path = path or PRETRAINED
  if not os.path.exists(os.path.join(path, 'config.json')):
    raise FileNotFoundError(
        f'the shipped model is not at {path} (a partial checkout?): pass '
        f'--workdir=<a train.py workdir>, or restore pretrained/ with git checkout.')
  return path


def checkpoint_dir(path: str) -> str:
  """Accepts a workdir or its checkpoints/ folder."""
  path = os.path.abspath(path)
  return path if os.path.basename(path) == 'checkpoints' else os.path.join(path, 'checkpoints')


# An unfinished save leaves its step in a folder with this in its name (orbax).
_PARTIAL = re.compile(r'^(\d+)\.orbax-checkpoint-tmp')
# What a failed write says, by the OS error behind it.
_REASONS = ('No space left on device', 'Read-only file system', 'Permission denied',
            'Disk quota exceeded')


class CheckpointWriteError(RuntimeError):
  """A checkpoint could not be written; the message names the path, the reason and the
  newest complete step (which is intact)."""


def _reason(e: BaseException) -> str:
  text = ' '.join(str(x) for x in (e, e.__cause__, e.__context__) if x is not None)
  known = next((r for r in _REASONS if r in text), None)
  return known or ' '.join(str(e).split())[:200]


def newest_step(directory: str, but: Optional[int] = None) -> str:
  """What a user whose run could not write can do next, from the complete steps of a
  checkpoint folder (a workdir or its checkpoints/), leaving out step ``but``."""
  directory = checkpoint_dir(directory)
  steps = sorted(int(n) for n in (os.listdir(directory) if os.path.isdir(directory) else ())
                 if n.isdigit() and int(n) != but)
  if not steps:
    return ('no step was completed. Free space or make the folder writable (or choose '
            'another --workdir) and rerun.')
  return (f'the newest complete step is {steps[-1]}. Free space or make the folder '
          f'writable and rerun the same command to resume from it.')


def _single_host_array_writes():
  """With one process, every replicated array is written from one replica (orbax's
  default splits it into a slice per replica so that several hosts share the write:
  with one host that is only an eager slicing op per replica and leaf, about 1 ms each,
  a third of a multi-device save's blocking time; docs/performance.md). Several
  processes keep the split. Set once per process, before the first save."""
  if jax.process_count() == 1:
    ocp.type_handlers.register_type_handler(
        jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False),
        override=True)


class Checkpointer:
  """Periodic async saves, keep the last K, resume from the latest.

  A write that fails (no space, a read-only or forbidden folder) raises
  ``CheckpointWriteError`` naming the step, the folder, the reason and the newest
  complete step; the unfinished step's folder is removed. A writable Checkpointer
  removes the unfinished step folders an interrupted run left behind
  (``removed_partial`` lists them).
  """

  def __init__(self, workdir: str, *, save_every: int = 1, keep: int = 3,
               async_save: bool = True, read_only: bool = False):
    self.directory = checkpoint_dir(workdir)
    self.read_only = read_only
    self.unreadable = []  # (step, reason) of the steps the last restore() skipped
    self.removed_partial = [] if read_only else self._remove_partial_steps()
    self._pending = None  # the step of the last save started
    self._failed = False  # a save failed (and was reported)
    _single_host_array_writes()
    options = ocp.CheckpointManagerOptions(  # (read-only: what orbax would set, silently)
        max_to_keep=None if read_only else keep,
        save_interval_steps=0 if read_only else save_every, create=not read_only,
        enable_async_checkpointing=async_save, read_only=read_only)
    try:
      self.manager = ocp.CheckpointManager(self.directory, options=options)
    except OSError as e:
      raise CheckpointWriteError(f'cannot create the checkpoint folder {self.directory}: '
                                 f'{_reason(e)}. Choose another --workdir, or make it '
                                 f'writable.') from e

  def _partial_steps(self) -> list:
    """Names of the unfinished step folders in the directory."""
    if not os.path.isdir(self.directory):
      return []
    return sorted(n for n in os.listdir(self.directory) if _PARTIAL.match(n))

  def _remove_partial_steps(self) -> list:
    """Removes (process 0) the unfinished step folders an interrupted save left; returns
    their names."""
    names = self._partial_steps()
    if jax.process_index() == 0:
      for name in names:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
    return names


  def _write_failed(self, e: BaseException, step: Optional[int]):
    """Raises CheckpointWriteError for a failed save of ``step`` (the one named in the
    error, when it names one), after removing its unfinished folder."""
    named = re.search(r'/(\d+)\.orbax-checkpoint-tmp', str(e))
    step = int(named.group(1)) if named else step
    self._failed = True
    for name in self._partial_steps():
      shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
    raise CheckpointWriteError(
        f'cannot write checkpoint step {step} under {self.directory}: {_reason(e)}; '
        f'{newest_step(self.directory, but=step)}') from e

  @staticmethod
  def has_checkpoint(workdir: str) -> bool:
    """Whether workdir/checkpoints holds a step folder (without starting orbax)."""
    d = checkpoint_dir(workdir)
    return os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, force: bool = False) -> bool:
    """Starts an async save of ``state`` at ``step`` (when the interval says so, or
    ``force``). The previous save is waited for first (its failure is raised here), and
    a save that the filesystem has no room for is refused before it starts: a write
    that runs out of space fails in orbax's threads, each of which reports it."""
    if not (force or self.manager.should_save(step)):
      return False
    self.wait()
    need, free = self._space_needed(state), shutil.disk_usage(self.directory).free
    if free < need:
      raise CheckpointWriteError(
          f'not enough space to write checkpoint step {step} under {self.directory}: it '
          f'needs about {need / 2**20:.1f} MiB and {free / 2**20:.1f} MiB are free; '
          f'{newest_step(self.directory)}')
    try:
      started = self.manager.save(step, args=ocp.args.StandardSave(state), force=force)
    except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore: many types
      self._write_failed(e, step)
    if started:
      self._pending = step
    return started

  def _space_needed(self, state: Any) -> int:
    """Bytes a new step may take: the state's bytes, or the newest complete step's size
    on disk if that is more (its metadata), plus a margin."""
    size = sum(x.nbytes for x in jax.tree.leaves(state) if hasattr(x, 'nbytes'))
    steps = sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())
    if steps:
      folder = os.path.join(self.directory, str(steps[-1]))
      size = max(size, sum(os.path.getsize(os.path.join(d, f))
                           for d, _, files in os.walk(folder) for f in files))
    return int(1.1 * size) + 2**18

  def restore(self, abstract_state: Any, step: Optional[int] = None) -> Any:
    """Restores into the shardings/dtypes of ``abstract_state`` (ShapeDtypeStructs).

    step=None: the newest step that can be read. A step that cannot (a truncated or
    missing file, e.g. from a crash during a copy) is reported with its path and the
    reason, and the next older one is tried; ``self.unreadable`` lists them. Damaged
    steps are never deleted: a writable Checkpointer moves them aside to
    ``<step>.unreadable`` so that training can write that step again.
    """
    self.unreadable = []
    if step is not None:
      if step not in self.manager.all_steps():
        raise FileNotFoundError(f'{self.directory} has no step {step}; it has '
                                f'{sorted(self.manager.all_steps()) or "none"}.')
      return self._restore(abstract_state, step)
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      raise FileNotFoundError(f'no checkpoint in {self.directory}; train first or pass '
                              f'the workdir of a finished run.')
    for s in steps:
      try:
        state = self._restore(abstract_state, s)
      except ValueError as e:
        self.unreadable.append((s, str(e)))
        continue
      if self.unreadable:  # the caller reports them
        if not self.read_only:
          for u, _ in self.unreadable:
            os.rename(os.path.join(self.directory, str(u)),
                      os.path.join(self.directory, f'{u}.unreadable'))
          self.manager.reload()
      return state
    raise ValueError(
        f'no step in {self.directory} can be restored into this model ({len(steps)} '
        f'tried). When every step fails the same way the checkpoints were written with a '
        f'different config; the newest failed with: {self.unreadable[0][1]}')

  def _restore(self, abstract_state: Any, step: int) -> Any:
    path = os.path.join(self.directory, str(step))
    try:
      return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore: many types
      reason = ' '.join(str(e).split())[:400]
      raise ValueError(f'cannot restore checkpoint {path}: {type(e).__name__}: {reason}. '
                       f'If the files are intact, it was written with a different config '
                       f'than this model\'s.') from e

  def wait(self):
    """Waits for the save in flight; raises CheckpointWriteError if it failed (once)."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      if not self._failed:
        self._write_failed(e, self._pending)
    self._pending = None

  def close(self):
    """Waits for pending saves and releases the manager (idempotent). After a failed
    save the manager is left to the process's exit: closing it would stop the event
    loop under the writes still failing in its threads, each of which then reports."""
    if self.manager is not None:
      try:
        self.wait()
      finally:
        if not self._failed:
          self.manager.close()
        self.manager = None


def split_checkpoint_path(path: str) -> tuple[str, int]:
  """workdir/checkpoints/<step> -> (workdir, step); refuses a path without a step."""
  path = os.path.abspath(path.rstrip('/'))
  step = os.path.basename(path)
  if not step.isdigit() or os.path.basename(os.path.dirname(path)) != 'checkpoints':
    raise ValueError(f'{path} is not a checkpoint folder (workdir/checkpoints/<step>); give '
                     f'a step folder, or the workdir for its latest step.')
  return os.path.dirname(os.path.dirname(path)), int(step)


def load_params(workdir: str, mesh=None, step: Optional[int] = None, ema: bool = True
                ) -> tuple[ml_collections.ConfigDict, Any]:
  """(config, params) of a checkpoint (default: the newest readable one) of a train.py
  workdir, restored into the shardings of training on ``mesh`` (default: the config's).

  ema: the moving average of the weights (what samples should use) or the raw ones.
  """
  config = config_lib.load(workdir)
  mesh = mesh or sharding.make_mesh(config.mesh)
  spec = train_step.TrainSpec(config, mesh)
  ckpt = Checkpointer(workdir, read_only=True)
  state = ckpt.restore(spec.abstract_state, step)
  ckpt.close()
  for bad, reason in ckpt.unreadable:  # fell back to an older step: say so
    logging.warning('skipped unreadable checkpoint step %d; using step %d. %s', bad,
                    int(state.step), reason)
  return config, state.sampling_params() if ema else state.params
