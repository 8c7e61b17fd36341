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


def check_fits(src_shapes: dict, dst_shapes: dict, src_name: str) -> None:
  """Refuses a source whose parameters do not fit this model: every source parameter
  must land on one of the same shape (or on the widened input convolution of the
  conditional STUNet), and every spatial parameter must come from the source.
  src_shapes, dst_shapes: {path tuple: shape}."""
  name = lambda k: '/'.join(map(str, k))
  missing = sorted(name(k) for k in set(dst_shapes) - set(src_shapes) if not is_temporal(k))
  extra = sorted(name(k) for k in set(src_shapes) - set(dst_shapes))
  if missing or extra:
    raise ValueError(
        f'{src_name} does not fit this model: this model has '
        f'{missing[:4]}{"..." if len(missing) > 4 else ""} that it lacks, it has '
        f'{extra[:4]}{"..." if len(extra) > 4 else ""} that this model lacks. Use the '
        f'same config.model widths/levels/attention as that run.')
  for k, shape in src_shapes.items():
    if tuple(shape) != tuple(dst_shapes[k]) and not _widened_input(k, shape, dst_shapes[k]):
      raise ValueError(f'{src_name} does not fit this model: {name(k)} has shape '
                       f'{tuple(shape)} there and {tuple(dst_shapes[k])} here; use that '
                       f'run\'s config.model.')


def inflate(src_params: Any, stunet_params: Any) -> Any:
  """Copies every parameter of a T2I or STUNet run into a freshly initialised STUNet.

  From a T2I run this is Lumiere's inflation: the spatial weights are copied and the
  temporal layers start at their init. From a STUNet run every parameter is copied
  and only temporal layers that it lacks (e.g. the text cross-attention of
  ``model.temporal_cond='film_xattn'``) start at their init. Into the conditional
  STUNet (``stunet.conditioning``) the first convolution is widened: its new input
  channels start at zero. ``check_fits`` says which parameter differs when the two
  runs' configs disagree.
  """
  src = traverse_util.flatten_dict(src_params)
  dst = traverse_util.flatten_dict(stunet_params)
  check_fits({k: v.shape for k, v in src.items()}, {k: v.shape for k, v in dst.items()},
             'the checkpoint of config.train.init_from')
  for k, v in src.items():
    if _widened_input(k, v.shape, dst[k].shape):
      # The conditional STUNet's first conv: its extra input channels (the conditioning
      # video and mask, stunet.conditioning) start at zero, so it begins as the source.
      dst[k] = jnp.zeros(dst[k].shape, v.dtype).at[..., :v.shape[-2], :].set(v)
    else:
      dst[k] = v
  return traverse_util.unflatten_dict(dst)
