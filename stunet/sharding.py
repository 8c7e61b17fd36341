"""Device mesh, parameter shardings (logical rules + FSDP), and global batches.

Everything goes through a ``jax.sharding.Mesh`` even on one CPU device, so scaling
out is a change of ``config.mesh``, not of code. A parameter's sharding comes from
its logical axis names (``stunet.layers``) mapped through ``config.mesh.rules``; then
every parameter with at least ``config.mesh.fsdp_min_size`` elements is also split
along the ``fsdp`` axis (ZeRO-3 / FSDP), and so are its optimizer state and EMA,
which share its logical names.
"""

from typing import Any

import jax
import numpy as np
from flax import linen as nn
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec as P

BATCH_AXES = ('data', 'fsdp')
# ZeRO-3: large parameters (and their EMA and Adam moments) are split over these. The
# devices of the context axis share one clip, so they also share its parameters.
FSDP_AXES = ('fsdp', 'context')
MODEL_AXES = ('fsdp', 'tensor', 'context')  # axes that split parameters


def clips_per_step(train_config) -> int:
  """Clips in one global batch: batch_size, or for the t2i stage (frames sampled from
  clips) batch_size // frames_per_clip."""
  t = train_config
  return t.batch_size // t.frames_per_clip if t.stage == 't2i' else t.batch_size


def mesh_shape(shape, num_devices: int, num_axes: int = 0) -> tuple:
  """Fills one -1 entry with the remaining devices; checks the product. A shape shorter
  than ``num_axes`` gets size 1 on the axes it leaves out ((2, 4) is (2, 4, 1, 1))."""
  shape = list(shape)
  if num_axes and len(shape) > num_axes:
    raise ValueError(f'config.mesh.shape={tuple(shape)} has more entries than the '
                     f'{num_axes} axes of config.mesh.axes.')
  shape += [1] * max(0, num_axes - len(shape))
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


