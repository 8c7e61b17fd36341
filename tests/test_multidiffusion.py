"""MultiDiffusion: window placement, the fusion average, and sampling through windows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import perturbed_params
from conftest import small_config
from stunet import multidiffusion as md
from stunet import sampling
from stunet.models import build_model


def test_window_starts_cover_the_clip():
  assert md.window_starts(80, 16, 2) == (0, 14, 28, 42, 56, 64)
  assert md.window_starts(16, 8, 0) == (0, 8)
  assert md.window_starts(16, 8, 2) == (0, 6, 8)
  assert md.window_starts(8, 8, 2) == (0,)
  for t, length, overlap in [(80, 16, 2), (17, 5, 1), (9, 4, 3), (30, 7, 0)]:
    starts = md.window_starts(t, length, overlap)
    covered = np.zeros(t, int)
    for s in starts:
      covered[s:s + length] += 1
    assert covered.min() >= 1 and starts[-1] + length == t
    assert all(b - a <= length - overlap for a, b in zip(starts, starts[1:]))
  with pytest.raises(ValueError, match='longer than the clip'):
    md.window_starts(8, 16, 2)
  with pytest.raises(ValueError, match='overlap < window'):
    md.window_starts(16, 4, 4)
  with pytest.raises(ValueError, match='weighting'):
    md.Windows(16, 8, 2, weighting='gaussian')


def test_fusion_is_the_per_frame_weighted_average():
  # Two windows of 3 over 5 frames, overlapping at frame 2, constant predictions a, b.
  a, b = jnp.full((1, 3, 1, 1, 1), 2.), jnp.full((1, 3, 1, 1, 1), 6.)
  fused = md.fuse([a, b], (0, 2), 5, md.frame_weights(3, 1, 'uniform'))
  np.testing.assert_array_equal(fused[0, :, 0, 0, 0], [2., 2., 4., 6., 6.])
  # Ramp weights (1/3, 2/3, 2/3, 1/3) over two windows of 4 sharing frames 2 and 3.
  w = md.frame_weights(4, 2, 'ramp')
  np.testing.assert_allclose(w, [1 / 3, 2 / 3, 2 / 3, 1 / 3])
  a, b = jnp.full((1, 4, 1, 1, 1), 3.), jnp.full((1, 4, 1, 1, 1), 9.)
  fused = md.fuse([a, b], (0, 2), 6, w)[0, :, 0, 0, 0]
  np.testing.assert_allclose(fused, [3., 3., (2 / 3 * 3 + 1 / 3 * 9), (1 / 3 * 3 + 2 / 3 * 9),
                                     9., 9.], rtol=1e-6)
  # Random predictions against a direct numpy loop.
  rng = np.random.default_rng(0)
  t, length, overlap = 11, 4, 2
  starts = md.window_starts(t, length, overlap)
  w = md.frame_weights(length, overlap, 'ramp')
  preds = [rng.normal(size=(2, length, 3, 3, 2)).astype(np.float32) for _ in starts]
  num, den = np.zeros((2, t, 3, 3, 2)), np.zeros(t)
  for p, s in zip(preds, starts):
    for j in range(length):
      num[:, s + j] += w[j] * p[:, j]
      den[s + j] += w[j]
  expect = num / den[None, :, None, None, None]
  np.testing.assert_allclose(md.fuse(preds, starts, t, w), expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('batch', [1, 2, 3])
def test_apply_runs_every_window_and_fuses(batch):
  rng = np.random.default_rng(1)
  z = jnp.asarray(rng.normal(size=(2, 13, 2, 2, 3)), jnp.float32)
  cond = jnp.asarray(rng.normal(size=(2, 13, 1, 1, 3)), jnp.float32)
  windows = md.Windows(13, 5, 2, 'ramp', batch=batch)
  # Depends on where a frame sits in its window (cumsum over time), so a misplaced
  # window changes the result.
  fn = lambda zw, cw: jnp.tanh(jnp.cumsum(zw, axis=1)) + cw
  got = jax.jit(lambda z, c: md.apply(fn, z, windows, (c,)))(z, cond)
  preds = [fn(z[:, s:s + 5], cond[:, s:s + 5]) for s in windows.starts]
  np.testing.assert_allclose(got, md.fuse(preds, windows.starts, 13, windows.weights),
                             rtol=1e-5, atol=1e-6)


def _tokens(b, n):
  tokens = np.zeros((b, n), np.int32)
  tokens[:, :3], tokens[:, 3] = [5, 6, 7], 1
  null = np.zeros((b, n), np.int32)
  null[:, 0] = 1
  return tokens, tokens > 0, null, null > 0


@pytest.mark.parametrize('sampler', ['ddpm', 'dpm++2m'])
def test_one_window_over_the_whole_clip_equals_plain_sampling(sampler):
  """On the SSR with the ancestral sampler (the path with the most inputs: low-res
  video, its noise level, per-step noise) and with the multistep solver (its state:
  the previous step's fused prediction). The base model's windows run in test_cli's
  cascade (a clip longer than the trained one)."""
  from stunet import train_step  # pylint: disable=g-import-not-at-top
  cfg = small_config('scratch')
  cfg.model.lowres_size, cfg.model.temporal_resample = 8, False
  model = build_model(cfg.model)
  params = perturbed_params(model, train_step.example_inputs(cfg))
  shape = (2, cfg.data.num_frames, 16, 16, 3)
  lowres = jax.random.uniform(jax.random.key(3), (2, cfg.data.num_frames, 8, 8, 3),
                              minval=-1., maxval=1.)
  extra = (None, lowres, jnp.float32(0.1))
  args = (params, *_tokens(2, cfg.data.max_text_len), jax.random.key(7), jnp.float32(2.))
  plain = sampling.make_sampler(model, shape, num_steps=3, sampler=sampler,
                                 threshold=0.995)(*args, *extra)
  one = md.Windows(cfg.data.num_frames, cfg.data.num_frames, overlap=2)
  windowed = sampling.make_sampler(model, shape, num_steps=3, sampler=sampler,
                                   threshold=0.995, windows=one)(*args, *extra)
  assert float(jnp.abs(plain).max()) > 0.01
  np.testing.assert_allclose(windowed, plain, atol=2e-5)


def test_the_long_video_probes_freenoise_reshuffles_the_first_windows_noise():
  # experiments/long_video.py --noise=freenoise: frames past the first window take the
  # first window's frame noise, each block of a window's length in an order of its own
  # (the last block cut to the clip); a clip of one window keeps the plain draw.
  import os, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'experiments'))
  import long_video  # pylint: disable=g-import-not-at-top
  from stunet import diffusion  # pylint: disable=g-import-not-at-top
  noise = long_video.freenoise(diffusion.video_noise, 4)
  rng = jax.random.key(0)
  np.testing.assert_array_equal(noise(rng, (2, 4, 3, 3, 1)),
                                diffusion.video_noise(rng, (2, 4, 3, 3, 1)))
  z = np.asarray(jax.jit(noise, static_argnums=1)(rng, (2, 10, 3, 3, 1)))
  first = z[:, :4]
  orders = []
  for start in (4, 8):
    block = z[:, start:start + 4]
    order = [int(np.argmin([np.abs(block[:, j] - first[:, k]).max() for k in range(4)]))
             for j in range(block.shape[1])]
    for j, k in enumerate(order):
      np.testing.assert_array_equal(block[:, j], first[:, k])
    orders.append(order)
  assert sorted(orders[0]) == [0, 1, 2, 3] and len(set(orders[1])) == 2  # permutations
  assert any(o != list(range(len(o))) for o in orders)  # reordered, not copied
