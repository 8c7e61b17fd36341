"""Trains the T2I U-Net or the STUNet.

  python train.py --config=configs/tiny.py:stage=t2i --workdir=workdir/t2i
  python train.py --config=configs/tiny.py:stage=stunet --workdir=workdir/stunet \
      --config.train.init_from=workdir/t2i

Rerunning the same command resumes from the latest checkpoint in --workdir.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from ml_collections import config_flags

from configs import common
from stunet import train_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints and config.json go.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  train_lib.quiet_library_logs()
  config = _CONFIG.value
  common.resolve(config)
  common.validate(config)
  logging.info('config:\n%s', config)
  print(f'stage={config.train.stage} workdir={_WORKDIR.value} (resolved config saved there '
        f'as config.json)', flush=True)
  train_lib.train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
