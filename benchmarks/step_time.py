"""Train-step and sampler speed for a config, with XLA's FLOP count and peak memory.

  python benchmarks/step_time.py --config=configs/tiny.py:stage=scratch
  python benchmarks/step_time.py --config=configs/tiny.py:stage=t2i --steps=10

Random weights and synthetic batches of the config's shapes: this measures compute,
not the input pipeline. FLOPs are XLA's cost analysis of the compiled step; achieved
GFLOP/s = FLOPs (per device x devices) / median step time. Peak host memory is the process's max RSS.
"""

import os
import resource
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

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/tiny.py:stage=scratch',
                                          'Config file.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed train steps (after one warm-up).')
_SAMPLE_STEPS = flags.DEFINE_integer('sample_steps', 8, 'Denoising steps timed.')
_SAMPLE_BATCH = flags.DEFINE_integer('sample_batch', 4, 'Videos per sampler call.')


def main(argv):
  del argv
  cli.quiet_library_logs()
  config = _CONFIG.value
  spec, state, compiled, batch, rng, compile_s = synthetic.train_step(config)
  n_train, n_frozen = spec.count_params(state.params)
  tc, d = config.train, config.data
  flops = synthetic.flops(compiled)
  mem = compiled.memory_analysis()
  holder = {'state': compiled(state, batch, rng)[0]}

  def one():
    holder['state'], m = compiled(holder['state'], batch, rng)
    return m['loss']
  step_s = synthetic.median_s(one, _STEPS.value)

  gen = Generator.from_config(spec.model, {'params': holder['state'].params},
                                       synthetic.FixedTokenizer(d.max_text_len), config,
                                       num_steps=_SAMPLE_STEPS.value)
  frames = d.num_frames if config.model.temporal else 1  # what the sampler generates
  prompts = ['x'] * _SAMPLE_BATCH.value
  gen(prompts, guidance=config.sample.guidance)  # compile
  sample_compile_s = gen.last_times['compile_s']
  sample_s = synthetic.median_s(lambda: gen(prompts, guidance=config.sample.guidance), 3)
  # XLA counts a scan's body once, so count one denoising step (the guided batch of
  # 2b through the U-Net) on its own.
  b2 = 2 * len(prompts)
  denoise = jax.jit(lambda p, z, t, txt, m: spec.model.apply(p, z, t, txt, m, method='denoise'))
  sample_flops = synthetic.flops(denoise.lower(
      {'params': holder['state'].params}, jnp.zeros((b2, frames, d.size, d.size, 3)),
      jnp.zeros((b2,)), jnp.zeros((b2, d.max_text_len, config.model.text.width)),
      jnp.ones((b2, d.max_text_len), bool)).compile())
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

  unit = 'clips' if config.model.temporal else 'frames'
  print(f'config: stage={tc.stage} batch={tc.batch_size} {unit}, {frames}x{d.size}x{d.size}, '
        f'params {n_train / 1e6:.2f}M trained + {n_frozen / 1e6:.2f}M frozen, '
        f'devices={jax.device_count()} ({jax.devices()[0].platform})')
  print(f'train step: {step_s * 1000:.1f} ms (median of {_STEPS.value}), compile {compile_s:.1f} s')
  n = jax.device_count()  # XLA's cost analysis is of one device's SPMD program
  print(f'train step FLOPs (XLA cost analysis): {flops / 1e9:.2f} GFLOP per device x {n} '
        f'-> {n * flops / step_s / 1e9:.1f} GFLOP/s achieved in all')
  if mem is not None:
    print(f'train step memory per device (XLA): args {mem.argument_size_in_bytes / 2**20:.1f} MiB, '
          f'temps {mem.temp_size_in_bytes / 2**20:.1f} MiB, '
          f'outputs {mem.output_size_in_bytes / 2**20:.1f} MiB')
  per_step = sample_s / _SAMPLE_STEPS.value
  print(f'sampler: {per_step * 1000:.1f} ms per denoising step for {_SAMPLE_BATCH.value} '
        f'videos with CFG (batch {2 * _SAMPLE_BATCH.value} through the U-Net), '
        f'compile {sample_compile_s:.1f} s')
  print(f'sampler FLOPs per denoising step: {sample_flops / 1e9:.2f} GFLOP per device '
        f'-> {n * sample_flops / per_step / 1e9:.1f} GFLOP/s achieved in all')
  print(f'peak host memory (max RSS): {peak_mb:.0f} MiB')


if __name__ == '__main__':
  app.run(main)
