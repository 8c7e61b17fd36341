"""Runs one program's bad-input cases in one process, as a user would run each
(``<program>.py <args>``), and writes what each did: its exit status, everything it
printed (stdout and stderr, read at the file descriptors, so a library's own lines
count too), whether XLA compiled anything and which files it left behind.

  python tests/bad_input_driver.py <train|sample|evaluate> cases.json results.json

Used by tests/test_bad_input.py: one process per program (each program defines its
own flags) instead of one per case.
"""

import importlib
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _files(folder: str) -> set:
  return {os.path.relpath(os.path.join(d, f), folder) for d, dirs, files in os.walk(folder)
          for f in files + dirs}


def _run_case(module, args: list, config_flags: list, cli) -> tuple:
  """(exit status, output) of ``module.main`` under the entry points' cli.run."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  for name in [n for n in flags.FLAGS if n.startswith('config.')]:
    delattr(flags.FLAGS, name)  # the config file's overrides are defined as it is parsed
  flags.FLAGS.unparse_flags()
  sys.argv = [f'{module.__name__}.py'] + args
  sys.stdout.flush()
  sys.stderr.flush()
  capture = tempfile.TemporaryFile()
  saved = os.dup(1), os.dup(2)
  os.dup2(capture.fileno(), 1)
  os.dup2(capture.fileno(), 2)
  code = 0
  try:
    cli.run(module.main, config_flags=config_flags)
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else 1
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    os.close(saved[0])
    os.close(saved[1])
  capture.seek(0)
  return code, capture.read().decode(errors='replace')


def main():
  program, cases_path, out_path = sys.argv[1:4]
  cases = json.load(open(cases_path))
  sys.path.insert(0, ROOT)
  import jax  # pylint: disable=g-import-not-at-top
  compiles = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda name, *a, **kw: compiles.append(name) if 'compile' in name else None)
  from stunet import cli  # pylint: disable=g-import-not-at-top
  module = importlib.import_module(program)
  config_flags = [module._CONFIG] if program == 'train' else []  # pylint: disable=protected-access
  results = []
  for case in cases:
    folder = case['cwd']
    os.chdir(folder)
    before = _files(folder)
    n = len(compiles)
    code, output = _run_case(module, case['args'], config_flags, cli)
    results.append(dict(args=case['args'], code=code, output=output,
                        compiled=len(compiles) > n,
                        new_files=sorted(_files(folder) - before)))
  with open(out_path, 'w') as f:
    json.dump(results, f)


if __name__ == '__main__':
  main()
