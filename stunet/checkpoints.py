"""The one checkpoint wrapper: orbax CheckpointManager with async saves and restore
straight into (sharded) arrays described by an abstract tree; and loading a trained
run's parameters for sampling or for initialising another run.

Layout of a workdir:  workdir/config.json  (the resolved config of the run, stunet.config)
                      workdir/checkpoints/<step>/...
"""

import os
from typing import Any, Optional

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


class Checkpointer:
  """Periodic async saves, keep the last K, resume from the latest."""

  def __init__(self, workdir: str, *, save_every: int = 1, keep: int = 3,
               async_save: bool = True, read_only: bool = False):
    self.directory = checkpoint_dir(workdir)
    options = ocp.CheckpointManagerOptions(  # (read-only: what orbax would set, silently)
        max_to_keep=None if read_only else keep,
        save_interval_steps=0 if read_only else save_every, create=not read_only,
        enable_async_checkpointing=async_save, read_only=read_only)
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self.read_only = read_only
    self.unreadable = []  # (step, reason) of the steps the last restore() skipped

  @staticmethod
  def has_checkpoint(workdir: str) -> bool:
    """Whether workdir/checkpoints holds a step folder (without starting orbax)."""
    d = checkpoint_dir(workdir)
    return os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, force: bool = False) -> bool:
    return self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

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
    self.manager.wait_until_finished()

  def close(self):
    """Waits for pending saves and releases the manager (idempotent)."""
    if self.manager is not None:
      self.manager.wait_until_finished()
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
