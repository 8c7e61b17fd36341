"""The import graph: data flows one way (docs/architecture.md).

  stunet/   -> stunet/ only: the library (models, diffusion, sampling, training step and
               loop, checkpoints, sharding, the config's defaults and rules); it never
               imports data/ or configs/
  configs/  -> stunet/ (the defaults they start from), configs/
  data/     -> stunet/, data/: datasets, pipelines and tools built on the library
  *.py at the top (train.py, sample.py, evaluate.py) -> anything

and no package module imports itself back through another (no cycles). Run it alone:
  python -m pytest -q tests/test_layering.py
"""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALLOWED = {'configs': {'configs', 'stunet'}, 'stunet': {'stunet'}, 'data': {'data', 'stunet'}}


def _imports(path):
  """(module, names imported from it) for every absolute import in a file, inside
  functions too; ``import a.b`` gives ('a.b', [])."""
  out = []
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      out += [(a.name, []) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      out.append((node.module, [a.name for a in node.names]))
  return out


def _graph():
  """{module: {imported project modules}} for every module of the three packages,
  counting imports inside functions too (a lazy import is still a dependency)."""
  graph = {}
  for pkg in ALLOWED:
    for name in sorted(os.listdir(os.path.join(ROOT, pkg))):
      if not name.endswith('.py') or name == '__init__.py':
        continue
      mod = f'{pkg}.{name[:-3]}'
      deps = set()
      for module, names in _imports(os.path.join(ROOT, pkg, name)):
        deps |= {module} | {f'{module}.{n}' for n in names}
      graph[mod] = {d for d in deps if d.split('.')[0] in ALLOWED and d.count('.') == 1
                    and os.path.exists(os.path.join(ROOT, *d.split('.')) + '.py')}
  return graph


GRAPH = _graph()


@pytest.mark.parametrize('mod', sorted(GRAPH))
def test_imports_follow_the_layers(mod):
  pkg = mod.split('.')[0]
  bad = sorted(d for d in GRAPH[mod] if d.split('.')[0] not in ALLOWED[pkg])
  assert not bad, f'{mod} imports {bad}: {pkg}/ may import only {sorted(ALLOWED[pkg])}'


def test_no_import_cycles():
  state = {}

  def visit(mod, path):
    state[mod] = 'open'
    for dep in sorted(GRAPH.get(mod, ())):
      if state.get(dep) == 'open':
        raise AssertionError('import cycle: ' + ' -> '.join(path[path.index(dep):] + [dep]))
      if dep not in state:
        visit(dep, path + [dep])
    state[mod] = 'done'

  for mod in sorted(GRAPH):
    if mod not in state:
      visit(mod, [mod])


def test_the_graph_is_read():
  """The checks above are not vacuous: known edges are seen."""
  assert 'stunet.unet' in GRAPH['stunet.models'] and 'stunet.ssr' in GRAPH['stunet.models']
  assert 'data.shapes' in GRAPH['data.shapes_tfds']


def _declared():
  """Distribution names in setup.cfg's install_requires and extras, normalised."""
  import configparser  # pylint: disable=g-import-not-at-top
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, 'setup.cfg'))
  lines = cfg['options']['install_requires'].splitlines()
  lines += [l for v in cfg['options.extras_require'].values() for l in v.splitlines()]
  names = set()
  for line in lines:
    name = re.match(r'\s*([A-Za-z0-9_.-]*)', line.split('#')[0]).group(1)
    if name:
      names.add(name.lower().replace('_', '-'))
  return names


def _third_party_imports():
  """{top-level module: [files]} for everything our code imports that is neither the
  standard library nor ours (tests included)."""
  import sys  # pylint: disable=g-import-not-at-top
  ours = {'configs', 'stunet', 'data'} | {  # and the scripts, beside each other
      n[:-3] for d in ('', 'tests', 'benchmarks', 'experiments')
      for n in os.listdir(os.path.join(ROOT, d))
      if n.endswith('.py')}
  found = {}
  for d in ['', 'configs', 'stunet', 'data', 'benchmarks', 'experiments', 'tests']:
    folder = os.path.join(ROOT, d)
    for name in sorted(os.listdir(folder)):
      if not name.endswith('.py'):
        continue
      for module, _ in _imports(os.path.join(folder, name)):
        top = module.split('.')[0]
        if top not in sys.stdlib_module_names and top not in ours:
          found.setdefault(top, []).append(os.path.join(d, name))
  return found


def test_every_imported_package_is_declared():
  """setup.cfg names the distribution of every package the code imports directly (a
  package that only arrives as another's dependency can vanish with its next release)."""
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  dists = importlib.metadata.packages_distributions()
  declared = _declared()
  imports = _third_party_imports()
  assert {'jax', 'numpy', 'tensorflow', 'PIL'} <= set(imports)  # the scan sees imports
  missing = {}
  for top, files in sorted(imports.items()):
    # Not installed (an optional extra, e.g. torch): judged by its import name.
    names = {n.lower().replace('_', '-') for n in dists.get(top, [top])}
    if not names & declared:
      missing[top] = sorted(set(files))[:3]
  assert not missing, f'imported but not declared in setup.cfg: {missing}'
