"""How much the direction word is worth to the loss, noise level by noise level, on the
benchmark's clips and on the stationary data: a property of the data, no model.

At noise level t the best a denoiser can do is the posterior mean E[x | z_t, caption].
For one colour and shape it is estimated here by Bayes over a reference set of rendered
clips (weights proportional to the likelihood N(z_t; alpha_t x_i, sigma_t^2)), once
with the references of the clip's own direction ("moves right") and once with those of
both directions ("moves left" or "right", equally likely). The difference of the two
predictions' v-losses on held-out clips is what knowing the direction word can save at
that level, and so what the loss pays a network for reading it. Integrated over the
training's noise levels (t = 1 - (1 - u)^t_power) it compares the two datasets: on the
benchmark's clips a direction also moves the mean clip (the object is on the right at
the start of a left move), which the highest noise levels reward; on the stationary
data every position is equally likely in every frame, so only the noise levels at which
the trajectory is partly visible pay for the direction.

  python experiments/direction_information.py                       # ~5 min
  python experiments/direction_information.py --pair=grows,shrinks \
      --output=experiments/results/direction_information_grows.json
"""

import json
import os

import numpy as np
from absl import app
from absl import flags

from data import shapes
from stunet import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The script's flags, defined only when it runs (importing it for its functions, as
  the tests do, defines none, so it cannot clash with another script's flags)."""
  flags.DEFINE_list('pair', ['moves left', 'moves right'],
                    'The two motions that differ only in their direction.')
  flags.DEFINE_string('color', 'red', 'Colour of every clip.')
  flags.DEFINE_string('shape', 'circle', 'Shape of every clip.')
  flags.DEFINE_integer('num_references', 3000, 'Reference clips per direction.')
  flags.DEFINE_integer('num_tests', 256, 'Held-out clips per direction.')
  flags.DEFINE_integer('frames', 16, 'Frames per clip (the model\'s window).')
  flags.DEFINE_integer('size', 32, 'Frame size.')
  flags.DEFINE_string('output', 'experiments/results/direction_information.json',
                      'Where the table goes (json).')
  flags.DEFINE_list('band', ['0.95', '0.99'], 'A band of noise levels (train.t_band).')
  flags.DEFINE_float('band_share', 0.5, 'Its share of the batch (train.t_band_share).')


LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.96, 0.97, 0.975,
          0.98, 0.985, 0.99, 0.995, 0.999)
T_POWERS = (1., 2., 3.)


def coverage_clips(labels: dict, n: int, seed: int, stationary: bool, frames: int = 16,
                   size: int = 32) -> np.ndarray:
  """n clips' object coverage in [0, 1], [n, frames * size * size] float32."""
  rng = np.random.default_rng(seed)
  out = np.empty((n, frames * size ** 2), np.float32)
  for i in range(n):
    video = shapes.render(labels, frames, size, rng, stationary=stationary)
    out[i] = video.max(-1).reshape(-1) / 255.
  return out


def posterior_mean(y, refs, a):
  """E[cov | y] for y = a * cov + noise (unit variance) over equally likely refs."""
  logw = a * (y @ refs.T) - 0.5 * a * a * (refs * refs).sum(1)[None]
  logw -= logw.max(1, keepdims=True)
  w = np.exp(logw.astype(np.float64))
  w /= w.sum(1, keepdims=True)
  return (w @ refs.astype(np.float64)).astype(np.float32)


def direction_gain(refs: dict, tests: dict, contrast: float, level: float, seed: int):
  """(v-loss knowing the direction, v-loss not knowing it, std. error of the gap)."""
  from stunet import diffusion as D  # pylint: disable=g-import-not-at-top
  alpha, sigma = (float(x) for x in D.alpha_sigma(D.logsnr_schedule_cosine(level)))
  both = np.concatenate([refs[m] for m in refs])
  a = alpha * contrast / sigma  # the object's amplitude in units of the noise
  rng = np.random.default_rng(seed)
  known, unknown = [], []
  for motion, cov in tests.items():
    # The projection of z_t onto the colour: a * cov + unit noise, per pixel.
    y = a * cov + rng.standard_normal(cov.shape).astype(np.float32)
    for preds, out in ((refs[motion], known), (both, unknown)):
      err = ((posterior_mean(y, preds, a) - cov) ** 2).sum(1)
      # v-loss per element: |v_hat - v|^2 = |x_hat - x|^2 / sigma^2, x = -1 + cov * c.
      out.append(contrast ** 2 * err / (sigma ** 2 * 3 * cov.shape[1]))
  known, unknown = np.concatenate(known), np.concatenate(unknown)
  gap = unknown - known
  return float(known.mean()), float(unknown.mean()), float(gap.std() / np.sqrt(len(gap)))


