"""Per-chip memory, FLOPs and collectives of the paper-scale train step, on fake CPU devices.

  python benchmarks/paper_scale.py                                # the configured step
  python benchmarks/paper_scale.py --mesh='1,-1,1,8;-1,1,1,8'     # two meshes
  python benchmarks/paper_scale.py --devices=256 --set=train.batch_size=256
  python benchmarks/paper_scale.py --config=configs/paper.py:model=ssr   # on 256-px crops
  python benchmarks/paper_scale.py --batch=8                      # one micro-batch
  python benchmarks/paper_scale.py --batch=8 --sampler --remat=none   # one denoising step
  python benchmarks/paper_scale.py --devices=8 --set=data.num_frames=16 --set=data.size=64 --batch=8

By default it compiles the step as configured (configs/paper.py: 64 clips in 8
micro-batches of gradient accumulation, on the config's mesh) and says so; --batch sets
the global batch of one step without accumulation (one micro-batch), --set any config
field. Besides the per-compile table it prints one row per optimizer step: the bytes
each chip sends by collective and by link (inside a node of --node_size consecutive
devices, or across nodes), with every collective counted once per run of its loop (the
accumulation scan's trip count, ``hlo.py``), and the step time this implies on H100s and
TPU v5p chips (``estimate``: assumed MFU and link rates, not a measurement).

The train state is abstract (``Setup.abstract_state``: ShapeDtypeStructs carrying the
shardings train.py would use) and so is the batch: nothing is allocated, the step is
only lowered and compiled for ``--devices`` fake CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count``). For each mesh shape and remat
policy it prints
- XLA's memory analysis of the compiled per-device program: argument, output, temp,
  alias and generated-code sizes, and a peak estimate = argument + output + temp -
  alias (the donated state is both argument and output; aliased bytes count once);
- the bytes per device of the parameters, EMA and optimizer state, from the shardings
  of the abstract state (per leaf: bytes of ``sharding.shard_shape(shape)``);
- XLA's FLOP count of the partitioned (per-device) program (its loops' bodies counted
  once: x grad_accum per optimizer step), and x devices for the step;
- lower and compile times, the compiling process's peak host memory;
- whether the peak estimate fits a 16 GiB or a 32 GiB chip.
Each (mesh, remat) pair compiles in a fresh subprocess, so one failure or one big
compile does not affect the others.

XLA:CPU's default scheduler is concurrency-optimized: it runs independent work early
and keeps its results alive, which on this train step defeats rematerialisation (the
temp size hardly changes between remat=full and remat=none). By default this script
asks for XLA:CPU's memory-optimized scheduler (``--cpu_scheduler=memory``), closer to
the memory-aware scheduling of the TPU and GPU compilers; ``--cpu_scheduler=default``
shows XLA:CPU's own choice.

CAVEAT: these are XLA:CPU figures. A TPU or GPU compile fuses, schedules and lays out
differently (and XLA:CPU may upcast bfloat16 convolutions to float32), so treat the
memory and FLOP figures as estimates, not as what a TPU/GPU will report.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAVEAT = ('XLA:CPU figures: a TPU/GPU compile fuses and lays out differently (and CPU may '
          'upcast bfloat16 convolutions to float32): treat them as estimates.')
GiB = 2 ** 30


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--devices', type=int, default=64, help='fake CPU devices')
  p.add_argument('--config', default='configs/paper.py:model=base',
                 help='config file[:variant]')
  p.add_argument('--mesh', default='',
                 help="';'-separated mesh shapes (data,fsdp,tensor,context), -1 fills, "
                      "left-out trailing axes are 1 ('': the config's config.mesh.shape)")
  p.add_argument('--remat', default='full', help="','-separated remat policies")
  p.add_argument('--batch', type=int, default=0, help='global batch (0 = the config\'s)')
  p.add_argument('--set', action='append', default=[],
                 help='config override key=value (python literal), e.g. data.num_frames=16')
  p.add_argument('--timeout', type=float, default=0,
                 help='seconds per (mesh, remat) compile subprocess (0 = none)')
  p.add_argument('--cpu_scheduler', default='memory', choices=('memory', 'default'),
                 help="XLA:CPU's instruction scheduler: 'memory' (memory-optimized, "
                      "closer to the accelerators' memory-aware scheduling) or 'default' "
                      "(XLA:CPU's concurrency-optimized one, which keeps far more alive)")
  p.add_argument('--node_size', type=int, default=8,
                 help='devices per node (host): collectives within blocks of this many '
                      'consecutive devices of the mesh count as inside a node (NVLink, '
                      'ICI), the others as across nodes (InfiniBand)')
  p.add_argument('--json_out', default='', help='also write the rows as JSON here')
  p.add_argument('--table_from', default='',
                 help="','-separated JSON files of earlier runs (--json_out): print "
                      "their rows as one table and exit (no compile)")
  p.add_argument('--sampler', action='store_true',
                 help='compile the sampler (one jitted denoising loop, DDIM with '
                      'guidance, the EMA weights in their training shardings) instead '
                      'of the train step')
  p.add_argument('--child', default='', help=argparse.SUPPRESS)  # 'mesh|remat'
  return p.parse_args(argv)


ARGS = parse_args()
# Before jax is imported: the fake devices.
_flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
          if not f.startswith(('--xla_force_host_platform_device_count',
                               '--xla_cpu_scheduler_type'))]
_flags.append(f'--xla_force_host_platform_device_count={ARGS.devices}')
if ARGS.cpu_scheduler == 'memory':
  _flags.append('--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED')
os.environ['XLA_FLAGS'] = ' '.join(_flags)
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, ROOT)

import ast  # pylint: disable=g-import-not-at-top,g-bad-import-order
import importlib.util  # pylint: disable=g-import-not-at-top

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from flax import traverse_util  # pylint: disable=g-import-not-at-top

import hlo  # pylint: disable=g-import-not-at-top  # benchmarks/hlo.py, beside this script
from stunet import config as config_lib  # pylint: disable=g-import-not-at-top
from stunet import sampling  # pylint: disable=g-import-not-at-top
from stunet import sharding  # pylint: disable=g-import-not-at-top
from stunet import text as text_lib  # pylint: disable=g-import-not-at-top
from stunet import train_step  # pylint: disable=g-import-not-at-top


def load_config(spec: str):
  path, _, arg = spec.partition(':')
  path = path if os.path.isabs(path) else os.path.join(ROOT, path)
  mod_spec = importlib.util.spec_from_file_location('bench_config', path)
  mod = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(mod)
  return mod.get_config(arg) if arg else mod.get_config()


def build_config(mesh_shape, remat):
  config = load_config(ARGS.config)
  with config.unlocked():
    for item in ARGS.set:
      key, _, value = item.partition('=')
      *parents, leaf = key.split('.')
      node = config
      for k in parents:
        node = node[k]
      try:
        value = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        pass  # a plain string
      node[leaf] = value
    config.mesh.shape = tuple(mesh_shape)
    config.model.remat = remat
    if ARGS.batch:
      config.train.batch_size, config.train.grad_accum = ARGS.batch, 1
    needs_t2i = config.train.freeze_spatial or config.train.stage == 'stunet'
    if needs_t2i and not config.train.init_from:
      config.train.init_from = '(benchmark: abstract weights)'
    if ARGS.sampler and config.data.precomputed_text:
      # Sampling encodes the prompts: the sampler runs the T5 encoder either way.
      config.data.precomputed_text = False
  if not os.path.isdir(config.model.text.pretrained or ROOT):
    # A placeholder T5 checkpoint (configs/paper.py): the config already states its
    # architecture, which is all resolve() would read from it; weights stay abstract.
    config_lib.validate(config)
    return config
  text_lib.resolve(config)
  config_lib.validate(config)
  return config


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis() or {}
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return cost


def measure(mesh_str: str, remat: str) -> dict:
  """Lowers and compiles one (mesh, remat) configuration; returns the row."""
  shape = tuple(int(x) for x in mesh_str.split(','))
  config = build_config(shape, remat)
  mesh = sharding.make_mesh(config.mesh)
  row = dict(config=ARGS.config, set=list(ARGS.set), devices=jax.device_count(),
             cpu_scheduler=ARGS.cpu_scheduler,
             mesh='x'.join(map(str, mesh.devices.shape)), remat=remat)
  t0 = time.perf_counter()
  spec = train_step.TrainSpec(config, mesh)
  state = spec.abstract_state
  row['state_s'] = time.perf_counter() - t0

  params = traverse_util.flatten_dict(state.params, sep='/')
  n = lambda d: int(sum(np.prod(v.shape) for v in d.values()))
  row['unet_params'] = n({k: v for k, v in params.items() if k.startswith('unet/')})
  row['text_params'] = n({k: v for k, v in params.items() if k.startswith('text_encoder/')})
  row['trained_params'] = n(spec.split(state.params)[0])
  for name in ('params', 'ema_params', 'opt_state'):
    row[f'{name}_bytes'], row[f'{name}_bytes_dev'] = sharding.shard_bytes(getattr(state, name))
  row['state_bytes'], row['state_bytes_dev'] = sharding.shard_bytes(state)

  d, tc = config.data, config.train
  b, length = tc.batch_size, d.max_text_len
  frames = d.num_frames
  row.update(batch=b, frames=frames, size=d.size, grad_accum=tc.get('grad_accum', 1),
             regather=bool(tc.regather_params) if tc.grad_accum > 1 else '-')
  bs = sharding.batch_sharding(mesh)
  size = d.crop_size if d.crop_size and not ARGS.sampler else d.size  # SSR crops
  row['train_size'] = size
  batch = {
      'video': jax.ShapeDtypeStruct((b, frames, size, size, 3), jnp.float32, sharding=bs),
      'tokens': jax.ShapeDtypeStruct((b, length), jnp.int32, sharding=bs),
      'mask': jax.ShapeDtypeStruct((b, length), jnp.bool_, sharding=bs)}
  null_tokens = np.zeros((length,), np.int32)
  null_tokens[0] = 1  # EOS: the empty caption
  null_text, null_mask = null_tokens, null_tokens > 0
  row['text'] = 'precomputed' if d.precomputed_text else 'encoder'
  if d.precomputed_text:  # stored T5 embeddings instead of tokens, as records yield them
    width = config.model.text.width
    batch['text'] = jax.ShapeDtypeStruct((b, length, width), jnp.float32, sharding=bs)
    del batch['tokens']
    null_text = np.zeros((length, width), np.float32)
  rng = jax.random.key(0)
  if ARGS.sampler:  # one denoising step: the loop's body, compiled once for any count
    row['what'] = 'sampler'
    fn = sampling.make_sampler(spec.model, (b, frames, d.size, d.size, 3), num_steps=1,
                               sampler='ddim', threshold=0., mesh=mesh,
                               rules=sharding.rules(config.mesh))
    args = [{'params': state.params}, batch['tokens'], batch['mask'], batch['tokens'],
            batch['mask'], rng, jnp.float32(8.)]
    if config.model.lowres_size:  # the SSR's low-res clip
      low = config.model.lowres_size
      args += [None, jax.ShapeDtypeStruct((b, frames, low, low, 3), jnp.float32,
                                          sharding=bs), jnp.float32(0.)]
    step_args = tuple(args)
  else:
    row['what'] = 'train step'
    fn = train_step.make_train_step(spec, null_text, null_mask)
    step_args = (state, batch, rng)

  t0 = time.perf_counter()
  lowered = fn.lower(*step_args)
  row['lower_s'] = time.perf_counter() - t0
  t0 = time.perf_counter()
  compiled = lowered.compile()
  row['compile_s'] = time.perf_counter() - t0

  mem = compiled.memory_analysis()
  for k in ('argument', 'output', 'temp', 'alias', 'generated_code'):
    row[f'{k}_bytes'] = int(getattr(mem, f'{k}_size_in_bytes', 0) or 0) if mem else None
  if mem:
    row['peak_bytes'] = (row['argument_bytes'] + row['output_bytes'] + row['temp_bytes']
                         - row['alias_bytes'])
  cost = _cost(compiled)
  # XLA's cost analysis counts a loop's body once: the configured step runs the
  # accumulation loop grad_accum times, and everything outside it (the optimizer
  # update, <0.1% of the FLOPs) once; so per optimizer step ~ x grad_accum.
  row['flops_dev'] = float(cost.get('flops', 0.))
  row['flops_opt_step_dev'] = row['flops_dev'] * row['grad_accum']
  row['flops_step'] = row['flops_opt_step_dev'] * row['devices']
  row['bytes_accessed_dev'] = float(cost.get('bytes accessed', 0.))
  row['host_rss_bytes'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  # Bytes each device moves per optimizer step, by collective: result bytes (what lands
  # in its buffers) and the bytes it sends by link (inside a node of --node_size
  # consecutive devices, or across nodes), loop trip counts applied.
  hlo_text = compiled.as_text()
  row['collectives'] = hlo.collective_bytes(hlo_text)
  row['collective_bytes_dev'] = sum(b for _, b in row['collectives'].values())
  row['node_size'] = ARGS.node_size
  row['links'] = {f'{k}|{where}': v for (k, where), v in
                  hlo.collective_links(hlo_text, ARGS.node_size).items()}
  row['unbounded_loops'] = len(hlo.unbounded_loops(hlo_text))
  # All-gathers of anything but a parameter (by shape): activations gathered whole.
  param_shapes = {tuple(v.shape) for v in jax.tree.leaves(state.params)}
  gathers = [(nbytes * times, str(shapes), op) for kind, shapes, nbytes, times, op in
             hlo.hlo_collectives(hlo_text, with_ops=True)
             if kind == 'all-gather' and any(s not in param_shapes for _, s in shapes)]
  row['activation_gather_bytes_dev'] = sum(g[0] for g in gathers)
  row['activation_gathers_top'] = sorted(gathers, reverse=True)[:8]
  return row


def run_child(mesh_str, remat) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), f'--devices={ARGS.devices}',
         f'--config={ARGS.config}', f'--batch={ARGS.batch}',
         f'--cpu_scheduler={ARGS.cpu_scheduler}', f'--node_size={ARGS.node_size}',
         f'--child={mesh_str}|{remat}']
  cmd += [f'--set={s}' for s in ARGS.set] + (['--sampler'] if ARGS.sampler else [])
  t0 = time.perf_counter()
  try:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          timeout=ARGS.timeout or None, check=False)
  except subprocess.TimeoutExpired:
    return dict(mesh=mesh_str, remat=remat, error=f'timed out after {ARGS.timeout:.0f}s')
  wall = time.perf_counter() - t0
  for line in proc.stdout.splitlines():
    if line.startswith('RESULT '):
      row = json.loads(line[len('RESULT '):])
      row['wall_s'] = wall
      return row
  tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
  return dict(mesh=mesh_str, remat=remat, wall_s=wall,
              error=f'rc={proc.returncode}: ' + ' | '.join(tail))


def fits(row, gib):
  return 'yes' if row['peak_bytes'] <= gib * GiB else 'no'


def _comm(row) -> str:
  c = row.get('collectives')
  if not c:
    return ''
  kinds = ('all-to-all', 'all-gather', 'all-reduce', 'reduce-scatter', 'collective-permute')
  return (f"{row['collective_bytes_dev'] / GiB:.2f} ("
          + ', '.join(f'{c[k][1] / GiB:.2f}' for k in kinds) + ')'
          + (f"; activations gathered {row['activation_gather_bytes_dev'] / GiB:.2f}"
             if 'activation_gather_bytes_dev' in row else ''))


# Estimated step time: (chip, dense bf16 FLOP/s, bytes/s per chip inside a node, across
# nodes). H100 SXM: 989 TFLOP/s, NVLink 4 at 450 GB/s per direction inside an 8-GPU
# node, one 400 Gb/s InfiniBand NIC (50 GB/s) per GPU across nodes. TPU v5p: 459
# TFLOP/s; a 64- or 256-chip slice is all ICI (4,800 Gb/s per chip over 6 links):
# ~200 GB/s assumed for a collective (the two links of one torus ring).
CHIPS = (('H100', 989e12, 450e9, 50e9), ('TPU v5p', 459e12, 200e9, 200e9))
MFU = 0.4  # assumed for the compute time


def estimate(row, chip) -> tuple[float, float, float]:
  """(compute s, communication s, serial s) per optimizer step on one chip type: the
  FLOPs at MFU of the chip's peak; the bytes each chip sends inside a node and across
  nodes at those links' rates (links the parser could not read count as across).
  Overlapped, the step takes max(compute, communication); serial, their sum."""
  _, peak, node_bw, cross_bw = chip
  compute = row['flops_opt_step_dev'] / (peak * MFU)
  links = row.get('links', {})
  node = sum(v for k, v in links.items() if k.endswith('|node'))
  comm = node / node_bw + (sum(links.values()) - node) / cross_bw
  return compute, comm, compute + comm


def step_table(rows) -> str:
  """Per optimizer step: peak memory, FLOPs, the bytes each chip sends by collective
  and by link, the estimated step time."""
  head = ('| config | devices | mesh (d,f,t,c) | text | regather | clips (micro-batches) | '
          'peak GiB/chip | '
          'TFLOP/chip | GiB sent/chip: all-to-all, all-gather, all-reduce, other | '
          'inside node / across | ' + ' | '.join(f'{c[0]} s: compute, comm, overlapped-serial'
                                                 for c in CHIPS) + ' |')
  lines = [head, '|' + '---|' * (head.count('|') - 1)]
  for r in rows:
    if 'error' in r or 'links' not in r:
      continue
    links = r['links']
    kind = lambda k: sum(v for key, v in links.items() if key.startswith(k + '|')) / GiB
    other = (sum(links.values()) / GiB - kind('all-to-all') - kind('all-gather')
             - kind('all-reduce'))
    node = sum(v for k, v in links.items() if k.endswith('|node')) / GiB
    times = []
    for chip in CHIPS:
      compute, comm, serial = estimate(r, chip)
      times.append(f'{compute:.2f}, {comm:.2f}, {max(compute, comm):.2f}-{serial:.2f}')
    name = r['config'].split(':', 1)[-1] + ''.join(f", {s}" for s in r.get('set', []))
    lines.append(
        f"| {name} | {r['devices']} | {r['mesh'].replace('x', ',')} | {r.get('text', '?')} | "
        f"{r.get('regather', '?')} | {r['batch']} ({r['grad_accum']}) | "
        f"{r['peak_bytes'] / GiB:.2f} | {r['flops_opt_step_dev'] / 1e12:.1f} | "
        f"{kind('all-to-all'):.1f}, {kind('all-gather'):.1f}, {kind('all-reduce'):.1f}, "
        f"{other:.2f} | {node:.1f} / {sum(links.values()) / GiB - node:.1f} | "
        + ' | '.join(times) + ' |')
  return '\n'.join(lines)


def table(rows) -> str:
  g = lambda x: f'{x / GiB:.2f}'
  head = ('| config | sched | devices | mesh (d,f,t,c) | remat | batch | clips/dev | '
          'params+EMA+opt /dev GiB | args GiB | out GiB | temp GiB | alias GiB | code MiB | '
          'peak est. GiB | fits 16 GiB | fits 32 GiB | TFLOP/dev | PFLOP/step | lower s | '
          'compile s | host RSS GiB | collectives GiB/dev (a2a, ag, ar, rs, cp) |')
  lines = [head, '|' + '---|' * (head.count('|') - 1)]
  for r in rows:
    if 'error' in r:
      lines.append(f"| {r.get('config', '')} | {ARGS.cpu_scheduler} | {ARGS.devices} | "
                   f"{r['mesh']} | {r['remat']} | | | " + 'ERROR: ' +
                   r['error'].replace('|', '/')[:400] + ' |')
      continue
    per_dev = r['batch'] / r['devices']  # tensor devices share their group's clips
    name = r['config'].split(':', 1)[-1] + ''.join(f", {s}" for s in r.get('set', []))
    name += ' (sampler)' if r.get('what') == 'sampler' else ''
    lines.append(
        f"| {name} | {r.get('cpu_scheduler', '?')} | {r['devices']} | "
        f"{r['mesh'].replace('x', ',')} | {r['remat']} | {r['batch']} | {per_dev:g} | "
        f"{g(r['params_bytes_dev'])}+{g(r['ema_params_bytes_dev'])}+"
        f"{g(r['opt_state_bytes_dev'])} | {g(r['argument_bytes'])} | {g(r['output_bytes'])} | "
        f"{g(r['temp_bytes'])} | {g(r['alias_bytes'])} | "
        f"{r['generated_code_bytes'] / 2**20:.1f} | {g(r['peak_bytes'])} | "
        f"{fits(r, 16)} | {fits(r, 32)} | {r['flops_dev'] / 1e12:.2f} | "
        f"{r['flops_step'] / 1e15:.2f} | {r['lower_s']:.0f} | {r['compile_s']:.0f} | "
        f"{r['host_rss_bytes'] / GiB:.1f} | {_comm(r)} |")
  return '\n'.join(lines)


def main():
  if ARGS.table_from:
    rows = []
    for path in ARGS.table_from.split(','):
      with open(path) as f:
        rows += json.load(f)
    print(table(rows))
    print()
    print(step_table(rows))
    return
  if ARGS.child:
    mesh_str, remat = ARGS.child.split('|')
    print('RESULT ' + json.dumps(measure(mesh_str, remat)), flush=True)
    return

  meshes = ([m.strip() for m in ARGS.mesh.split(';') if m.strip()] or
            [','.join(map(str, load_config(ARGS.config).mesh.shape))])
  remats = [r.strip() for r in ARGS.remat.split(',') if r.strip()]
  print(f'config {ARGS.config} {" ".join("--set=" + s for s in ARGS.set)} on '
        f'{ARGS.devices} fake CPU devices; meshes {meshes}, remat {remats}; XLA:CPU '
        f'scheduler: {ARGS.cpu_scheduler}', flush=True)
  print(f'CAVEAT: {CAVEAT}', flush=True)
  if ARGS.sampler:
    print('compiling: one denoising step of the sampler', flush=True)
  elif ARGS.batch:
    print(f'compiling: one train step of --batch={ARGS.batch} clips without gradient '
          f'accumulation (one micro-batch, not the configured step)', flush=True)
  else:
    tc = load_config(ARGS.config).train
    print(f'compiling: the configured train step ({tc.batch_size} clips in '
          f'{tc.grad_accum} micro-batches of {tc.batch_size // tc.grad_accum})', flush=True)
  rows, t_all = [], time.perf_counter()
  for mesh_str in meshes:
    for remat in remats:
      row = run_child(mesh_str, remat)
      rows.append(row)
      if 'error' in row:
        print(f'mesh {mesh_str} remat {remat}: FAILED ({row.get("wall_s", 0):.0f}s): '
              f'{row["error"]}', flush=True)
      else:
        print(f"mesh {row['mesh']} remat {remat}: peak est. {row['peak_bytes'] / GiB:.2f} "
              f"GiB/dev (args {row['argument_bytes'] / GiB:.2f}, out "
              f"{row['output_bytes'] / GiB:.2f}, temp {row['temp_bytes'] / GiB:.2f}, alias "
              f"{row['alias_bytes'] / GiB:.2f}), {row['flops_dev'] / 1e12:.2f} TFLOP/dev, "
              f"lower {row['lower_s']:.0f}s compile {row['compile_s']:.0f}s, wall "
              f"{row['wall_s']:.0f}s, host RSS {row['host_rss_bytes'] / GiB:.1f} GiB",
              flush=True)
  ok = [r for r in rows if 'error' not in r]
  print()
  if ok:
    r = ok[0]
    print(f"{ARGS.config}: {r['frames']} frames x {r['size']}x{r['size']}, global batch "
          f"{r['batch']}, grad_accum {r['grad_accum']}; U-Net {r['unet_params'] / 1e6:,.1f}M + "
          f"text encoder {r['text_params'] / 1e6:,.1f}M parameters, "
          f"{r['trained_params'] / 1e6:,.1f}M trained; state (params+EMA+opt) "
          f"{r['state_bytes'] / GiB:.1f} GiB in all; {r['devices']} devices")
  print(table(rows))
  print('peak est. = argument + output + temp - alias (XLA memory analysis, per device); '
        'fits = peak est. <= 16 / 32 GiB, before any runtime overhead. clips/dev = global '
        'batch / devices (the batch is split over data x fsdp; the tensor devices of a group '
        'share its clips). XLA:CPU reports no generated-code size (0).')
  if not ARGS.sampler:
    print()
    print('Per optimizer step (collective loop trip counts applied; FLOPs = XLA\'s count x '
          'grad_accum), and the step time it implies:')
    print(step_table(rows))
    for r in ok:
      if r.get('unbounded_loops'):
        print(f"mesh {r['mesh']}: {r['unbounded_loops']} loop(s) without a trip count XLA "
              f"states: their collectives are counted once, an undercount.")
    print(f'GiB sent per chip: ring algorithms (an all-gather or all-to-all sends (n-1)/n '
          f'of its result, an all-reduce 2(n-1)/n); inside node = every device of the '
          f'group within one block of {ARGS.node_size} consecutive mesh devices. Step time: '
          f'compute = FLOPs / ({MFU:.0%} of the chip\'s dense bf16 peak), comm = bytes / '
          f'link rate ({", ".join(f"{c[0]}: {c[2] / 1e9:.0f} GB/s inside a node, "f"{c[3] / 1e9:.0f} across" for c in CHIPS)}); '
          f'overlapped = max(compute, comm), serial = their sum. Estimates, not measurements.')
  print(f'XLA_FLAGS={os.environ["XLA_FLAGS"]}')
  print(f'CAVEAT: {CAVEAT}')
  print(f'total wall time {time.perf_counter() - t_all:.0f}s')
  if ARGS.json_out:
    with open(ARGS.json_out, 'w') as f:
      json.dump(rows, f, indent=1)


if __name__ == '__main__':
  main()
