"""Building blocks of the T2I U-Net and of its space-time inflation (STUNet).

Every module takes and returns channels-last video ``[b, t, h, w, c]``. The spatial
blocks are the text-to-image network's: they run on each frame independently (time
is folded into the batch), so a T2I checkpoint applies to video unchanged. The
temporal blocks are the ones Lumiere adds; each is initialised so that the inflated
network starts as the T2I network applied frame by frame (zero-initialised residual
outputs, identity-initialised temporal resampling).

Parameters carry logical axis names (``nn.with_logical_partitioning``) so that
``stunet.sharding`` can map them onto any device mesh from the config.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from stunet.folding import Fold
from stunet.folding import merge
from stunet.folding import unmerge

Dtype = Any

# Logical axis names of parameters; the config maps them onto mesh axes.
CONV = ('conv_h', 'conv_w', 'conv_in', 'conv_out')
TCONV = ('conv_t', 'conv_in', 'conv_out')
DENSE = ('embed', 'mlp')
DENSE_OUT = ('mlp', 'embed')
NORM = ('norm',)
# Initialisation schemes of the temporal down/upsampling (config.model.temporal_resample_init):
# the paper's identity (striding, frame repetition), linear interpolation, or He (ablation).
TEMPORAL_RESAMPLE_INITS = ('identity', 'linear', 'he')


def partitioned(init, names):
  """An initializer whose parameter carries logical axis names (for the sharding rules)."""
  return nn.with_logical_partitioning(init, names)


def _groups(channels: int) -> int:
  return min(32, max(1, channels // 4))


class GroupNorm(nn.Module):
  """Group normalisation of x [n, ..., c] over all axes but the first and the last,
  with flax's ``nn.GroupNorm`` parameters and values (statistics in float32, variance
  as E[x^2] - E[x]^2, output in ``dtype``). Computed as sums per channel, then per
  group, and one scale and shift per (example, channel): one reduction and one
  elementwise pass, where flax's form makes XLA:CPU reduce over a reshaped
  [n, ..., groups, c / groups] several times slower (benchmarks/profile_step.py)."""
  num_groups: int
  epsilon: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c, g = x.shape[-1], self.num_groups
    scale = self.param('scale', partitioned(nn.initializers.ones, NORM), (c,))
    bias = self.param('bias', partitioned(nn.initializers.zeros, NORM), (c,))
    xf = x.astype(jnp.float32)
    axes = tuple(range(1, x.ndim - 1))
    count = np.prod(x.shape[1:-1]) * (c // g)
    per_group = lambda s: s.reshape(x.shape[0], g, c // g).sum(-1) / count
    mean, mean2 = per_group(xf.sum(axes)), per_group((xf * xf).sum(axes))
    inv = jax.lax.rsqrt(jnp.maximum(mean2 - mean * mean, 0.) + self.epsilon)
    a = jnp.repeat(inv, c // g, axis=1) * scale                 # [n, c]
    b = bias - jnp.repeat(mean, c // g, axis=1) * a
    shape = (x.shape[0],) + (1,) * len(axes) + (c,)
    return (xf * a.reshape(shape) + b.reshape(shape)).astype(self.dtype)


def group_norm(name: str, channels: int, dtype: Dtype) -> GroupNorm:
  """Statistics in float32, output in the compute dtype."""
  return GroupNorm(num_groups=_groups(channels), name=name, dtype=dtype)


def layer_norm(name: str, dtype: Dtype) -> nn.LayerNorm:
  return nn.LayerNorm(name=name, dtype=dtype, scale_init=partitioned(nn.initializers.ones, NORM),
                      bias_init=partitioned(nn.initializers.zeros, NORM))


# What the spatial convolutions see past the frame's edges (config.model.spatial_pad):
# zeros, or the opposite edge's pixels (the frame as a torus, for data whose objects
# wrap around it).
SPATIAL_PADS = ('zeros', 'circular')


def _wrap_same(h, kernel: int, stride: int):
  """h [n, h, w, c] padded as 'SAME' would pad it for this kernel and stride, with the
  opposite edge's pixels instead of zeros (so a 'VALID' conv then takes the same
  windows as 'SAME' does: a model trained with zeros keeps its alignment; flax's
  'CIRCULAR' centres a stride-2 window a pixel earlier)."""
  pads = []
  for n in h.shape[1:3]:
    total = max((-(-n // stride) - 1) * stride + kernel - n, 0)
    pads.append((total // 2, total - total // 2))
  return jnp.pad(h, [(0, 0)] + pads + [(0, 0)], mode='wrap')  # slices and a concatenate


def conv2d(features: int, name: str, dtype: Dtype, *, kernel: int = 3,
           stride: int = 1, zero: bool = False, pad: str = 'zeros'):
  """A 2-D conv on [n, h, w, c] (a callable): 'SAME' windows, padded with zeros or,
  pad='circular', with the pixels of the opposite edge."""
  if pad not in SPATIAL_PADS:
    raise ValueError(f'spatial padding {pad!r}: use one of {SPATIAL_PADS}')
  init = nn.initializers.zeros if zero else nn.initializers.lecun_normal()
  conv = nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding='SAME' if pad == 'zeros' else 'VALID', dtype=dtype, name=name,
                 kernel_init=partitioned(init, CONV),
                 bias_init=partitioned(nn.initializers.zeros, ('conv_out',)))
  return conv if pad == 'zeros' else lambda h: conv(_wrap_same(h, kernel, stride))


def dense(features: int, name: str, dtype: Dtype, *, zero: bool = False,
          names=DENSE, use_bias: bool = True) -> nn.Dense:
  init = nn.initializers.zeros if zero else nn.initializers.lecun_normal()
  return nn.Dense(features, dtype=dtype, name=name, use_bias=use_bias,
                  kernel_init=partitioned(init, names),
                  bias_init=partitioned(nn.initializers.zeros, (names[-1],)))


def identity_temporal_kernel(key, shape, dtype=jnp.float32):
  """Kernel [k, c, c] that makes a 'SAME' temporal conv the identity map.

  This is Lumiere's initialisation of temporal resampling: a downsample then acts
  as plain striding and an upsample as frame repetition (nearest neighbour).
  """
  del key
  k, cin, cout = shape
  if cin != cout:
    raise ValueError(f'identity init needs cin == cout, got {cin} != {cout}')
  kernel = np.zeros(shape, np.float32)
  kernel[k // 2] = np.eye(cin)
  return jnp.asarray(kernel, dtype)


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.) -> jax.Array:
  """Sinusoidal embedding of continuous time t in [0, 1]: [b] -> [b, dim]."""
  half = dim // 2
  freqs = jnp.exp(-np.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = (1000. * t.astype(jnp.float32))[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def attention(q, k, v, mask=None):
  """Multi-head attention. q: [B, Tq, H, D], k/v: [B, Tk, H, D], mask: [B, Tk] bool.

  On a GPU, bfloat16 / float16 heads of a width cuDNN takes (a multiple of 8, at most
  128) go through cuDNN's fused attention (jax's default is XLA's own, which
  materialises the [Tq, Tk] scores); anything cuDNN refuses falls back to XLA's. Odd
  sequence lengths (the temporal attention's 5 frames of an 80-frame clip) go to XLA:
  cuDNN's backward pass refuses them, and only when the step is differentiated."""
  if mask is not None:
    mask = mask[:, None, None, :]
  if (jax.default_backend() == 'gpu' and q.dtype in (jnp.bfloat16, jnp.float16)
      and q.shape[-1] % 8 == 0 and q.shape[-1] <= 128
      and q.shape[1] % 2 == 0 and k.shape[1] % 2 == 0):
    try:
      return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation='cudnn')
    except (ValueError, NotImplementedError, RuntimeError):
      pass  # a shape or mask cuDNN does not take
  return jax.nn.dot_product_attention(q, k, v, mask=mask)


