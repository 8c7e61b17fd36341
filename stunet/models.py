"""The model factory: ``config.model`` -> the Flax module (the T2I U-Net, the STUNet, the
SSR or the conditional STUNet). The one place that knows every model class, so that
they need not know each other (``ssr`` and ``conditioning`` build on ``unet``; ``unet``
imports neither).

The U-Net and the text encoder are built from their config sections by name: a field of
``config.model`` (``config.model.text``) that is also a field of ``unet.UNet``
(``text.TextEncoder``) is passed to it, so a new module field needs only its config
default.
"""

import dataclasses

import jax.numpy as jnp

from stunet import unet as unet_lib
from stunet.conditioning import Conditional
from stunet.ssr import SuperResolution
from stunet.text import TextEncoder

# Compute dtypes (config.model.dtype); parameters and optimizer state stay float32.
DTYPES = ('float32', 'bfloat16', 'float16')


def _fields(module_cls, section) -> dict:
  """The entries of a config section that are fields of ``module_cls`` (not dtype)."""
  names = {f.name for f in dataclasses.fields(module_cls)} - {'parent', 'name', 'dtype'}
  return {k: tuple(v) if isinstance(v, list) else v for k, v in section.items()
          if k in names}


def build_model(model_config) -> unet_lib.TextToVideo:
  """TextToVideo, or its SSR subclass when ``model.lowres_size`` > 0, or its conditional
  one (``stunet.conditioning``) when ``model.conditional``, from ``config.model``."""
  m = model_config
  dtype = jnp.dtype(m.dtype)
  unet = unet_lib.UNet(**_fields(unet_lib.UNet, m), dtype=dtype)
  text = TextEncoder(**_fields(TextEncoder, m.text), dtype=dtype)
  if m.conditional:
    return Conditional(unet=unet, text_encoder=text)
  if m.lowres_size:
    return SuperResolution(unet=unet, text_encoder=text, lowres_size=m.lowres_size,
                           residual=m.lowres_residual)
  return unet_lib.TextToVideo(unet=unet, text_encoder=text)
