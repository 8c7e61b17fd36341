"""The text-to-image U-Net and its space-time inflation, the STUNet, as one module.

With ``temporal=False`` this is a T2I U-Net applied to each frame (a video of one
frame is an image). With ``temporal=True`` it is Lumiere's STUNet:
- a factorized space-time block after each spatial block at every level but the
  coarsest;
- after every spatial downsample a temporal downsample, before every spatial
  upsample's output a temporal upsample (time and space shrink together);
- a stack of temporal-attention blocks after each spatial attention block at the
  coarsest level only, where time is most compressed.
The spatial parameters have the same names in both forms, so a T2I checkpoint loads
into the STUNet unchanged (``stunet.inflate``); every added parameter lives in a
module whose name starts with ``temporal``.

The text encoder and the U-Net are wrapped in ``TextToVideo``, whose methods
``encode_text`` and ``denoise`` are applied separately, so the sampler encodes the
prompt once and not at every step.
"""

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from stunet import folding
from stunet import layers as L
from stunet.text import TextEncoder


# Rematerialisation (gradient checkpointing) of every block, by what the forward pass
# keeps for the backward one: 'full' keeps only block inputs, 'dots' also the outputs
# of matmuls and convolutions, 'dots_no_batch' only those of weight matmuls.
REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.dots_saveable,
    'dots_no_batch': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


# How the temporal layers are conditioned (config.model.temporal_cond; UNet.temporal_cond).
TEMPORAL_COND = ('none', 'film', 'film_xattn')


def temporal_factor(channel_mult, temporal: bool, temporal_resample: bool) -> int:
  """Frames must be divisible by this: one temporal halving per resolution change of a
  STUNet that resamples time (1 for a T2I U-Net or an SSR)."""
  return 2 ** (len(channel_mult) - 1) if temporal and temporal_resample else 1


def check_frames(num_frames: int, factor: int, what: str, fix: str) -> None:
  """Refuses a clip (or window) length that the temporal halvings do not divide."""
  if num_frames % factor:
    raise ValueError(f'{what}={num_frames} is not divisible by {factor}: the STUNet halves '
                     f'time {factor.bit_length() - 1} times. Use a multiple of {factor}, '
                     f'{fix}.')


