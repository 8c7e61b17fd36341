"""One writer per workdir: a lock file with its owner's host and pid.

train.py's process 0 takes ``workdir/LOCK`` before it writes anything (config.json,
checkpoints) and removes it when the run ends, however it ends short of SIGKILL. A
second run on the same workdir is refused while the owner is alive; a lock left by a
dead process on this host (kill -9, a crash) is stale and taken over, with a message.
A lock held from another host cannot be checked from here: it is refused, and the
message says how to clear it. Creation is atomic (O_CREAT | O_EXCL), so two runs
starting together cannot both win. Standard library only: cheap to import.
"""

import json
import os
import socket
import time

NAME = 'LOCK'


class WorkdirLocked(RuntimeError):
  """Another live run owns the workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by another user
    return True
  return True


def _read(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}  # half-written or unreadable: treated as its owner's, see acquire


class WorkdirLock:
  """``with WorkdirLock(workdir) as lock: ...``; ``lock.took_over`` names a stale owner."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, NAME)
    self.took_over = None
    self._held = False

  def acquire(self) -> 'WorkdirLock':
    if os.path.exists(self.workdir) and not os.path.isdir(self.workdir):
      raise NotADirectoryError(f'--workdir={self.workdir} is a file, not a folder: choose '
                               f'another path.')
    os.makedirs(self.workdir, exist_ok=True)
    me = {'host': socket.gethostname(), 'pid': os.getpid(), 'since': time.time()}
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        owner = _read(self.path)
        if owner.get('host') == me['host'] and owner.get('pid') and not _alive(owner['pid']):
          self.took_over = owner
          os.remove(self.path)  # stale: its process is gone
          continue
        who = (f'process {owner.get("pid")} on {owner.get("host")}' if owner
               else 'an unknown process')
        raise WorkdirLocked(
            f'{self.workdir} is in use by {who} ({self.path}): two runs must not write one '
            f'workdir. Wait for it, or use another --workdir; if that process is gone '
            f'(e.g. another host that crashed), delete {self.path}.') from None
      with os.fdopen(fd, 'w') as f:
        json.dump(me, f)
      self._held = True
      return self
    raise WorkdirLocked(f'could not take {self.path}: another run took it first.')

  def release(self) -> None:
    if self._held:
      if _read(self.path).get('pid') == os.getpid():
        os.remove(self.path)
      self._held = False

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