def weighted(levels, gaps, t_power: float) -> float:
  """E_t[gap] for t = 1 - (1 - u)^t_power, u uniform (trapezoid over the levels, the
  gap taken as 0 at t = 0 and at t = 1, where z is the clip or pure noise)."""
  t = np.concatenate([[0.], levels, [1.]])
  g = np.concatenate([[0.], gaps, [0.]])
  u = 1. - (1. - t) ** (1. / t_power)  # the levels' quantiles under that t distribution
  return float(np.sum(0.5 * (g[1:] + g[:-1]) * np.diff(u)))


def band_mean(levels, gaps, band) -> float:
  """The gap averaged uniformly over the levels in ``band`` (linear between levels)."""
  grid = np.linspace(band[0], band[1], 1001)
  return float(np.interp(grid, levels, gaps).mean())


def main(argv):
  del argv
  from stunet import diffusion as D  # pylint: disable=g-import-not-at-top
  pair = [m.strip() for m in FLAGS.pair]
  if len(pair) != 2 or any(m not in shapes.MOTIONS for m in pair):
    raise app.UsageError(f'--pair needs two motions of {shapes.MOTIONS}, got {FLAGS.pair}.')
  if FLAGS.color not in shapes.COLORS or not all(
      FLAGS.shape in shapes.SHAPES and shapes.valid_combination(FLAGS.shape, m) for m in pair):
    raise app.UsageError(f'--color={FLAGS.color} --shape={FLAGS.shape}: use a colour of '
                     f'{tuple(shapes.COLORS)} and a shape of {shapes.SHAPES} that can make '
                     f'both motions.')
  band = tuple(float(b) for b in FLAGS.band)
  contrast = float(np.linalg.norm(shapes.COLORS[FLAGS.color] / 127.5))
  result = dict(pair=pair, color=FLAGS.color, shape=FLAGS.shape, levels=list(LEVELS),
                num_references=FLAGS.num_references, num_tests=FLAGS.num_tests, data={})
  for name, stationary in (('benchmark', False), ('stationary', True)):
    clips = lambda n, seed, m: coverage_clips(
        dict(color=FLAGS.color, shape=FLAGS.shape, motion=m), n, seed, stationary,
        FLAGS.frames, FLAGS.size)
    refs = {m: clips(FLAGS.num_references, 100 + k, m) for k, m in enumerate(pair)}
    tests = {m: clips(FLAGS.num_tests, 200 + k, m) for k, m in enumerate(pair)}
    rows = []
    print(f'{name} clips, {" / ".join(pair)} ({FLAGS.color} {FLAGS.shape}, '
          f'{FLAGS.num_references} references and {FLAGS.num_tests} held-out clips per '
          f'direction)')
    print('   t   logsnr  v-loss knowing  not knowing   gap (std. error)')
    for i, level in enumerate(LEVELS):
      known, unknown, se = direction_gain(refs, tests, contrast, level, seed=i)
      rows.append(dict(t=level, known=known, unknown=unknown, gap=unknown - known, se=se))
      print(f'{level:6.3f} {float(D.logsnr_schedule_cosine(level)):+6.1f}  {known:.5f}'
            f'        {unknown:.5f}      {unknown - known:+.5f} ({se:.5f})', flush=True)
    gaps = [r['gap'] for r in rows]
    per_power = {str(p): weighted(LEVELS, gaps, p) for p in T_POWERS}
    # train.t_band_share of the batch in train.t_band, the rest by t_power 2.
    mixed = (FLAGS.band_share * band_mean(LEVELS, gaps, band)
             + (1. - FLAGS.band_share) * per_power['2.0'])
    print('  the gap averaged over training noise levels: ' + ', '.join(
        f't_power {p}: {g:.5f}' for p, g in per_power.items()) +
          f'; t_power 2 with {FLAGS.band_share:.0%} of the batch in t = '
          f'{band[0]}-{band[1]}: {mixed:.5f}\n')
    result['data'][name] = dict(rows=rows, mean_gap_by_t_power=per_power,
                                mean_gap_t_power_2_with_band=mixed)
  os.makedirs(os.path.dirname(FLAGS.output) or '.', exist_ok=True)
  with open(FLAGS.output, 'w') as f:
    json.dump(result, f, indent=1)
  print(f'wrote {FLAGS.output}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
