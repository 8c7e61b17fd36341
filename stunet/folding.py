"""Context parallelism: one clip's activations split over devices, and the folds between
the layouts of spatial and temporal layers.

Every network module takes and returns video ``[b, t, h, w, c]``. A spatial layer runs
on frames (time folded into the batch, ``[b*t, h, w, c]``), a temporal one on pixels
(``[b*h*w, t, c]``). On a device mesh with a ``context`` axis, a clip is split over the
devices of that axis: along time in spatial layers and along rows in temporal ones, so
every layer runs where its data are and the switch between the two layouts is an
all-to-all (Dynamic Sequence Parallelism, Zhao et al. 2024). ``Fold`` does the folding
and states the split at both ends; outside a mesh it is plain reshaping.

The logical axis names used here map onto mesh axes through the config's rules
(``config.mesh.rules``, ``stunet.sharding``).
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

# Logical axes of the main activations [b, t, h, w, c] (the config's rules map them onto
# mesh axes: the batch over the data-parallel ones); Fold adds the clip's split.
ACTIVATION = ('batch', 'time', 'height', 'width', 'act_channels')
# The logical axis that splits one clip over devices; config.mesh.rules maps it onto the
# 'context' mesh axis.
CONTEXT = 'context'


def _mesh_axes(names) -> list:
  """Each logical name's mesh axes (a tuple, maybe empty) under the current rules."""
  spec = nn.logical_to_mesh_axes(names)
  return [() if a is None else (a,) if isinstance(a, str) else tuple(a) for a in spec]


def _mesh():
  """The mesh being traced for, or None outside a mesh + logical-rules context."""
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty or not nn.get_logical_axis_rules() else mesh


def _size(mesh, axes) -> int:
  return int(np.prod([mesh.shape[a] for a in axes])) if axes else 1


def _dividing(mesh, shape, axes) -> list:
  """Per dimension, its mesh axes, or none where they do not divide it."""
  return [a if n % _size(mesh, a) == 0 else () for n, a in zip(shape, axes)]


def _constrain_axes(x: jax.Array, axes) -> jax.Array:
  spec = jax.sharding.PartitionSpec(*[None if not a else a[0] if len(a) == 1 else a
                                      for a in axes])
  return jax.lax.with_sharding_constraint(x, spec)


def constrain(x: jax.Array, names) -> jax.Array:
  """Sharding constraint by logical names; a no-op outside a mesh + rules context.
  A mesh axis that does not divide its dimension is dropped there (a batch of one clip
  on a mesh with two data shards is replicated over them, not refused)."""
  mesh = _mesh()
  if mesh is None:
    return x
  return _constrain_axes(x, _dividing(mesh, x.shape, _mesh_axes(names)))


def context_size() -> int:
  """Devices that one clip is split over (the mesh axes of the logical CONTEXT axis)."""
  mesh = _mesh()
  return 1 if mesh is None else _size(mesh, _mesh_axes((CONTEXT,))[0])


# Which dimension of [b, t, h, w, c] carries the clip's split: spatial layers see every
# frame alone, so they split time; temporal layers see every pixel alone, so they split
# height (else width, else time). Between the two the partitioner moves the data with
# an all-to-all (Dynamic Sequence Parallelism, Zhao et al. 2024).
_SPLIT_ORDER = {'space': (1, 2, 3), 'time': (2, 3, 1)}


