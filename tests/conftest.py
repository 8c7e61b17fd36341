"""Shared fixtures: a very small config so every test runs in seconds on a CPU.

The suite runs on pytest-xdist workers with --dist loadfile: each module's tests run on
one worker, so a module's (or session) fixture is built once and shared by its tests.
"""

import contextlib
import os
import sys
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Under pytest-xdist, each worker on cores of its own: XLA:CPU sizes its thread pools to
# the cores a process may use, and two workers each running a pool as wide as the
# machine spend their time switching. The processes a test starts (train.py, several
# hosts, 8 fake devices) get every core back (started inside ``all_cores()``): one core
# would serialise them.
ALL_CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else []
_WORKER = os.environ.get('PYTEST_XDIST_WORKER', '')
if _WORKER.startswith('gw') and '_pytest' in sys.modules and ALL_CPUS:  # (not train.py)
  _n = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
  if 1 < _n <= len(ALL_CPUS):
    _k, _share = int(_WORKER[2:]) % _n, len(ALL_CPUS) // _n
    os.sched_setaffinity(0, ALL_CPUS[_k * _share:(_k + 1) * _share])
# TensorFlow (the input pipeline only) prints a oneDNN notice on import, past the level.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
# One persistent XLA compilation cache per test session, inherited by the train.py and
# multi-device subprocesses: the same small programs are compiled by many tests and
# processes, and a cache hit skips the compile (XLA keys it by program and options).
# pytest-xdist's workers of one run share it (PYTEST_XDIST_TESTRUNUID is the run's id).
_RUN = os.environ.get('PYTEST_XDIST_TESTRUNUID')
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), f'stunet-xla-{_RUN}') if _RUN
                      else tempfile.mkdtemp(prefix='stunet-xla-'))
# The tests are compile-bound (tiny models, a few steps each). XLA:CPU options that
# compile faster for slower execution: backend optimisation level 0, the FAST_COMPILE
# preset and the classic (non-MLIR) fusion emitters. On the small config's train step
# they cut the compile by about a third, the step runs about as fast and gives the same
# losses (docs/performance.md). Subprocesses inherit them; fake-device tests add their
# flag with xla_flags().
FAST_COMPILE = ('--xla_backend_optimization_level=0 --xla_cpu_opt_preset=FAST_COMPILE '
                '--xla_cpu_use_fusion_emitters=false')
