"""tests/conftest.py's small_config as a config file, for train.py subprocesses.

  python train.py --config=tests/small_config_file.py:scratch ...   (tests/ on PYTHONPATH)
"""

from conftest import small_config


def get_config(arg: str = 'scratch'):
  return small_config(arg)
