"""Trains the T2I U-Net or the STUNet.

  python train.py --config=configs/tiny.py:stage=t2i --workdir=workdir/t2i
  python train.py --config=configs/tiny.py:stage=stunet --workdir=workdir/stunet \
      --config.train.init_from=workdir/t2i

Rerunning the same command resumes from the latest checkpoint in --workdir; SIGTERM
saves a checkpoint and exits. Several hosts: run the same command on each with
--distributed (TPU pods, SLURM and Open MPI are detected), or give the coordinator:

  python train.py ... --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# TensorFlow (the input pipeline only) prints a oneDNN notice on import, past the level.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from ml_collections import config_flags

from stunet import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints and config.json go.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Call jax.distributed.initialize (implied by '
    '--coordinator_address); arguments not given are detected from the cluster.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', os.environ.get('JAX_COORDINATOR_ADDRESS'),
    'host:port of process 0 (default: $JAX_COORDINATOR_ADDRESS).')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', int(os.environ['JAX_NUM_PROCESSES']) if 'JAX_NUM_PROCESSES' in
    os.environ else None, 'Number of processes (default: $JAX_NUM_PROCESSES).')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', int(os.environ['JAX_PROCESS_ID']) if 'JAX_PROCESS_ID' in os.environ
    else None, 'This process (default: $JAX_PROCESS_ID).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  import jax  # pylint: disable=g-import-not-at-top
  if _DISTRIBUTED.value or _COORDINATOR.value:
    # Before anything touches a device. CPU processes talk through gloo.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  from data import pipeline  # pylint: disable=g-import-not-at-top
  from data import records  # pylint: disable=g-import-not-at-top
  from stunet import checkpoints  # pylint: disable=g-import-not-at-top
  from stunet import monitoring  # pylint: disable=g-import-not-at-top
  from stunet import train_loop  # pylint: disable=g-import-not-at-top
  from stunet import workdir_lock  # pylint: disable=g-import-not-at-top
  cli.quiet_library_logs()
  config = _CONFIG.value
  try:  # a bad config or init_from is the user's to fix: a message, no traceback
    ingested_tokenizer = records.resolve_tokenizer(config)
    train_loop.prepare(config, _WORKDIR.value)
    inputs = pipeline.TrainInputs(config)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from e
  logging.info('config:\n%s', config)
  if ingested_tokenizer:
    monitoring.report('tokenizer: %s (trained by data/ingest.py on these captions)',
                      ingested_tokenizer)
  for line in inputs.text_warnings():
    monitoring.report('warning: %s', line)
  try:
    train_loop.train(config, _WORKDIR.value, inputs)
  except (workdir_lock.WorkdirLocked, NotADirectoryError,  # before training
          checkpoints.CheckpointWriteError, FloatingPointError) as e:  # a run that cannot go on
    raise app.UsageError(str(e)) from e


if __name__ == '__main__':
  cli.run(main, config_flags=[_CONFIG])