def padded_frames(t: int) -> int:
  """Frames a spatial layer runs on for a clip of t frames. Where temporal downsampling
  leaves a frame count that the context devices do not divide (80 frames over 8
  devices: 20, 10, 5 at the coarse levels), the clip is padded with empty frames up to
  the next multiple, at most doubling it: spatial layers treat frames independently, so
  the padding costs only its compute (small: the padded levels are the coarse ones)
  and the frames stay split. Splitting rows there instead needs halos and lets XLA
  gather whole activations for the convolutions' weight gradients. Beyond a doubling
  (1 or 2 frames over 8 devices) the rows are split."""
  n = context_size()
  if n == 1 or t % n == 0:
    return t
  padded = -(-t // n) * n
  return padded if padded <= 2 * t else t


def _clip_axes(shape, kind: str):
  """Mesh axes of each dimension of a video [b, t, h, w, c] of ``shape`` for a layer of
  ``kind`` (see _SPLIT_ORDER), or None outside a mesh."""
  mesh = _mesh()
  if mesh is None:
    return None
  names = list(ACTIVATION)
  n = context_size()
  if n > 1:
    for dim in _SPLIT_ORDER[kind]:
      if shape[dim] % n == 0:
        names[dim] = CONTEXT
        break
  return _dividing(mesh, shape, _mesh_axes(tuple(names)))


def merge(x: jax.Array, k: int, splits) -> jax.Array:
  """Merges x's first k dims [n_0, ..., n_k-1, *rest] into one, device-major: ordered
  (s_0, ..., s_k-1, n_0/s_0, ..., n_k-1/s_k-1) for the splits s_i of the dims, so that
  each device's shard is a contiguous block of the merged dim (plain row-major order
  when at most one dim has more than one element per device)."""
  dims, rest = x.shape[:k], x.shape[k:]
  y = x.reshape([d for n, s in zip(dims, splits) for d in (s, n // s)] + list(rest))
  perm = [2 * i for i in range(k)] + [2 * i + 1 for i in range(k)]
  return y.transpose(perm + list(range(2 * k, y.ndim))).reshape((-1,) + rest)


def unmerge(h: jax.Array, dims, splits) -> jax.Array:
  """Inverse of merge: [prod(dims), *rest] -> [*dims, *rest]."""
  k, rest = len(dims), h.shape[1:]
  y = h.reshape(list(splits) + [n // s for n, s in zip(dims, splits)] + list(rest))
  perm = [j for i in range(k) for j in (i, k + i)]
  return y.transpose(perm + list(range(2 * k, y.ndim))).reshape(tuple(dims) + rest)


class Fold:
  """A video [b, t, h, w, c] in and out of the layout of a spatial layer (kind='space':
  [b*t', h, w, c], frames independent; t' = padded_frames(t)) or of a temporal one
  ('time': [b*h*w, t, c], pixels independent), on the current mesh.

  The split is stated at both ends (the batch over the data-parallel axes, one clip over
  the context axis along the dimension _SPLIT_ORDER picks), and the folded axis is
  ordered device-major (merge), so folding moves no data: each layer runs where its
  data are and the switch between the two layouts is an all-to-all. Left to the
  partitioner, it computed convolutions in the other layout (halos both ways) and their
  weight gradients all-gathered whole activations; with plain row-major folding,
  several clips per device group cost a collective-permute of every activation.
  Outside a mesh this is plain reshaping.
  """

  def __init__(self, shape, kind: str):
    b, t, hh, ww, c = shape
    self.kind, self.shape = kind, tuple(shape)
    mesh = _mesh()
    self.frames = padded_frames(t) if kind == 'space' and mesh is not None else t
    self.axes = _clip_axes((b, self.frames, hh, ww, c), kind) if mesh is not None else None
    sizes = [_size(mesh, a) for a in self.axes] if self.axes else [1] * 5
    # The dims merged into the folded axis, and their splits.
    self.merged = (b, self.frames) if kind == 'space' else (b, hh, ww)
    self.splits = tuple(sizes[:2]) if kind == 'space' else (sizes[0], sizes[2], sizes[3])

  def _folded_axes(self, a):
    """The folded array's axes, from those of the video a (5 entries)."""
    if self.kind == 'space':
      return [a[0] + a[1]] + list(a[2:])
    return [a[0] + a[2] + a[3], a[1], a[4]]

  def fold(self, x: jax.Array) -> jax.Array:
    t = x.shape[1]
    if self.frames != t:
      x = jnp.pad(x, ((0, 0), (0, self.frames - t)) + ((0, 0),) * 3)
    if self.axes is not None:
      x = _constrain_axes(x, self.axes)
    if self.kind == 'time':
      x = jnp.moveaxis(x, 1, 3)
    h = merge(x, len(self.merged), self.splits)
    return h if self.axes is None else _constrain_axes(h, self._folded_axes(self.axes))

  def unfold(self, h: jax.Array) -> jax.Array:
    """A layer's output (any channels; for 'space' maybe resized) -> [b, t, h', w', c']."""
    axes = None
    if self.axes is not None:  # the batch and frame splits stay; the rest as for its size
      if self.kind == 'space':
        axes = self.axes[:2] + _dividing(_mesh(), h.shape[1:3] + h.shape[-1:],
                                         self.axes[2:])
      else:
        axes = self.axes[:4] + [()]
      h = _constrain_axes(h, self._folded_axes(axes))
    x = unmerge(h, self.merged, self.splits)
    if self.kind == 'time':
      x = jnp.moveaxis(x, 3, 1)
    if axes is not None:
      x = _constrain_axes(x, axes)
    return x[:, :self.shape[1]]

  def per_clip(self, v: jax.Array) -> jax.Array:
    """v [b, ...] (one value per clip) -> [b*t', ...] or [b*h*w, ...], each row the value
    of its clip, in the folded order."""
    v = jnp.broadcast_to(v.reshape((v.shape[0],) + (1,) * (len(self.merged) - 1) + v.shape[1:]),
                         self.merged + v.shape[1:])
    return merge(v, len(self.merged), self.splits)
