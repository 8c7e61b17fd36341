"""The model factory: ``config.model`` -> the Flax module (the T2I U-Net, the STUNet, the
SSR or the conditional STUNet). The one place that knows every model class, so that
they need not know each other (``ssr`` and ``conditioning`` build on ``unet``; ``unet``
imports neither)."""

import jax.numpy as jnp

from stunet import unet as unet_lib
from stunet.conditioning import Conditional
from stunet.ssr import SuperResolution
from stunet.text import TextEncoder


def build_model(model_config) -> unet_lib.TextToVideo:
  """TextToVideo, or its SSR subclass when ``model.lowres_size`` > 0, or its conditional
  one (``stunet.conditioning``) when ``model.conditional``, from ``config.model``."""
  m = model_config
  dtype = jnp.dtype(m.dtype)
  unet = unet_lib.UNet(
      channels=m.channels, channel_mult=tuple(m.channel_mult),
      num_res_blocks=m.num_res_blocks, attn_levels=tuple(m.attn_levels),
      cross_attn_levels=tuple(m.cross_attn_levels), num_heads=m.num_heads,
      out_channels=3, temporal=m.temporal, num_temporal_attn=m.num_temporal_attn,
      temporal_resample=m.temporal_resample,
      temporal_resample_init=m.temporal_resample_init,
      temporal_cond=m.temporal_cond, layout_basis=m.layout_basis,
      coord_channels=m.coord_channels,
      remat=unet_lib.remat_policy_name(m.remat), dtype=dtype)
  t = m.text
  text = TextEncoder(vocab_size=t.vocab_size, width=t.width, num_layers=t.num_layers,
                     num_heads=t.num_heads, mlp_dim=t.mlp_dim, head_dim=t.head_dim,
                     num_buckets=t.num_buckets, max_distance=t.max_distance, eps=t.eps,
                     dtype=dtype)
  if m.get('conditional', False):
    return Conditional(unet=unet, text_encoder=text)
  if m.lowres_size:
    return SuperResolution(unet=unet, text_encoder=text, lowres_size=m.lowres_size)
  return unet_lib.TextToVideo(unet=unet, text_encoder=text)