class ResBlock(nn.Module):
  """Spatial residual block conditioned on the (time + pooled text) embedding."""
  features: int
  pad: str = 'zeros'  # the convolutions' padding (SPATIAL_PADS)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb):  # x: [b, t, h, w, c], emb: [b, d]
    f = Fold(x.shape, 'space')
    h = f.fold(x)
    skip = h
    h = nn.swish(group_norm('norm_0', h.shape[-1], self.dtype)(h))
    h = conv2d(self.features, 'conv_0', self.dtype, pad=self.pad)(h)
    scale_shift = dense(2 * self.features, 'emb_proj', self.dtype)(nn.swish(emb))
    scale_shift = f.per_clip(scale_shift)[:, None, None, :]
    scale, shift = jnp.split(scale_shift, 2, axis=-1)
    h = group_norm('norm_1', self.features, self.dtype)(h) * (1 + scale) + shift
    h = conv2d(self.features, 'conv_1', self.dtype, zero=True, pad=self.pad)(nn.swish(h))
    if skip.shape[-1] != self.features:
      skip = conv2d(self.features, 'skip', self.dtype, kernel=1)(skip)
    return f.unfold(skip + h)


class SpatialAttention(nn.Module):
  """Per-frame self-attention over pixels, then cross-attention to text tokens."""
  num_heads: int
  self_attn: bool = True
  cross_attn: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, text, text_mask):
    # x: [b, t, h, w, c], text: [b, L, d], text_mask: [b, L] bool
    b, t, hh, ww, c = x.shape
    heads, hd = self.num_heads, c // self.num_heads
    f = Fold(x.shape, 'space')
    h = f.fold(x)
    n = h.shape[0]  # b x frames (padded on a mesh, see folding.padded_frames)
    h = h.reshape(n, hh * ww, c)
    if self.self_attn:
      y = group_norm('self_norm', c, self.dtype)(h[:, :, None, :])[:, :, 0]
      qkv = dense(3 * c, 'self_qkv', self.dtype, use_bias=False)(y)
      q, k, v = jnp.split(qkv.reshape(n, hh * ww, 3 * heads, hd), 3, axis=2)
      y = attention(q, k, v).reshape(n, hh * ww, c)
      h = h + dense(c, 'self_out', self.dtype, zero=True, names=DENSE_OUT)(y)
    if self.cross_attn:
      # Text LayerNorm as in Imagen; the text is shared by all frames of a clip (its
      # keys and values are computed once per clip, then repeated per frame).
      ctx = layer_norm('text_norm', self.dtype)(text)
      cmask = f.per_clip(text_mask)
      y = group_norm('cross_norm', c, self.dtype)(h[:, :, None, :])[:, :, 0]
      q = dense(c, 'cross_q', self.dtype, use_bias=False)(y)
      kv = dense(2 * c, 'cross_kv', self.dtype, use_bias=False)(ctx)
      kv = f.per_clip(kv)
      k, v = jnp.split(kv.reshape(n, -1, 2 * heads, hd), 2, axis=2)
      y = attention(q.reshape(n, hh * ww, heads, hd), k, v, cmask)
      h = h + dense(c, 'cross_out', self.dtype, zero=True, names=DENSE_OUT)(
          y.reshape(n, hh * ww, c))
    return f.unfold(h.reshape(n, hh, ww, c))