class UNet(nn.Module):
  """Denoiser: (z_t [b, t, h, w, c_in], t [b], text [b, L, d], mask [b, L]) -> [b, t, h, w, c_out].

  ``cond_t`` [b], optional: a second noise level embedded like t and added to the
  timestep embedding (the SSR's low-res augmentation level, ``stunet.ssr``).
  """
  channels: int = 32
  channel_mult: Sequence[int] = (1, 2, 2)
  num_res_blocks: int = 1
  attn_levels: Sequence[int] = (2,)          # levels with spatial self-attention
  cross_attn_levels: Sequence[int] = (1, 2)  # levels with cross-attention to text
  num_heads: int = 4
  out_channels: int = 3
  temporal: bool = False                     # False: T2I U-Net; True: STUNet
  num_temporal_attn: int = 1                 # temporal attention blocks per spatial one
  temporal_resample: bool = True             # STUNet: halve/double time with space (SSR: no)
  temporal_resample_init: str = 'identity'   # 'identity' (paper), 'linear' or 'he' (ablation)
  # 'film': the temporal blocks are scaled/shifted by the timestep + text embedding
  # (with a text projection of their own); 'film_xattn': also a cross-attention from
  # the temporal attention to the text tokens; 'none': they see only the features.
  temporal_cond: str = 'film'
  # > 0: a smooth space-time pattern chosen by the timestep + text embedding is added
  # to the output (layers.LayoutBias, this many cosines per axis); STUNet only.
  layout_basis: int = 0
  # Absolute position at the input: the row and column (and, in the STUNet, the frame)
  # of every pixel in [-1, 1], each through a zero-initialised 1x1 projection added to
  # the first convolution's output. The frame's projection is a temporal layer.
  coord_channels: bool = False
  # What the spatial convolutions see past the frame's edges: 'zeros', or 'circular'
  # (the opposite edge: the frame as a torus; layers.SPATIAL_PADS).
  spatial_pad: str = 'zeros'
  remat: str = 'none'                        # rematerialisation policy, see REMAT_POLICIES
  dtype: Any = jnp.float32

  @property
  def num_levels(self) -> int:
    return len(self.channel_mult)

  @property
  def temporal_factor(self) -> int:
    """Frames must be divisible by this (``temporal_factor``)."""
    return temporal_factor(self.channel_mult, self.temporal, self.temporal_resample)

  def _block(self, cls, **kw):
    if self.remat != 'none':
      cls = nn.remat(cls, policy=REMAT_POLICIES[self.remat])
    return cls(dtype=self.dtype, **kw)

  def _level(self, h, emb, text, mask, level: int, prefix: str, features: int,
             temporal_emb=None):
    """One resolution step: ResBlock, attention, then the temporal layers."""
    coarsest = level == self.num_levels - 1
    h = self._block(L.ResBlock, features=features, pad=self.spatial_pad,
                    name=f'{prefix}_res')(h, emb)
    self_attn, cross_attn = level in self.attn_levels, level in self.cross_attn_levels
    if self_attn or cross_attn:
      h = self._block(L.SpatialAttention, num_heads=self.num_heads, self_attn=self_attn,
                      cross_attn=cross_attn, name=f'{prefix}_attn')(h, text, mask)
    if self.temporal and coarsest:
      for j in range(self.num_temporal_attn):
        tokens = (text, mask) if self.temporal_cond == 'film_xattn' else (None, None)
        h = self._block(L.TemporalAttention, num_heads=self.num_heads,
                        name=f'{prefix}_temporal_attn_{j}')(h, temporal_emb, *tokens)
    elif self.temporal:
      h = self._block(L.SpaceTimeConvBlock, pad=self.spatial_pad,
                      name=f'{prefix}_temporal_conv')(h, temporal_emb)
    return h

  def _coordinates(self, shape):
    """Zero-initialised projections of the pixel's (row, column) and frame position,
    [1, t, h, w, channels] (broadcast over the batch)."""
    _, t, hh, ww, _ = shape
    axis = lambda n: jnp.linspace(-1., 1., n) if n > 1 else jnp.zeros((1,))
    rows, cols = jnp.meshgrid(axis(hh), axis(ww), indexing='ij')
    space = jnp.stack([rows, cols], -1).astype(self.dtype)[None, None]  # [1, 1, h, w, 2]
    out = L.dense(self.channels, 'coords_in', self.dtype, zero=True)(space)
    if self.temporal:
      frames = axis(t).astype(self.dtype).reshape(1, t, 1, 1, 1)
      out = out + L.dense(self.channels, 'temporal_frame_in', self.dtype, zero=True)(frames)
    return out

  @nn.compact
  def __call__(self, x, t, text, text_mask, cond_t=None):
    x = x.astype(self.dtype)
    text = text.astype(self.dtype)
    emb_dim = 4 * self.channels
    emb = L.timestep_embedding(t, self.channels)
    emb = L.dense(emb_dim, 'time_mlp_0', self.dtype)(emb)
    emb = L.dense(emb_dim, 'time_mlp_1', self.dtype)(nn.swish(emb))
    emb = emb + L.dense(emb_dim, 'text_pool', self.dtype)(L.pooled(text, text_mask))
    if cond_t is not None:
      c = L.dense(emb_dim, 'aug_mlp_0', self.dtype)(L.timestep_embedding(cond_t, self.channels))
      emb = emb + L.dense(emb_dim, 'aug_mlp_1', self.dtype)(nn.swish(c))
    temporal_emb = None
    if self.temporal and self.temporal_cond != 'none':
      # The frozen T2I's text pooling learned single frames, where words of motion
      # carry no information: the temporal layers get a text projection of their own.
      temporal_emb = emb + L.dense(emb_dim, 'temporal_text_pool', self.dtype)(
          L.pooled(text, text_mask))
    lvl = lambda h, i, prefix, features: self._level(
        h, emb, text, text_mask, i, prefix, features, temporal_emb)

    f = folding.Fold(x.shape, 'space')
    h = f.unfold(L.conv2d(self.channels, 'conv_in', self.dtype, pad=self.spatial_pad)(
        f.fold(x)))
    if self.coord_channels:
      h = h + self._coordinates(x.shape)
    skips = [h]
    for i, mult in enumerate(self.channel_mult):
      for r in range(self.num_res_blocks):
        h = lvl(h, i, f'down_{i}_{r}', self.channels * mult)
        skips.append(h)
      if i < self.num_levels - 1:
        h = L.Downsample(pad=self.spatial_pad, dtype=self.dtype, name=f'down_{i}_resize')(h)
        if self.temporal and self.temporal_resample:
          h = L.TemporalDownsample(init_scheme=self.temporal_resample_init, dtype=self.dtype,
                                   name=f'down_{i}_temporal_resize')(h)
        skips.append(h)

    top = self.num_levels - 1
    h = lvl(h, top, 'mid_0', self.channels * self.channel_mult[-1])
    h = lvl(h, top, 'mid_1', self.channels * self.channel_mult[-1])

    for i in reversed(range(self.num_levels)):
      for r in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = lvl(h, i, f'up_{i}_{r}', self.channels * self.channel_mult[i])
      if i > 0:
        h = L.Upsample(pad=self.spatial_pad, dtype=self.dtype, name=f'up_{i}_resize')(h)
        if self.temporal and self.temporal_resample:
          h = L.TemporalUpsample(init_scheme=self.temporal_resample_init, dtype=self.dtype,
                                 name=f'up_{i}_temporal_resize')(h)
    assert not skips

    f = folding.Fold(h.shape, 'space')
    h = nn.swish(L.group_norm('norm_out', h.shape[-1], self.dtype)(f.fold(h)))
    h = f.unfold(L.conv2d(self.out_channels, 'conv_out', self.dtype, zero=True,
                          pad=self.spatial_pad)(h))
    if self.temporal and self.layout_basis:
      h = h + L.LayoutBias(self.layout_basis, self.out_channels, dtype=self.dtype,
                           name='temporal_layout_bias')(
                               emb if temporal_emb is None else temporal_emb, h.shape[1:4])
    return h.astype(jnp.float32)


class TextToVideo(nn.Module):
  """The text encoder and the denoising U-Net, applied through separate methods."""
  unet: UNet
  text_encoder: TextEncoder

  def encode_text(self, tokens, mask):
    """tokens, mask: [b, L] -> embeddings [b, L, d]."""
    return self.text_encoder(tokens, mask)

  def denoise(self, z, t, text, text_mask):
    """The v-prediction of noisy videos z at times t [b], given text embeddings."""
    return self.unet(z, t, text, text_mask)

  def __call__(self, z, t, tokens, mask):
    return self.denoise(z, t, self.encode_text(tokens, mask), mask)
