"""tests/conftest.py's small_config as a config file, for train.py subprocesses.

  python train.py --config=tests/small_config_file.py:scratch ...   (tests/ on PYTHONPATH)
  python train.py --config=tests/small_config_file.py:light ...     (conftest.light_config)
"""

from conftest import light_config
from conftest import small_config


def get_config(arg: str = 'scratch'):
  return light_config() if arg == 'light' else small_config(arg)