def temporal_kernel(taps):
  """Initializer of a kernel [k, c, c] that applies the filter ``taps`` (k values) to
  every channel alone: taps (0, 1, 0) is the identity."""
  def init(key, shape, dtype=jnp.float32):
    del key
    k, cin, cout = shape
    if cin != cout or k != len(taps):
      raise ValueError(f'a {len(taps)}-tap channelwise init needs cin == cout, got {shape}')
    return jnp.asarray(np.asarray(taps, np.float32)[:, None, None] * np.eye(cin), dtype)
  return init


class TemporalConv(nn.Module):
  """1-D convolution along time at every pixel: [b, t, h, w, c] -> [b, t, h, w, f].

  pad: 'zeros' ('SAME' zero padding) or 'edge' (the first and last frames repeated,
  so that a filter whose taps sum to one leaves a static video static at its ends).
  """
  features: int
  kernel_size: int = 3
  init_scheme: str = 'lecun'  # 'lecun' | 'zeros' | 'identity' | 'he' | 'down' | 'up'
  pad: str = 'zeros'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    init = {'lecun': nn.initializers.lecun_normal(), 'zeros': nn.initializers.zeros,
            'identity': identity_temporal_kernel, 'he': nn.initializers.he_normal(),
            'down': temporal_kernel((0., .5, .5)),
            'up': temporal_kernel((.25, .5, .25))}[self.init_scheme]
    f = Fold(x.shape, 'time')
    h = f.fold(x)
    padding = 'SAME'
    if self.pad == 'edge':
      # Slices and a concatenate, not jnp.pad(mode='edge'): the same values, but the
      # gradient of the pad is much slower on XLA:CPU (benchmarks/profile_step.py).
      p, q = self.kernel_size // 2, self.kernel_size - 1 - self.kernel_size // 2
      h = jnp.concatenate([h[:, :1]] * p + [h] + [h[:, -1:]] * q, axis=1)
      padding = 'VALID'
    h = nn.Conv(self.features, (self.kernel_size,), padding=padding, dtype=self.dtype,
                name='conv', kernel_init=partitioned(init, TCONV),
                bias_init=partitioned(nn.initializers.zeros, ('conv_out',)))(h)
    return f.unfold(h)


