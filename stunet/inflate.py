"""T2I (or STUNet) parameters -> STUNet parameters, and which of them Lumiere adds.

The STUNet's spatial modules have the T2I U-Net's names; everything Lumiere adds
lives in a module whose name starts with ``temporal`` (e.g.
``down_0_0_temporal_conv``, ``mid_0_temporal_attn_0``, ``up_1_temporal_resize``).
"""

from typing import Any

from flax import traverse_util
import jax.numpy as jnp


def is_temporal(path: tuple) -> bool:
  """True for a parameter added by the inflation (path of dict keys)."""
  return any('temporal' in str(k) for k in path)


def _widened_input(path: tuple, src_shape: tuple, dst_shape: tuple) -> bool:
  """Whether dst is src's input convolution with more input channels."""
  return (len(path) >= 2 and tuple(map(str, path[-2:])) == ('conv_in', 'kernel')
          and len(src_shape) == len(dst_shape) == 4 and src_shape[:2] == dst_shape[:2]
          and src_shape[3] == dst_shape[3] and src_shape[2] < dst_shape[2])


def inflate(src_params: Any, stunet_params: Any) -> Any:
  """Copies every parameter of a T2I or STUNet run into a freshly initialised STUNet.

  From a T2I run this is Lumiere's inflation: the spatial weights are copied and the
  temporal layers start at their init. From a STUNet run every parameter is copied
  and only temporal layers that it lacks (e.g. the text cross-attention of
  ``model.temporal_cond='film_xattn'``) start at their init. Into the conditional
  STUNet (``stunet.conditioning``) the first convolution is widened: its new input
  channels start at zero. Every source parameter must land on one of the same shape,
  and every spatial parameter must come from the source; otherwise the configs of the
  two runs disagree and we say which parameter differs.
  """
  src = traverse_util.flatten_dict(src_params)
  dst = traverse_util.flatten_dict(stunet_params)
  name = lambda k: '/'.join(map(str, k))
  missing = sorted(name(k) for k in set(dst) - set(src) if not is_temporal(k))
  extra = sorted(name(k) for k in set(src) - set(dst))
  if missing or extra:
    raise ValueError(
        f'The checkpoint of config.train.init_from does not match this config: '
        f'missing {missing[:4]}{"..." if len(missing) > 4 else ""}, '
        f'unexpected {extra[:4]}{"..." if len(extra) > 4 else ""}. Use the same '
        'config.model widths/levels/attention as that run.')
  for k, v in src.items():
    if _widened_input(k, v.shape, dst[k].shape):
      # The conditional STUNet's first conv: its extra input channels (the conditioning
      # video and mask, stunet.conditioning) start at zero, so it begins as the source.
      dst[k] = jnp.zeros(dst[k].shape, v.dtype).at[..., :v.shape[-2], :].set(v)
      continue
    if v.shape != dst[k].shape:
      raise ValueError(f'{name(k)}: shape {v.shape} in config.train.init_from vs '
                       f'{dst[k].shape} here; use that run\'s config.model.')
    dst[k] = v
  return traverse_util.unflatten_dict(dst)
