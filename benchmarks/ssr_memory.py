"""Peak memory and time of SSR sampling vs clip length: MultiDiffusion windows vs one pass.

MultiDiffusion runs the denoiser window by window (a lax.scan), so the activations in
flight are those of one window whatever the clip length; only clip-sized buffers (the
noisy video, the fused prediction, the low-res input) grow with it. One pass over the
whole clip grows everything. For each clip length this compiles the SSR sampler both
ways (untrained weights: memory and time do not depend on them) and prints XLA's
memory analysis of the compiled program and the sampling time per step.

  python benchmarks/ssr_memory.py --config=configs/ssr.py --frames=16,32,64
"""

import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

from stunet import config as config_lib
from stunet import multidiffusion
from stunet import sampling
from stunet import sharding
from stunet import train_step
from stunet.text import Tokenizer
from stunet import text as text_lib

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/ssr.py', 'An SSR config.')
_FRAMES = flags.DEFINE_list('frames', ['16', '32', '64'], 'Clip lengths to measure.')
_BATCH = flags.DEFINE_integer('batch', 1, 'Videos per call.')
_STEPS = flags.DEFINE_integer('steps', 2, 'Denoising steps timed (memory does not depend on it).')
_WHOLE = flags.DEFINE_bool('whole', True, 'Also measure one pass over the whole clip.')

MiB = 2 ** 20


def measure(model, params, shape, windows, args):
  sc = _CONFIG.value.sample
  fn = sampling.make_sampler(model, shape, num_steps=_STEPS.value, sampler=sc.sampler,
                             threshold=sc.threshold, windows=windows)
  t0 = time.time()
  compiled = fn.lower(*args).compile()
  compile_s = time.time() - t0
  mem = compiled.memory_analysis()
  jax.block_until_ready(compiled(*args))  # warm
  t0 = time.time()
  jax.block_until_ready(compiled(*args))
  per_step = (time.time() - t0) / _STEPS.value
  peak = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
  return dict(temp=mem.temp_size_in_bytes / MiB, args=mem.argument_size_in_bytes / MiB,
              peak=peak / MiB, per_step=per_step, compile=compile_s)


def main(argv):
  del argv
  config = _CONFIG.value
  text_lib.resolve(config)
  config_lib.validate(config)
  if not config.model.lowres_size:
    raise app.UsageError('--config must be an SSR config (model.lowres_size > 0).')
  spec = train_step.TrainSpec(config, sharding.make_mesh(config.mesh))
  params = {'params': spec.init(jax.random.key(0)).params}
  tok = Tokenizer.from_config(config.data)
  b, size, low = _BATCH.value, config.data.size, config.model.lowres_size
  tokens, mask = tok.encode(['a red square moves left'] * b)
  null_tokens, null_mask = tok.null(b)
  sc = config.sample
  window = sc.window or config.data.num_frames
  print(f'SSR {low}->{size} px, batch {b}, window {window}, overlap {sc.overlap}, '
        f'{jax.devices()[0].platform}; peak = XLA temporaries + arguments + outputs')
  print(f'{"frames":>6s} {"mode":>15s} {"windows":>7s} {"temp MiB":>9s} {"args MiB":>9s} '
        f'{"peak MiB":>9s} {"s/step":>7s} {"compile s":>9s}')
  for frames in map(int, _FRAMES.value):
    lowres = jnp.zeros((b, frames, low, low, 3))
    args = (params, tokens, mask, null_tokens, null_mask, jax.random.key(0),
            jnp.float32(sc.guidance), None, lowres, jnp.float32(sc.lowres_aug))
    shape = (b, frames, size, size, 3)
    modes = [('multidiffusion', multidiffusion.Windows(frames, window, sc.overlap,
                                                       batch=sc.window_batch))]
    if _WHOLE.value:
      modes.append(('whole clip', None))
    for name, windows in modes:
      r = measure(spec.model, params, shape, windows, args)
      n = len(windows.starts) if windows else 1
      print(f'{frames:6d} {name:>15s} {n:7d} {r["temp"]:9.1f} {r["args"]:9.1f} '
            f'{r["peak"]:9.1f} {r["per_step"]:7.2f} {r["compile"]:9.1f}', flush=True)


if __name__ == '__main__':
  app.run(main)