if FAST_COMPILE not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a subprocess with ``devices`` fake CPU devices."""
  return f'{FAST_COMPILE} --xla_force_host_platform_device_count={devices}'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# tests/multidevice needs 8 devices: tests/test_multidevice.py runs it in a process of its
# own (which sets STUNET_MULTIDEVICE) and reports each of its tests.
collect_ignore = [] if os.environ.get('STUNET_MULTIDEVICE') else ['multidevice']

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from stunet import config as config_lib  # pylint: disable=g-import-not-at-top


def small_config(stage: str = 'scratch'):
  """8 frames of 16x16, widths 8/16, 2 levels (one temporal halving)."""
  c = config_lib.base_config()
  c.data.num_frames, c.data.size = 8, 16
  c.data.num_train, c.data.num_test = 32, 16
  c.data.max_text_len = 8
  c.model.channels, c.model.channel_mult = 8, (1, 2)
  c.model.attn_levels, c.model.cross_attn_levels, c.model.num_heads = (1,), (0, 1), 2
  c.model.temporal = stage != 't2i'
  c.model.text.vocab_size = 32
  c.model.text.width, c.model.text.num_layers, c.model.text.mlp_dim = 16, 1, 32
  c.model.text.num_heads = 2
  c.train.stage = stage
  c.train.batch_size = 2
  c.train.frames_per_clip = 2
  c.train.num_steps, c.train.warmup_steps, c.train.log_every = 4, 1, 2
  c.train.ckpt_every = 2
  c.sample.num_steps = 3
  return c


class FixedTokens:
  """A tokenizer stand-in: fixed token ids of 8 per prompt (the small model's vocabulary
  is not the shipped tokenizer's)."""

  def encode(self, texts):
    tokens = np.zeros((len(texts), 8), np.int32)
    tokens[:, :3] = [[3 + len(t) % 5, 9, 1] for t in texts]
    return tokens, tokens > 0

  def null(self, b):
    tokens = np.zeros((b, 8), np.int32)
    tokens[:, 0] = 1
    return tokens, tokens > 0


def real_batch(cfg, rng=0):
  """A train batch of real shapes clips (as many as the stage's batch holds) with random
  tokens."""
  import jax  # pylint: disable=g-import-not-at-top
  from data import shapes  # pylint: disable=g-import-not-at-top
  b, s, n = cfg.train.batch_size, cfg.data.size, cfg.data.max_text_len
  if cfg.train.stage == 't2i':
    b //= cfg.train.frames_per_clip
  video = np.stack([shapes.example(rng, i, cfg.data.num_frames, s)['video']
                    for i in range(b)]) / 127.5 - 1.
  tokens = jax.random.randint(jax.random.key(rng), (b, n), 3, cfg.model.text.vocab_size)
  return {'video': np.asarray(video), 'tokens': np.asarray(tokens),
          'mask': np.ones((b, n), bool)}


@contextlib.contextmanager
def all_cores():
  """Processes started inside get every core of the machine (see ALL_CPUS): the calling
  thread's pin is lifted and restored after (a child inherits it; preexec_fn would make
  subprocess fork a multithreaded JAX process)."""
  if not ALL_CPUS:
    yield
    return
  pinned = os.sched_getaffinity(0)
  os.sched_setaffinity(0, ALL_CPUS)
  try:
    yield
  finally:
    os.sched_setaffinity(0, pinned)


def run_program(args, cwd, ok=True) -> str:
  """Runs ``python <args>`` in cwd as a user would; asserts it succeeded (or, ok=False,
  failed) and returns its stdout + stderr."""
  import subprocess  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL='2')
  with all_cores():
    out = subprocess.run([sys.executable] + list(args), cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
  assert (out.returncode == 0) == ok, out.stdout[-3000:] + out.stderr[-3000:]
  return out.stdout + out.stderr


def light_config(stage: str = 'scratch'):
  """small_config without spatial self-attention and with cross-attention at the coarse
  level only: what the step does around the network (accumulation, remat, dtype, the
  NaN policy, sharding, the loop and its checkpoints) does not depend on its layers, and
  the step compiles faster."""
  cfg = small_config(stage)
  cfg.model.attn_levels, cfg.model.cross_attn_levels = (), (1,)
  return cfg


def sharded_config(mesh_shape):
  """4 clips of the light config on a mesh, FSDP from 64 elements (sharding, not the
  layers, is what the 8-device tests test; the light step compiles faster)."""
  cfg = light_config()
  cfg.train.batch_size = 4
  cfg.mesh.shape, cfg.mesh.fsdp_min_size = mesh_shape, 64
  return cfg


def step_setup(cfg, devices=None):
  """(TrainSpec, mesh, the jitted train step) of a config, with the null prompt of
  FixedTokens."""
  from stunet import sharding  # pylint: disable=g-import-not-at-top
  from stunet import train_step  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh(cfg.mesh, devices)
  spec = train_step.TrainSpec(cfg, mesh)
  null, null_mask = FixedTokens().null(1)
  return spec, mesh, train_step.make_train_step(spec, null[0], null_mask[0])


def flat_params(tree) -> dict:
  """A (device) parameter tree as a flat numpy dict keyed by 'a/b/c'."""
  import jax  # pylint: disable=g-import-not-at-top
  from stunet import train_step  # pylint: disable=g-import-not-at-top
  return train_step.flatten(jax.device_get(tree))


def perturb(params, scale=0.05, seed=0, where=None):
  """params plus N(0, scale^2) noise on every leaf (or on the leaves whose path tuple
  ``where`` accepts), so that zero-initialised output layers do not hide the inputs (a
  stand-in for trained weights). The noise is numpy's: drawn inside a jitted init it
  made the compile ~4x longer."""
  import jax  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  def one(path, p):
    keys = tuple(getattr(k, 'key', k) for k in path)
    if where is not None and not where(keys):
      return p
    return p + scale * rng.standard_normal(p.shape).astype(p.dtype)
  return jax.device_put(jax.tree_util.tree_map_with_path(one, jax.device_get(params)))


def perturbed_params(model, inputs, seed=0):
  """A model's init params (under 'params') with ``perturb`` applied."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import linen as nn  # pylint: disable=g-import-not-at-top

  params = jax.jit(lambda key: nn.meta.unbox(model.init(key, *inputs)))(jax.random.key(seed))
  return perturb(params, seed=seed)


@pytest.fixture
def config_factory():
  return small_config


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """small_config's dataset, generated once per session (per xdist worker) and shared by
  every test that trains: tfds keys the folder by the dataset's settings, so runs with
  other settings get their own sub-folder of it."""
  from data import pipeline  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp('tfds'))
  cfg = small_config()
  cfg.data.data_dir = path
  pipeline.dataset_builder(cfg.data)
  return path


@pytest.fixture(scope='session')
def t5_checkpoint(tmp_path_factory):
  """A small random T5 v1.1 encoder in the HuggingFace layout, with the shipped
  sentencepiece model as its spiece.model."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location(
      't5_equivalence', os.path.join(root, 'experiments', 't5_equivalence.py'))
  eq = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(eq)
  d = str(tmp_path_factory.mktemp('t5_small'))
  eq.random_checkpoint(d)
  shutil.copy(os.path.join(root, 'data', 'captions_spm.model'), os.path.join(d, 'spiece.model'))
  return d


# The modules that take longest (end-to-end runs, subprocesses), first, longest first:
# with `--dist loadfile --no-loadscope-reorder` pytest-xdist hands out whole modules in
# this order, each to the worker that runs out of work first, so the short modules fill
# in at the end. (xdist's default reorder sorts modules by their number of tests, which
# put these few-test, long modules last, each running alone on one worker.)
LONGEST_FIRST = ('test_step_numerics.py', 'test_train.py', 'test_multidevice.py',
                 'test_cli.py', 'test_multiprocess.py', 'test_unet.py', 'test_ingest.py',
                 'test_cascade.py', 'test_pretrained.py', 'test_storage_faults.py',
                 'test_benchmarks.py', 'test_conditioning.py', 'test_ssr.py')


def pytest_collection_modifyitems(items):
  rank = lambda item: (LONGEST_FIRST.index(item.path.name)
                       if item.path.name in LONGEST_FIRST else len(LONGEST_FIRST))
  items.sort(key=rank)  # stable: the order within a module is kept
