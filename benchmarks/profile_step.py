"""Where a train step's time goes: XLA:CPU's per-op trace, grouped by layer and op kind.

  python benchmarks/profile_step.py --config=configs/tiny.py:stage=scratch \
      --config.model.channels=32

Compiles the config's train step (random weights, synthetic batch of its shapes, as
``step_time.py``), runs it under ``jax.profiler`` and reads the Perfetto trace that
the profiler writes: XLA:CPU records one event per executed HLO instruction (its
"thunk"). Each instruction is attributed to the layer that produced it through the
HLO's ``op_name`` metadata (the Flax module path), and to a kind: matmuls and
convolutions (XLA:CPU runs them through YNNPACK or Eigen), transposes and copies,
and the rest (elementwise, reductions, normalisation). Thunks run on several threads
at once, so the table gives shares of the summed thunk time, scaled to the measured
step time.
"""

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

import synthetic  # benchmarks/synthetic.py, beside this script
from stunet import cli

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/tiny.py:stage=scratch',
                                          'Config file.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Profiled train steps (after one warm-up).')
_TOP = flags.DEFINE_integer('top', 12, 'Single instructions listed, slowest first.')

# Layer of an instruction, from the Flax module path in its op_name (first match wins).
LAYERS = (
    ('temporal conv (SpaceTimeConvBlock)', r'_temporal_conv/temporal_conv/'),
    ('spatial conv (SpaceTimeConvBlock)', r'_temporal_conv/'),
    ('temporal down/upsampling', r'_temporal_resize/'),
    ('temporal attention', r'_temporal_attn'),
    ('spatial attention', r'_attn/'),
    ('ResBlock', r'_res/'),
    ('spatial down/upsampling', r'_(down|up)sample/|/(down|up)_\d+_resize/'),
    ('text encoder', r'encode_text'),
    ('rest of the U-Net (in/out convs, embeddings)', r'TextToVideo'),
)


def _parse_hlo(text: str):
  """Instruction name -> (opcode, op_name). An instruction without metadata (a fusion
  that XLA built, such as a weight gradient's convolution or a layout transpose) takes
  the op_name inside its fused computation, or else that of its nearest operand that
  has one: the layer whose activations it reads."""
  comp_meta, comp, instrs = {}, None, {}
  line_re = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*? ([\w\-]+)\((.*?)\)(?:, |$)')
  for line in text.splitlines():
    head = re.match(r'^(?:ENTRY )?%?([\w.\-]+) [^=]*\{\s*$', line)
    if head:
      comp = head.group(1)
      continue
    m = line_re.match(line)
    if not m:
      continue
    name, opcode, operands = m.groups()
    meta = re.search(r'op_name="([^"]*)"', line)
    meta = meta.group(1) if meta else ''
    if meta and comp is not None:
      comp_meta.setdefault(comp, meta)
    called = re.search(r'calls=%?([\w.\-]+)', line)
    instrs[name] = (opcode, meta, called.group(1) if called else None,
                    re.findall(r'%([\w.\-]+)', operands))
  out = {}
  for name, (opcode, meta, called, _) in instrs.items():
    out[name] = (opcode, meta or comp_meta.get(called, ''))
  for name, (opcode, meta) in list(out.items()):
    seen, queue = {name}, list(instrs[name][3])
    while not meta and queue:
      nxt = queue.pop(0)
      if nxt in seen or nxt not in out:
        continue
      seen.add(nxt)
      meta = out[nxt][1]
      queue.extend(instrs[nxt][3])
    out[name] = (opcode, meta)
  return out


def _kind(name: str, opcode: str) -> str:
  if name.startswith('ynn_fusion') or opcode in ('dot', 'convolution') or \
      name.startswith(('dot', 'convolution', 'conv_general_dilated')):
    return 'matmul / convolution'
  if 'transpose' in name or opcode in ('transpose', 'copy') or name.startswith('copy'):
    return 'transpose / copy'
  return 'elementwise / reduce / other'


def _layer(op_name: str) -> str:
  for label, pattern in LAYERS:
    if re.search(pattern, op_name):
      return label
  return 'optimizer, EMA, noise, loss'


def profile(compiled, args, steps: int):
  """Runs ``compiled(*args)`` ``steps`` times under the profiler -> {thunk: seconds}."""
  state, rest = args[0], args[1:]
  state = compiled(state, *rest)[0]
  jax.block_until_ready(state)
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
      for _ in range(steps):
        state, metrics = compiled(state, *rest)
        jax.block_until_ready(metrics)
    path, = glob.glob(os.path.join(d, '**', 'perfetto_trace.json.gz'), recursive=True)
    with gzip.open(path) as f:
      trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  total = collections.Counter()
  for e in events:
    if e.get('ph') == 'X':
      total[e['name']] += e.get('dur', 0.) / 1e6 / steps
  return total, state


def main(argv):
  del argv
  cli.quiet_library_logs()
  _, state, compiled, batch, rng, _ = synthetic.train_step(_CONFIG.value)
  instrs = _parse_hlo(compiled.as_text())
  thunks, state = profile(compiled, (state, batch, rng), _STEPS.value)

  times = []
  for _ in range(_STEPS.value):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  step_s = float(np.median(times))

  by_layer, by_kind, by_both = collections.Counter(), collections.Counter(), {}
  ops = {}
  for name, secs in thunks.items():
    if name not in instrs:
      continue  # runtime events (executable, threads), not HLO instructions
    opcode, op_name = instrs[name]
    layer, kind = _layer(op_name), _kind(name, opcode)
    by_layer[layer] += secs
    by_kind[kind] += secs
    by_both.setdefault(layer, collections.Counter())[kind] += secs
    ops[name] = (secs, layer, kind)
  busy = sum(by_layer.values())
  if not busy:
    raise SystemExit('the profiler recorded no HLO instruction: nothing to attribute.')
  scale = step_s / busy
  print(f'train step {step_s * 1000:.1f} ms (median of {_STEPS.value}); {len(ops)} HLO '
        f'instructions, their thunks summed {busy * 1000:.1f} ms')
  kinds = [k for k, _ in by_kind.most_common()]
  print(f'\n{"layer":46s} {"share":>6s} {"ms":>7s}  ' + '  '.join(f'{k:>28s}' for k in kinds))
  for layer, secs in by_layer.most_common():
    row = '  '.join(f'{by_both[layer][k] * scale * 1000:26.1f}ms' for k in kinds)
    print(f'{layer:46s} {secs / busy:6.1%} {secs * scale * 1000:7.1f}  {row}')
  print(f'{"all":46s} {1:6.1%} {step_s * 1000:7.1f}  ' +
        '  '.join(f'{by_kind[k] * scale * 1000:26.1f}ms' for k in kinds))
  print(f'\nslowest {_TOP.value} instructions:')
  for name, (secs, layer, kind) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:_TOP.value]:
    print(f'  {secs * scale * 1000:7.1f} ms  {name:34s} {kind:28s} {layer}')


if __name__ == '__main__':
  app.run(main)
