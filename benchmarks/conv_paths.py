"""One 3x3 convolution, forward and both gradients, through each of XLA:CPU's paths.

  python benchmarks/conv_paths.py                 # the project's shapes, batch 64
  python benchmarks/conv_paths.py --rounds=5

XLA:CPU runs a convolution through YNNPACK (its default for this jaxlib) or through
Eigen (with YNNPACK's convolutions switched off,
--xla_cpu_experimental_ynn_fusion_type=-individual_convolution, which the project sets
in stunet/__init__.py). Each path runs in a process of its own (XLA reads its flags
once), in turns, and the script prints GFLOP/s of the forward pass, the input gradient
and the weight gradient for the shapes of the tiny STUNet's levels (4 clips x 16
frames = batch 64; channels in = out), and the medians over the rounds.
"""

import json
import os
import subprocess
import sys

import numpy as np
from absl import app
from absl import flags

_ROUNDS = flags.DEFINE_integer('rounds', 3, 'Turns of each path.')
_BATCH = flags.DEFINE_integer('batch', 64, 'Images per convolution (clips x frames).')

SHAPES = ((32, 16), (32, 32), (16, 32), (16, 64), (8, 64), (8, 128))  # (size, channels)
PATHS = {'ynnpack': '--xla_cpu_experimental_ynn_fusion_type=',
         'eigen': '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'}
_CHILD = '''
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
batch, shapes = int(sys.argv[1]), json.loads(sys.argv[2])
conv = lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
def median_s(fn, *args, n=7):
  fn = jax.jit(fn).lower(*args).compile()
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(n):
    t0 = time.perf_counter(); jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))
out = []
for size, c in shapes:
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch, size, size, c)), jnp.float32)
  w = jnp.asarray(0.1 * rng.standard_normal((3, 3, c, c)), jnp.float32)
  dy = jnp.asarray(rng.standard_normal((batch, size, size, c)), jnp.float32)
  gflop = 2 * batch * size * size * 9 * c * c / 1e9
  vjp = lambda x, w, dy: jax.vjp(conv, x, w)[1](dy)
  out.append(dict(forward=gflop / median_s(conv, x, w),
                  input_grad=gflop / median_s(lambda x, w, dy: vjp(x, w, dy)[0], x, w, dy),
                  weight_grad=gflop / median_s(lambda x, w, dy: vjp(x, w, dy)[1], x, w, dy)))
print(json.dumps(out))
'''


def main(argv):
  del argv
  results = {name: [] for name in PATHS}
  for _ in range(_ROUNDS.value):
    for name, flag in PATHS.items():
      env = dict(os.environ, XLA_FLAGS=flag, TF_CPP_MIN_LOG_LEVEL='2')
      run = subprocess.run([sys.executable, '-c', _CHILD, str(_BATCH.value),
                            json.dumps(SHAPES)], env=env, capture_output=True, text=True,
                           check=True)
      results[name].append(json.loads(run.stdout.strip().splitlines()[-1]))
  print(f'3x3 convolution, batch {_BATCH.value}, channels in = out; GFLOP/s, median of '
        f'{_ROUNDS.value} rounds (each a median of 7 calls)')
  print(f'{"size x channels":16s}' + ''.join(f'{f"{n} {k}":>22s}' for k in
                                              ('forward', 'input_grad', 'weight_grad')
                                              for n in PATHS))
  for i, (size, c) in enumerate(SHAPES):
    cells = [np.median([r[i][k] for r in results[n]]) for k in
             ('forward', 'input_grad', 'weight_grad') for n in PATHS]
    print(f'{f"{size}x{size} x {c}":16s}' + ''.join(f'{v:22.0f}' for v in cells))


if __name__ == '__main__':
  app.run(main)
