"""What a checkpoint save costs a training run: the time the loop is blocked in the save
call, and the time the write takes in the background, for a config's train state on its
mesh (random weights; the tiny STUNet's state by default).

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python benchmarks/checkpoint_save.py \
      --config=configs/tiny.py:stage=scratch '--config.mesh.shape=(2,2,1)'

On one process, stunet.checkpoints writes each replicated array from one replica;
--orbax_default keeps orbax's own choice (a slice of it per replica, for several hosts
to share), to compare the two in separate runs.
"""

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top
from absl import app
from absl import flags
from ml_collections import config_flags

from stunet import checkpoints
from stunet import cli
from stunet import config as config_lib
from stunet import sharding
from stunet import text as text_lib
from stunet import train_step

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/tiny.py:stage=scratch',
                                          'Config file.')
_SAVES = flags.DEFINE_integer('saves', 5, 'Timed saves (after one warm-up).')
_ORBAX_DEFAULT = flags.DEFINE_bool('orbax_default', False,
                                   "Leave orbax's replica-parallel writes on.")


def main(argv):
  del argv
  cli.quiet_library_logs()
  config = _CONFIG.value
  text_lib.resolve(config)
  config_lib.validate(config)
  mesh = sharding.make_mesh(config.mesh)
  spec = train_step.TrainSpec(config, mesh)
  state = jax.block_until_ready(spec.init(jax.random.key(0)))
  leaves = jax.tree.leaves(state)
  if _ORBAX_DEFAULT.value:  # what the project's rule replaces, for the comparison
    checkpoints._single_host_array_writes = lambda: None  # pylint: disable=protected-access
  ckpt = checkpoints.Checkpointer(tempfile.mkdtemp(prefix='ckpt_bench_'), keep=2)
  blocked, written = [], []
  for step in range(_SAVES.value + 1):
    t0 = time.perf_counter()
    ckpt.save(step, state, force=True)
    t1 = time.perf_counter()
    ckpt.wait()
    if step:  # the first save is a warm-up
      blocked.append(t1 - t0)
      written.append(time.perf_counter() - t1)
  ckpt.close()
  mib = sum(x.nbytes for x in leaves) / 2**20
  print(f'{len(leaves)} arrays, {mib:.1f} MiB, mesh {dict(mesh.shape)}, '
        f'{"orbax default" if _ORBAX_DEFAULT.value else "one replica writes"}: '
        f'save call {statistics.median(blocked) * 1e3:.0f} ms, background write '
        f'{statistics.median(written) * 1e3:.0f} ms (medians of {_SAVES.value})')


if __name__ == '__main__':
  cli.run(main)
