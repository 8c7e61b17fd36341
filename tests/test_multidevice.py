"""Runs tests/multidevice in one process with 8 fake CPU devices and reports each of its
tests here, one by one (this process keeps one device: the count is fixed when JAX
starts). Their bodies live in tests/multidevice; a failure here shows theirs."""

import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from conftest import all_cores
from conftest import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, 'tests', 'multidevice')
DEVICES = 8


def _is_slow(function: ast.FunctionDef) -> bool:
  return any(ast.unparse(d) == 'pytest.mark.slow' for d in function.decorator_list)


def _test_names() -> list:
  """'file::test' for every test function of tests/multidevice (read, not imported),
  each a pytest.param marked slow where the function is."""
  names = []
  for file in sorted(os.listdir(FOLDER)):
    if file.startswith('test_') and file.endswith('.py'):
      tree = ast.parse(open(os.path.join(FOLDER, file)).read())
      names += [pytest.param(f'{file[:-3]}::{n.name}',
                             marks=[pytest.mark.slow] if _is_slow(n) else [])
                for n in tree.body
                if isinstance(n, ast.FunctionDef) and n.name.startswith('test_')]
  return names


@pytest.fixture(scope='session')
def outcomes(tmp_path_factory, pytestconfig) -> dict:
  """'file::test' -> (outcome, details) from one pytest run on 8 devices, with this
  run's marker selection (-m "not slow" leaves the slow ones out there too)."""
  report = str(tmp_path_factory.mktemp('multidevice') / 'report.xml')
  env = {k: v for k, v in os.environ.items() if not k.startswith('PYTEST_XDIST_')}
  env.update(STUNET_MULTIDEVICE='1', XLA_FLAGS=xla_flags(DEVICES), PYTHONPATH=ROOT)
  markexpr = pytestconfig.getoption('markexpr')
  with all_cores():
    run = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                          f'--junitxml={report}', FOLDER] + (['-m', markexpr] if markexpr
                                                             else []), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1200, check=False)
  if not os.path.exists(report):
    pytest.fail(f'the 8-device run wrote no report:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}')
  out = {}
  for case in ET.parse(report).getroot().iter('testcase'):
    name = f'{case.get("classname").split(".")[-1]}::{case.get("name")}'
    problem = next(iter(case), None)  # failure, error or skipped, if any
    out[name] = ('passed', '') if problem is None else (problem.tag, problem.text or '')
  return out


@pytest.mark.parametrize('name', _test_names())
def test_on_8_devices(outcomes, name):
  outcome, details = outcomes.get(name, ('not run', ''))
  if outcome != 'passed':
    pytest.fail(f'{name} on {DEVICES} devices: {outcome}\n{details[-6000:]}', pytrace=False)


def test_every_multidevice_test_is_reported():
  names = _test_names()
  assert len(names) >= 3  # the scan finds them
  slow = [p.values[0] for p in names if p.marks]
  assert slow == ['test_collectives::test_without_regathering_xla_hoists_the_gathers'], slow