def film(h, emb, name: str, dtype: Dtype, per_clip):
  """Feature-wise scale and shift of folded h [n, ..., c] from emb [b, d] (per_clip:
  the Fold's, [b, ...] -> [n, ...]), zero-initialised so that it starts as the identity."""
  c = h.shape[-1]
  ss = per_clip(dense(2 * c, name, dtype, zero=True)(nn.swish(emb)))
  scale, shift = jnp.split(ss.reshape((h.shape[0],) + (1,) * (h.ndim - 2) + (2 * c,)), 2, -1)
  return h * (1 + scale) + shift


class SpaceTimeConvBlock(nn.Module):
  """Factorized space-time block: 2-D spatial conv then 1-D temporal conv, residual.

  The temporal conv is the output projection and starts at zero, so at init the
  block is the identity. With ``emb`` ([b, d], the timestep and text embedding) the
  features entering the temporal conv are scaled and shifted by it (FiLM, zero
  init): without it the block cannot know the noise level or the prompted motion.
  """
  pad: str = 'zeros'  # the spatial conv's padding (SPATIAL_PADS)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb=None):
    c = x.shape[-1]
    f = Fold(x.shape, 'space')
    h = nn.swish(group_norm('norm_0', c, self.dtype)(f.fold(x)))
    h = conv2d(c, 'spatial_conv', self.dtype, pad=self.pad)(h)
    h = group_norm('norm_1', c, self.dtype)(h)
    if emb is not None:
      h = film(h, emb, 'emb_proj', self.dtype, f.per_clip)
    h = TemporalConv(c, init_scheme='zeros', dtype=self.dtype, name='temporal_conv')(
        f.unfold(nn.swish(h)))
    return x + h


class TemporalAttention(nn.Module):
  """Self-attention along time at every spatial position; zero-initialised output.

  With ``emb`` ([b, d]) its normalised input is scaled and shifted by the timestep
  and text embedding (FiLM, zero init), as in the SpaceTimeConvBlock. With ``text``
  ([b, L, d]) and its mask, a cross-attention from every (pixel, frame) to the text
  tokens follows (zero-initialised output). Its queries carry the frame position, so
  a word can act differently on different frames: what a motion word has to do, and
  what the pooled-text FiLM (the same for every frame) cannot do directly.
  """
  num_heads: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb=None, text=None, text_mask=None):
    b, t, hh, ww, c = x.shape
    heads, hd = self.num_heads, c // self.num_heads
    f = Fold(x.shape, 'time')
    h = f.fold(x)
    # Frame positions, so attention knows the order of frames.
    pos = timestep_embedding(jnp.arange(t) / 1000., c)[None].astype(self.dtype)
    y = layer_norm('norm', self.dtype)(h)
    if emb is not None:
      y = film(y, emb, 'emb_proj', self.dtype, f.per_clip)
    y = y + pos
    qkv = dense(3 * c, 'qkv', self.dtype, use_bias=False)(y)
    q, k, v = jnp.split(qkv.reshape(b * hh * ww, t, 3 * heads, hd), 3, axis=2)
    y = attention(q, k, v).reshape(b * hh * ww, t, c)
    h = h + dense(c, 'out', self.dtype, zero=True, names=DENSE_OUT)(y)
    if text is not None:
      # Every (pixel, frame) of a clip queries that clip's tokens: [b, hh*ww*t, c].
      y = layer_norm('text_query_norm', self.dtype)(h) + pos
      y = unmerge(y, f.merged, f.splits).reshape(b, hh * ww * t, c)
      q = dense(c, 'text_q', self.dtype, use_bias=False)(y)
      ctx = layer_norm('text_norm', self.dtype)(text)
      kv = dense(2 * c, 'text_kv', self.dtype, use_bias=False)(ctx)
      k, v = jnp.split(kv.reshape(b, -1, 2 * heads, hd), 2, axis=2)
      y = attention(q.reshape(b, hh * ww * t, heads, hd), k, v, text_mask)
      y = dense(c, 'text_out', self.dtype, zero=True, names=DENSE_OUT)(y.reshape(b, -1, c))
      h = h + merge(y.reshape(b, hh, ww, t, c), 3, f.splits)
    return f.unfold(h)


