"""Device mesh, logical-axis rules, sharded state creation and global batches.

Everything goes through a ``jax.sharding.Mesh`` even on one CPU device, so scaling
out is a change of ``config.mesh``, not of code.
"""

from typing import Any

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P

BATCH_AXES = ('data', 'fsdp')


def mesh_shape(shape, num_devices: int) -> tuple:
  """Fills one -1 entry with the remaining devices; checks the product."""
  shape = list(shape)
  if shape.count(-1) > 1:
    raise ValueError(f'config.mesh.shape={tuple(shape)} has more than one -1.')
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f'config.mesh.shape={tuple(shape)}: {num_devices} devices are not '
                       f'divisible by {known}.')
    shape[shape.index(-1)] = num_devices // known
  if int(np.prod(shape)) != num_devices:
    raise ValueError(f'config.mesh.shape={tuple(shape)} needs {int(np.prod(shape))} devices, '
                     f'but {num_devices} are available.')
  return tuple(shape)


def make_mesh(mesh_config, devices=None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_config.shape, len(devices))
  # Auto axes: XLA's partitioner propagates shardings from the annotated inputs,
  # parameters and activation constraints (the pjit model).
  axis_types = (jax.sharding.AxisType.Auto,) * len(shape)
  return jax.make_mesh(shape, tuple(mesh_config.axes), axis_types=axis_types,
                       devices=devices)


def rules(mesh_config) -> tuple:
  return tuple((k, tuple(v) if isinstance(v, (list, tuple)) else v)
               for k, v in mesh_config.rules)


def logical_shardings(abstract_boxed: Any, mesh, mesh_config) -> Any:
  """Shardings for a tree whose leaves may carry logical names (nn.Partitioned)."""
  specs = nn.get_partition_spec(abstract_boxed)
  return nn.logical_to_mesh_sharding(specs, mesh, rules(mesh_config))


def batch_sharding(mesh) -> NamedSharding:
  """Leading (batch) axis split over data x fsdp; the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def global_batch(local: dict, mesh) -> dict:
  """Host-local numpy arrays -> global jax arrays sharded along the batch axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}
