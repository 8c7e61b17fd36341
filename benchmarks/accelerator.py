"""The train step and the sampler on one accelerator: step time, TFLOP/s, MFU, memory.

  python benchmarks/accelerator.py         # on one GPU/TPU: the paper's base model
  python benchmarks/accelerator.py --config=configs/tiny.py:stage=stunet --shapes=2x16 \
      --steps=2 --sample_steps=2           # anywhere (CPU too): the tiny model

Prepared to run in a few minutes of borrowed accelerator time. By default it takes
configs/paper.py:model=base,text=encoder (1.23B-parameter U-Net, T5-XXL's shape as the
frozen text encoder, run in the step as the sampler runs it, 80 frames x 128x128,
bfloat16 compute, remat full, only the temporal layers train) with random weights and
a synthetic batch, and tries the shapes of --shapes in
order (clips x frames), keeping the first whose compiled step fits the chip's memory
(XLA's memory analysis against the device's limit; a compile that runs out of memory
moves on to the next shape). For that shape it prints
- the train step's compile time and median step time, its FLOPs (XLA's cost analysis
  of the compiled step), the achieved TFLOP/s, and MFU against the chip's peak dense
  bfloat16 rate (a table of known chips, or --peak_tflops);
- the sampler (the whole jitted denoising loop, guidance on: the U-Net sees 2x the
  clips) compile time and time per denoising step, its FLOPs per step and TFLOP/s;
- XLA's memory analysis of the train step and the device's peak bytes in use;
- how attention ran: on a GPU, layers.attention asks for cuDNN's fused attention for
  bfloat16 / float16 heads; the count of cuDNN attention calls in the compiled step
  says whether it got it.
The test suite runs it on CPU with its smallest config (tests/test_benchmarks.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
from absl import app
from absl import flags
from ml_collections import config_flags

import synthetic  # benchmarks/synthetic.py, beside this script
from stunet import cli
from stunet.generator import Generator

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/paper.py:model=base,text=encoder',
                                          'Config file (its model, dtype and remat).')
_SHAPES = flags.DEFINE_list('shapes', ['1x80', '1x40', '1x16'],
                            'clips x frames to try, largest first; the first that fits '
                            'the chip is measured.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed train steps (after one warm-up).')
_SAMPLE_STEPS = flags.DEFINE_integer('sample_steps', 4, 'Denoising steps timed.')
_PEAK = flags.DEFINE_float('peak_tflops', 0., 'The chip\'s dense bfloat16 peak in '
                           'TFLOP/s for MFU (0: from the table of known chips).')

# Dense bfloat16 peaks (vendor datasheets, TFLOP/s, without sparsity), by device_kind.
PEAK_TFLOPS = {'H200': 989., 'H100': 989., 'A100': 312., 'L4': 121., 'TPU v5p': 459.,
               'TPU v5 lite': 197., 'TPU v5e': 197., 'TPU v4': 275., 'TPU v6 lite': 918.}


def peak_tflops(device) -> float:
  if _PEAK.value:
    return _PEAK.value
  kind = getattr(device, 'device_kind', '')
  return next((v for k, v in PEAK_TFLOPS.items() if k.lower() in kind.lower()), 0.)


def configure(config, clips, frames):
  with config.unlocked():
    config.mesh.shape = (1, -1, 1, 1)          # one chip: no context or FSDP split
    config.train.batch_size, config.train.grad_accum = clips, 1
    config.data.num_frames = frames
  return config


def compile_fitting(base, shapes, device):
  """The first of ``shapes`` whose train step compiles and fits: (config, step)."""
  limit = (device.memory_stats() or {}).get('bytes_limit', 0)
  for shape in shapes:
    clips, frames = (int(v) for v in shape.split('x'))
    config = configure(base.copy_and_resolve_references(), clips, frames)
    try:
      step = synthetic.train_step(config)
    except Exception as e:  # pylint: disable=broad-except
      if 'RESOURCE_EXHAUSTED' not in str(e) and 'out of memory' not in str(e).lower():
        raise
      print(f'{shape}: does not compile within the chip\'s memory; next shape')
      continue
    mem = step.compiled.memory_analysis()
    need = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes) if mem is not None else 0
    if limit and need > limit:
      print(f'{shape}: needs {need / 2**30:.1f} GiB of {limit / 2**30:.1f} GiB; next shape')
      continue
    return config, step
  raise SystemExit(f'none of --shapes={",".join(shapes)} fits this chip: give smaller ones.')


def main(argv):
  del argv
  cli.quiet_library_logs()
  steps, sample_steps = _STEPS.value, _SAMPLE_STEPS.value
  device = jax.devices()[0]
  print(f'device: {device.device_kind} ({device.platform}), {jax.device_count()} '
        f'device(s), jax {jax.__version__}')
  config, step = compile_fitting(_CONFIG.value, _SHAPES.value, device)
  d, m = config.data, config.model
  n_train, n_frozen = step.spec.count_params(step.state.params)
  print(f'model: {n_train / 1e6:.1f}M trained + {n_frozen / 1e6:.1f}M frozen parameters, '
        f'{m.dtype} compute, remat {m.remat}; shape {config.train.batch_size} clips x '
        f'{d.num_frames} frames x {d.size}x{d.size}')
  hlo_text = step.compiled.as_text()
  fused = hlo_text.count('__cudnn$fmha')
  print(f'attention: {"cuDNN fused attention, " + str(fused) + " calls" if fused else "XLA"}'
        f' in the compiled step')

  flops = synthetic.flops(step.compiled)
  holder = {'state': step.compiled(step.state, step.batch, step.rng)[0]}

  def one():
    holder['state'], metrics = step.compiled(holder['state'], step.batch, step.rng)
    return metrics['loss']
  step_s = synthetic.median_s(one, steps)
  peak = peak_tflops(device)
  achieved = flops / step_s / 1e12
  mfu = f', MFU {100 * achieved / peak:.1f}% of {peak:.0f} TFLOP/s' if peak else ''
  print(f'train step: {step_s * 1e3:.1f} ms (median of {steps}), compile '
        f'{step.compile_s:.1f} s, {flops / 1e12:.2f} TFLOP -> {achieved:.2f} TFLOP/s{mfu}')
  mem = step.compiled.memory_analysis()
  if mem is not None:
    print(f'train step memory (XLA): args {mem.argument_size_in_bytes / 2**30:.2f} GiB, '
          f'temps {mem.temp_size_in_bytes / 2**30:.2f} GiB, outputs '
          f'{mem.output_size_in_bytes / 2**30:.2f} GiB, aliased '
          f'{mem.alias_size_in_bytes / 2**30:.2f} GiB')

  gen = Generator.from_config(step.spec.model, {'params': holder['state'].params},
                              synthetic.FixedTokenizer(d.max_text_len), config,
                              num_steps=sample_steps)
  prompts = ['x'] * config.train.batch_size
  gen(prompts, guidance=config.sample.guidance)  # compiles
  sample_compile_s = gen.last_times['compile_s']
  sample_s = synthetic.median_s(lambda: gen(prompts, guidance=config.sample.guidance), 2)
  per_step = sample_s / sample_steps
  b2 = 2 * len(prompts)  # XLA counts the loop's body once: count one step on its own
  denoise = jax.jit(lambda p, z, t, txt, mk: step.spec.model.apply(p, z, t, txt, mk,
                                                                   method='denoise'))
  sample_flops = synthetic.flops(denoise.lower(
      {'params': holder['state'].params}, jnp.zeros((b2, d.num_frames, d.size, d.size, 3)),
      jnp.zeros((b2,)), jnp.zeros((b2, d.max_text_len, m.text.width)),
      jnp.ones((b2, d.max_text_len), bool)).compile())
  s_achieved = sample_flops / per_step / 1e12
  s_mfu = f', MFU {100 * s_achieved / peak:.1f}%' if peak else ''
  print(f'sampler: {per_step * 1e3:.1f} ms per denoising step ({len(prompts)} clips with '
        f'guidance: {b2} through the U-Net), compile {sample_compile_s:.1f} s, '
        f'{sample_flops / 1e12:.2f} TFLOP per step -> {s_achieved:.2f} TFLOP/s{s_mfu}')
  stats = device.memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    print(f'device memory: peak {stats["peak_bytes_in_use"] / 2**30:.2f} GiB in use of '
          f'{stats.get("bytes_limit", 0) / 2**30:.1f} GiB')


if __name__ == '__main__':
  app.run(main)
