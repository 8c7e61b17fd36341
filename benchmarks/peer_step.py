"""Our train step against lumiere-pytorch's, per FLOP, on this CPU, alternately.

  pip install -e '.[peer]'          # torch, lumiere-pytorch, denoising-diffusion-pytorch
  python benchmarks/peer_step.py    # widths 32 -> 128 at 32x32, 4 clips of 16 frames

Both sides: a STUNet of widths 32, 64, 128 at 32, 16, 8 px (two temporal halvings, 16
frames -> 4), 4 clips per step, spatial weights frozen (lumiere-pytorch always freezes
the image U-Net it wraps; ours is configs/tiny.py:stage=stunet with
train.freeze_spatial). Ours: the compiled train step (forward, backward, AdamW, EMA);
its FLOPs from XLA's cost analysis. The peer: lumiere-pytorch's MPLumiere around
denoising-diffusion-pytorch's KarrasUnet (image 32, dim 32, dim_max 128), forward,
MSE loss, backward and Adam on its trainable parameters; its FLOPs from torch's
FlopCounterMode over one forward + backward. Forward only: our denoiser pass (the
sampler's network call) against the peer's forward under no_grad.

The two run in turns (--rounds), each timed over --steps steps after a warm-up, so a
change in the machine's speed hits both; the script prints each side's median GFLOP/s,
the ratio, and the rate of a jitted float32 matmul (this CPU's reference).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

import synthetic  # benchmarks/synthetic.py, beside this script
from configs import tiny
from stunet import cli

_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Turns of ours then the peer.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Timed steps per turn (after one warm-up).')
_THREADS = flags.DEFINE_integer('threads', 0, 'torch threads (0: the CPUs JAX uses).')
_CHANNELS = flags.DEFINE_integer('channels', 32, 'Base width of both networks.')

BATCH, FRAMES, SIZE = 4, 16, 32


def _ours(channels: int):
  """(train step, its FLOPs, forward, its FLOPs) of our STUNet at these shapes."""
  config = tiny.get_config('stage=stunet')
  config.model.channels = channels
  # The network the peer has: no coordinate channels, no layout bias (the tiny recipe's
  # additions, a fraction of a percent of the FLOPs).
  config.model.coord_channels, config.model.layout_basis = False, 0
  config.train.freeze_spatial = True
  config.train.batch_size = BATCH
  spec, state, compiled, batch, rng, _ = synthetic.train_step(config)
  holder = {'state': compiled(state, batch, rng)[0]}

  def step():
    holder['state'], m = compiled(holder['state'], batch, rng)
    return m['loss']

  n = config.data.max_text_len
  params = jax.tree.map(jnp.copy, holder['state'].params)  # (the steps donate the state)
  args = ({'params': params}, jnp.zeros((BATCH, FRAMES, SIZE, SIZE, 3)),
          jnp.full((BATCH,), 0.5), jnp.zeros((BATCH, n, config.model.text.width)),
          jnp.ones((BATCH, n), bool))
  forward = jax.jit(lambda p, z, t, txt, m: spec.model.apply(p, z, t, txt, m,
                                                           method='denoise'))
  forward = forward.lower(*args).compile()
  return (step, synthetic.flops(compiled), lambda: forward(*args),
          synthetic.flops(forward))


def _peer(channels: int, threads: int):
  """(train step, its FLOPs, forward, its FLOPs) of lumiere-pytorch at these shapes."""
  import torch  # pylint: disable=g-import-not-at-top
  from denoising_diffusion_pytorch import KarrasUnet  # pylint: disable=g-import-not-at-top
  from lumiere_pytorch import MPLumiere  # pylint: disable=g-import-not-at-top
  from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  unet = KarrasUnet(image_size=SIZE, dim=channels, channels=3, dim_max=4 * channels)
  model = MPLumiere(unet, image_size=SIZE, unet_time_kwarg='time',
                    conv_module_names=['downs.1', 'ups.1', 'downs.2', 'ups.2'],
                    attn_module_names=['mids.0'],
                    upsample_module_names=['ups.2', 'ups.1'],
                    downsample_module_names=['downs.1', 'downs.2'])
  trainable = [p for p in model.parameters() if p.requires_grad]
  optimizer = torch.optim.Adam(trainable, lr=1e-4)
  video = torch.randn(BATCH, 3, FRAMES, SIZE, SIZE)
  target = torch.randn_like(video)
  t = torch.full((BATCH,), 0.5)

  def forward_backward():
    loss = torch.nn.functional.mse_loss(model(video, time=t), target)
    loss.backward()
    return loss

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss = forward_backward()
    optimizer.step()
    return loss

  def forward():
    with torch.no_grad():
      return model(video, time=t)

  with FlopCounterMode(display=False) as counter:
    forward_backward()
  train_flops = counter.get_total_flops()
  with FlopCounterMode(display=False) as counter:
    forward()
  return step, train_flops, forward, counter.get_total_flops()


def _median_seconds(fn, steps: int, block=lambda x: x) -> float:
  block(fn())  # warm-up
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    block(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def _matmul_gflops() -> float:
  x = jnp.ones((2048, 2048), jnp.float32)
  f = jax.jit(lambda a: a @ a).lower(x).compile()
  s = _median_seconds(lambda: f(x), 7, jax.block_until_ready)
  return 2 * 2048 ** 3 / s / 1e9


def main(argv):
  del argv
  cli.quiet_library_logs()
  threads = _THREADS.value or os.cpu_count()
  ours = _ours(_CHANNELS.value)
  peer = _peer(_CHANNELS.value, threads)
  rates = {k: [] for k in ('ours_train', 'peer_train', 'ours_forward', 'peer_forward')}
  for r in range(_ROUNDS.value):
    for name, (step, flops, forward, fwd_flops) in (('ours', ours), ('peer', peer)):
      block = jax.block_until_ready if name == 'ours' else (lambda x: x)
      rates[f'{name}_train'].append(flops / _median_seconds(step, _STEPS.value, block) / 1e9)
      rates[f'{name}_forward'].append(
          fwd_flops / _median_seconds(forward, _STEPS.value, block) / 1e9)
    print(f'round {r + 1}: ' + ', '.join(f'{k} {v[-1]:.1f}' for k, v in rates.items()) +
          ' GFLOP/s', flush=True)
  med = {k: float(np.median(v)) for k, v in rates.items()}
  print(f'widths {_CHANNELS.value}-{4 * _CHANNELS.value}, {BATCH} clips of {FRAMES}x{SIZE}x'
        f'{SIZE}, spatial weights frozen, {threads} threads; medians of {_ROUNDS.value} '
        f'rounds of {_STEPS.value} steps')
  print(f'train step  ours {ours[1] / 1e9:.1f} GFLOP, {med["ours_train"]:.1f} GFLOP/s | '
        f'peer {peer[1] / 1e9:.1f} GFLOP, {med["peer_train"]:.1f} GFLOP/s | ratio '
        f'{med["ours_train"] / med["peer_train"]:.2f}x')
  print(f'forward     ours {ours[3] / 1e9:.1f} GFLOP, {med["ours_forward"]:.1f} GFLOP/s | '
        f'peer {peer[3] / 1e9:.1f} GFLOP, {med["peer_forward"]:.1f} GFLOP/s | ratio '
        f'{med["ours_forward"] / med["peer_forward"]:.2f}x')
  print(f'jitted float32 2048x2048 matmul: {_matmul_gflops():.1f} GFLOP/s')


if __name__ == '__main__':
  app.run(main)
