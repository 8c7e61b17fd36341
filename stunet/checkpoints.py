"""The one checkpoint wrapper: orbax CheckpointManager with async saves and restore
straight into (sharded) arrays described by an abstract tree.

Layout of a workdir:  workdir/config.json  (the resolved config of the run)
                      workdir/checkpoints/<step>/...
"""

import json
import os
from typing import Any, Optional

import jax
import ml_collections
import orbax.checkpoint as ocp


# The trained models that ship with the project (README, "The shipped model" and
# "Applications"): sample.py and evaluate.py use them when no --workdir is given.
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


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))


def load_config(workdir: str, defaults: Optional[ml_collections.ConfigDict] = None
                ) -> ml_collections.ConfigDict:
  """The resolved config saved by train.py in a workdir (or a checkpoints/ dir's parent).

  defaults: the current defaults (``configs.common.base_config()``, which entry points
  pass): the saved values are merged over them, so a workdir written before a field
  existed gets that field's default, once, here; the library reads every field
  directly. Without it the saved config is returned as written (complete when this
  version wrote it).
  """
  path = os.path.abspath(workdir)
  if os.path.basename(path) == 'checkpoints':
    path = os.path.dirname(path)
  cfg = os.path.join(path, 'config.json')
  if not os.path.exists(cfg):
    raise FileNotFoundError(f'{cfg} not found: {workdir!r} is not a train.py workdir.')
  with open(cfg) as f:
    saved = _tuplify(json.load(f))
  if defaults is not None:
    saved = _merge(defaults.to_dict(), saved)
  return ml_collections.ConfigDict(saved)


def _merge(base: dict, over: dict) -> dict:
  """``over`` merged into ``base``, recursively for dicts present in both."""
  out = dict(base)
  for k, v in over.items():
    out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
  return out


def _tuplify(d):
  """JSON lists back to tuples, as the configs write them."""
  if isinstance(d, dict):
    return {k: _tuplify(v) for k, v in d.items()}
  if isinstance(d, list):
    return tuple(_tuplify(v) for v in d)
  return d