def check_batch(config, num_devices: int) -> None:
  """Refuses, before anything is built, a batch that the data-parallel devices
  (data x fsdp) cannot split evenly, naming the config fields to change."""
  t = config.train
  shape = dict(zip(config.mesh.axes, mesh_shape(config.mesh.shape, num_devices,
                                                len(config.mesh.axes))))
  context = shape.get('context', 1)
  local = num_devices // jax.process_count()
  if context > 1 and local % context:
    raise ValueError(
        f'config.mesh.shape={tuple(shape.values())}: a context axis of {context} spans '
        f'processes ({local} devices each); the devices that share a clip must be on one '
        f'host. Use a context size that divides {local}.')
  split = int(np.prod([shape.get(a, 1) for a in BATCH_AXES]))
  clips = clips_per_step(t)
  for n, what in ((clips, 'clips per step'),
                  (t.batch_size // t.grad_accum, 'examples per micro-batch')):
    if n % split:
      raise ValueError(
          f'config.train.batch_size={t.batch_size} gives {n} {what}, which the {split} '
          f'data-parallel devices (data x fsdp of config.mesh.shape={tuple(shape.values())}'
          f' on {num_devices} devices) cannot split evenly. Use a batch_size (and '
          f'grad_accum) giving a multiple of {split}, or split each clip over devices '
          f'on the context axis (e.g. config.mesh.shape=(1, 1, 1, {num_devices})).')


def make_mesh(mesh_config, devices=None) -> jax.sharding.Mesh:
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_config.shape, len(devices), len(mesh_config.axes))
  # Auto axes: XLA's partitioner propagates shardings from the annotated inputs,
  # parameters and activation constraints (the pjit model).
  axis_types = (jax.sharding.AxisType.Auto,) * len(shape)
  return jax.make_mesh(shape, tuple(mesh_config.axes), axis_types=axis_types,
                       devices=devices)


def rules(mesh_config) -> tuple:
  return tuple((k, tuple(v) if isinstance(v, (list, tuple)) else v)
               for k, v in mesh_config.rules)


def _axes(entry) -> tuple:
  return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def param_spec(shape, logical, mesh, mesh_config) -> P:
  """Mesh PartitionSpec of one array: its logical names through the rules (keeping
  only mesh axes that divide the dimension), then FSDP on its largest free dimension."""
  if not shape:
    return P()
  if logical:
    entries = list(nn.logical_to_mesh_axes(logical, rules(mesh_config)))
  else:
    entries = [None] * len(shape)
  dims = []
  for n, e in zip(shape, entries):
    axes = tuple(a for a in _axes(e) if mesh.shape[a] > 1)
    dims.append(axes if axes and n % int(np.prod([mesh.shape[a] for a in axes])) == 0 else ())
  used = {a for d in dims for a in d}
  fsdp = tuple(a for a in FSDP_AXES if mesh.shape.get(a, 1) > 1 and a not in used)
  if fsdp and int(np.prod(shape)) >= mesh_config.fsdp_min_size:
    # All the FSDP axes on the largest dimension they divide, else as many as divide.
    for axes in (fsdp,) + tuple((a,) for a in fsdp):
      found = False
      for i in sorted(range(len(shape)), key=lambda i: -shape[i]):
        split = int(np.prod([mesh.shape[a] for a in dims[i] + axes]))
        if shape[i] % split == 0:
          dims[i] = axes + dims[i]
          found = True
          break
      if found:
        break
  return P(*[None if not d else d[0] if len(d) == 1 else d for d in dims])


def state_shardings(abstract_boxed: Any, mesh, mesh_config) -> Any:
  """NamedShardings for a tree whose leaves may carry logical names (nn.Partitioned)."""
  def one(leaf):
    names = leaf.names if isinstance(leaf, nn.Partitioned) else None
    value = leaf.unbox() if isinstance(leaf, nn.Partitioned) else leaf
    return NamedSharding(mesh, param_spec(tuple(value.shape), names, mesh, mesh_config))
  return jax.tree.map(one, abstract_boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def shard_bytes(abstract: Any) -> tuple[int, int]:
  """(total bytes, bytes per device) of a tree of ShapeDtypeStructs with shardings."""
  total = per_device = 0
  for a in jax.tree.leaves(abstract):
    itemsize = np.dtype(a.dtype).itemsize
    total += int(np.prod(a.shape)) * itemsize
    per_device += int(np.prod(a.sharding.shard_shape(a.shape))) * itemsize
  return total, per_device


def replicated_params(abstract_params: Any, mesh) -> dict:
  """'path' -> bytes of each parameter not split over any model axis (fsdp, tensor)."""
  out = {}
  flat = traverse_util.flatten_dict(abstract_params, sep='/')
  for k, a in flat.items():
    spec_axes = {ax for e in a.sharding.spec for ax in _axes(e)}
    if not spec_axes & {ax for ax in MODEL_AXES if mesh.shape.get(ax, 1) > 1}:
      out[k] = int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize
  return out


def check_replication(abstract_params: Any, mesh, mesh_config) -> float:
  """Fraction of parameter bytes replicated over the model axes; refuses too much."""
  if all(mesh.shape.get(ax, 1) == 1 for ax in MODEL_AXES):
    return 1.0  # pure data parallelism: replication is the user's choice
  total, _ = shard_bytes(abstract_params)
  rep = replicated_params(abstract_params, mesh)
  frac = sum(rep.values()) / max(total, 1)
  if frac > mesh_config.max_replicated_fraction:
    worst = ', '.join(f'{k} ({v / 2**20:.1f} MiB)' for k, v in
                      sorted(rep.items(), key=lambda kv: -kv[1])[:3])
    raise ValueError(
        f'{frac:.0%} of the parameter bytes are replicated on every device of the '
        f'fsdp x tensor x context axes (limit config.mesh.max_replicated_fraction='
        f'{mesh_config.max_replicated_fraction}); the largest: {worst}. Lower '
        f'config.mesh.fsdp_min_size (now {mesh_config.fsdp_min_size} elements) so they '
        f'are split, or use a mesh with fsdp=tensor=context=1 for pure data parallelism.')
  return frac


def batch_sharding(mesh) -> NamedSharding:
  """Leading (batch) axis split over data x fsdp; the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def global_batch(local: dict, mesh) -> dict:
  """Host-local numpy arrays -> global jax arrays sharded along the batch axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}
