"""experiments/direction_information.py: what the direction word is worth to the loss."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'experiments'))
import direction_information as di  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_the_posterior_mean_is_the_likelihood_weighted_mean_of_the_references():
  refs = np.array([[0., 0.], [1., 0.], [0., 1.]], np.float32)
  y = np.array([[0.8, 0.1]], np.float32)
  a = 2.
  logw = -0.5 * ((y[:, None] - a * refs[None]) ** 2).sum(-1)  # N(y; a * ref, 1)
  w = np.exp(logw - logw.max())
  w /= w.sum()
  np.testing.assert_allclose(di.posterior_mean(y, refs, a), w @ refs, rtol=1e-5)


def test_the_gap_averaged_over_noise_levels_follows_t_power():
  levels = np.linspace(0.001, 0.999, 999)
  gap = lambda t: np.sin(np.pi * t) ** 2 * t  # 0 at t = 0 and t = 1, as a real gap is
  u = (np.arange(100000) + 0.5) / 100000
  for power in (1., 2., 3.):
    expected = gap(1. - (1. - u) ** power).mean()  # E_u[gap(t)], t = 1 - (1 - u)^power
    np.testing.assert_allclose(di.weighted(levels, gap(levels), power), expected, rtol=2e-3)


def test_the_direction_pays_at_the_highest_noise_only_on_the_benchmarks_clips():
  # The mean clip of "moves left" differs from that of "moves right" on the benchmark's
  # clips (the object starts on the right), so near t = 1 knowing the direction lowers
  # the best loss; on the stationary data every position is as likely in every frame.
  # (16x16 frames, to be quick: both datasets define their motion relative to the frame.)
  pair = ('moves left', 'moves right')
  gaps = {}
  for stationary in (False, True):
    clips = lambda n, seed, m, s=stationary: di.coverage_clips(
        dict(color='red', shape='circle', motion=m), n, seed, s, frames=16, size=16)
    refs = {m: clips(200, 100 + k, m) for k, m in enumerate(pair)}
    tests = {m: clips(16, 200 + k, m) for k, m in enumerate(pair)}
    known, unknown, se = di.direction_gain(refs, tests, 2., 0.995, seed=0)
    gaps[stationary] = (unknown - known, se)
  assert gaps[False][0] > 0.005 and gaps[False][0] > 4 * gaps[False][1], gaps
  assert abs(gaps[True][0]) < gaps[False][0] / 4, gaps