class LayoutBias(nn.Module):
  """A smooth space-time pattern chosen by the conditioning, added to the output:
  sum_j a_j(emb) phi_j(frame, row, column), where phi_j are the products of the first
  ``num_basis`` cosines (DCT-II) along each of the three axes and a_j [features] come
  from a zero-initialised projection of emb [b, d] (so it starts at zero).

  Near t = 1 the best prediction is the mean clip of the prompt, which depends on
  absolute position and frame ("moves left": on the right early, on the left late); a
  convolutional network sees absolute position only through its padding. This puts
  that mean one linear map away from the text (docs/choices.md, the layout bias).

  ``gain`` multiplies the projection's output: for Adam, whose steps have a set size
  in weight space, that makes this layer's output move ``gain`` times faster. Its
  gradient is a weak average (only the clips at the highest noise levels inform it),
  and at gain 1 it had moved by 1e-3 after 500 steps.
  """
  num_basis: int
  features: int
  gain: float = 10.
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, emb, shape):  # emb: [b, d], shape: (t, h, w) -> [b, t, h, w, f]
    m = self.num_basis
    cosines = lambda n: np.cos(np.pi * np.arange(m)[:, None] * (np.arange(n) + .5)[None] / n)
    basis = np.einsum('at,by,cx->abctyx', *map(cosines, shape)).reshape((m ** 3,) + shape)
    a = dense(m ** 3 * self.features, 'proj', self.dtype, zero=True)(nn.swish(emb))
    a = self.gain * a.reshape(emb.shape[0], m ** 3, self.features)
    return jnp.einsum('bjf,jtyx->btyxf', a, jnp.asarray(basis, self.dtype))


class Downsample(nn.Module):
  """Spatial stride-2 conv (the T2I part)."""
  pad: str = 'zeros'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    f = Fold(x.shape, 'space')
    return f.unfold(conv2d(x.shape[-1], 'conv', self.dtype, stride=2, pad=self.pad)(f.fold(x)))


class Upsample(nn.Module):
  """Nearest-neighbour x2 spatial upsampling followed by a conv (the T2I part)."""
  pad: str = 'zeros'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    f = Fold(x.shape, 'space')
    h = f.fold(x)
    h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
    return f.unfold(conv2d(x.shape[-1], 'conv', self.dtype, pad=self.pad)(h))


class TemporalDownsample(nn.Module):
  """Temporal conv then stride 2 in time: t -> t // 2. At init the conv is the
  identity (plain striding) or, with 'linear', the average of frames 2k and 2k+1."""
  init_scheme: str = 'identity'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    linear = self.init_scheme == 'linear'
    return TemporalConv(x.shape[-1], init_scheme='down' if linear else self.init_scheme,
                        pad='edge' if linear else 'zeros', dtype=self.dtype,
                        name='conv')(x)[:, ::2]


class TemporalUpsample(nn.Module):
  """Frame duplication then a temporal conv: t -> 2t. At init the conv is the identity
  (nearest neighbour) or, with 'linear', the filter (1/4, 1/2, 1/4), which makes the
  pair linear interpolation between neighbouring coarse frames."""
  init_scheme: str = 'identity'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = jnp.repeat(x, 2, axis=1)
    linear = self.init_scheme == 'linear'
    return TemporalConv(x.shape[-1], init_scheme='up' if linear else self.init_scheme,
                        pad='edge' if linear else 'zeros', dtype=self.dtype, name='conv')(x)


def pooled(text: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of the valid token embeddings: [b, L, d], [b, L] -> [b, d]."""
  m = mask.astype(text.dtype)[..., None]
  return (text * m).sum(1) / jnp.maximum(m.sum(1), 1.)
