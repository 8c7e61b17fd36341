"""T2I parameters -> STUNet parameters, and which of them Lumiere adds.

The STUNet's spatial modules have the T2I U-Net's names; everything Lumiere adds
lives in a module whose name starts with ``temporal`` (e.g.
``down_0_0_temporal_conv``, ``mid_0_temporal_attn_0``, ``up_1_temporal_resize``).
"""

from typing import Any

from flax import traverse_util


def is_temporal(path: tuple) -> bool:
  """True for a parameter added by the inflation (path of dict keys)."""
  return any('temporal' in str(k) for k in path)


def inflate(t2i_params: Any, stunet_params: Any) -> Any:
  """Copies every T2I parameter into the freshly initialised STUNet tree.

  Every non-temporal STUNet parameter must come from the T2I tree with the same
  shape, and every T2I parameter must land somewhere; otherwise the configs of the
  two stages disagree and we say which parameter differs.
  """
  src = traverse_util.flatten_dict(t2i_params)
  dst = traverse_util.flatten_dict(stunet_params)
  spatial = {k for k in dst if not is_temporal(k)}
  missing = sorted('/'.join(map(str, k)) for k in spatial - set(src))
  extra = sorted('/'.join(map(str, k)) for k in set(src) - spatial)
  if missing or extra:
    raise ValueError(
        'The T2I checkpoint does not match the STUNet config: '
        f'missing {missing[:4]}{"..." if len(missing) > 4 else ""}, '
        f'unexpected {extra[:4]}{"..." if len(extra) > 4 else ""}. Use the same '
        'config.model widths/levels/attention as the T2I run.')
  for k in spatial:
    if src[k].shape != dst[k].shape:
      raise ValueError(f'{"/".join(map(str, k))}: T2I shape {src[k].shape} vs STUNet '
                       f'{dst[k].shape}; use the T2I run\'s config.model.')
    dst[k] = src[k]
  return traverse_util.unflatten_dict(dst)
