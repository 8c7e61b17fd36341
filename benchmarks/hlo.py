"""Collectives of a compiled XLA program, read from its HLO text (for the benchmarks).

``paper_scale.py`` compiles a step for a large fake-device mesh and reports what each
device sends and receives; XLA has no API for that, so this parses the per-device HLO:
each collective's result bytes, how many times it runs per execution of the program (an
op inside a ``while`` loop, e.g. the gradient-accumulation scan, runs once per
iteration: XLA states the trip count of loops it can bound), and which devices take
part (its replica groups), so that the bytes can be split by link.
"""

import re

import numpy as np

COLLECTIVES = ('all-gather', 'all-reduce', 'reduce-scatter', 'all-to-all',
               'collective-permute')
_ITEMSIZE = {'pred': 1, 's8': 1, 'u8': 1, 'bf16': 2, 'f16': 2, 's16': 2, 'u16': 2,
             'f32': 4, 's32': 4, 'u32': 4, 'f64': 8, 's64': 8, 'u64': 8}
_ARRAY = re.compile(r'\b(pred|[suf]\d+|bf16)\[([\d,]*)\]')
_OP = re.compile(r'= (.+?) (' + '|'.join(COLLECTIVES) + r')(?:-start)?\(')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COMPUTATION = re.compile(r'^(?:ENTRY )?%([^\s(]+) ')
_CALLEE = re.compile(r'\b(body|condition|calls|to_apply|true_computation|false_computation)'
                     r'=%([^\s,)}]+)')
_BRANCHES = re.compile(r'branch_computations=\{([^}]*)\}')
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
# Replica groups: explicit lists, the iota form [groups,size]<=[dims]T(perm), and the
# mesh form mesh['axis_0'=a,...][, device_ids=([dims]T(perm))] {'axis_i',...}.
_GROUPS_LIST = re.compile(r'replica_groups=\{(\{[\d,]*\}(?:,\{[\d,]*\})*)\}')
_GROUPS_IOTA = re.compile(r'replica_groups=\[(\d+),(\d+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?')
_PAIRS = re.compile(r'source_target_pairs=\{(\{[\d,]*\}(?:,\{[\d,]*\})*)\}')
_GROUPS_MESH = re.compile(r"replica_groups=mesh\[([^\]]*)\](?:, device_ids=\(\[([\d,]+)\]"
                          r"(?:T\(([\d,]+)\))?\))? \{([^}]*)\}")


def _ints(s: str) -> list:
  return [int(x) for x in s.split(',') if x]


def _iota(dims, perm=None) -> np.ndarray:
  ids = np.arange(int(np.prod(dims))).reshape(dims)
  return ids.transpose(perm) if perm else ids


def replica_groups(line: str):
  """The device groups of one collective's HLO line (a list of lists of partition ids),
  or None when the line states none this parser reads."""
  m = _GROUPS_LIST.search(line) or _PAIRS.search(line)  # a permute's pairs: groups of 2
  if m:
    return [_ints(g) for g in re.findall(r'\{([\d,]*)\}', m.group(1))]
  m = _GROUPS_IOTA.search(line)
  if m:
    ids = _iota(_ints(m.group(3)), _ints(m.group(4)) if m.group(4) else None)
    return ids.reshape(int(m.group(1)), int(m.group(2))).tolist()
  m = _GROUPS_MESH.search(line)
  if m:
    axes = re.findall(r"'([^']+)'=(\d+)", m.group(1))
    names, sizes = [a for a, _ in axes], [int(n) for _, n in axes]
    ids = (_iota(_ints(m.group(2)), _ints(m.group(3)) if m.group(3) else None).reshape(-1)
           if m.group(2) else np.arange(int(np.prod(sizes))))
    grouped = re.findall(r"'([^']+)'(\S*)", m.group(4))
    if any(rest for _, rest in grouped) or any(a not in names for a, _ in grouped):
      return None  # sub-axes ('axis_0':(1)2): not read
    keep = [names.index(a) for a, _ in grouped]
    other = [i for i in range(len(names)) if i not in keep]
    ids = ids.reshape(sizes).transpose(other + keep)
    return ids.reshape(-1, int(np.prod([sizes[i] for i in keep]))).tolist()
  return None


def link(groups, node_size: int) -> str:
  """'node' when every group lies within one block of ``node_size`` consecutive
  partition ids (one host of accelerators: the mesh's last axes), 'cross' when a group
  spans blocks, '?' when the groups are not known."""
  if groups is None:
    return '?'
  return 'node' if all(len({d // node_size for d in g}) <= 1 for g in groups) else 'cross'


def wire_bytes(kind: str, result_bytes: int, group_size: int) -> float:
  """Bytes one device sends over its links for a collective with this result (ring /
  pairwise algorithms): an all-gather receives the n-1 shards it lacks, an all-to-all
  exchanges n-1 of its n blocks, an all-reduce is a reduce-scatter and an all-gather
  (2 (n-1) / n of the buffer), a reduce-scatter sends n-1 result-sized blocks, a permute
  its whole buffer."""
  n = max(group_size, 1)
  if kind in ('all-gather', 'all-to-all'):
    return result_bytes * (n - 1) / n
  if kind == 'all-reduce':
    return 2 * result_bytes * (n - 1) / n
  if kind == 'reduce-scatter':
    return result_bytes * (n - 1)
  return float(result_bytes)


def _multiplicities(hlo_text: str):
  """{computation: times it runs per execution of the entry computation}, and the
  loops whose trip count XLA did not state (counted once)."""
  comps, order, current = {}, [], None
  for line in hlo_text.splitlines():
    m = _COMPUTATION.match(line)
    if m and line.rstrip().endswith('{'):
      current = m.group(1)
      comps[current] = []
      order.append((current, line.startswith('ENTRY')))
      continue
    if current is None or not line.startswith(' '):
      continue
    trip = _TRIP.search(line)
    for attr, callee in _CALLEE.findall(line):
      if attr == 'to_apply':
        continue  # a reducer: runs inside the op, holds no collectives
      times = int(trip.group(1)) if attr in ('body', 'condition') and trip else 1
      comps[current].append((callee, times, attr in ('body', 'condition') and not trip))
    b = _BRANCHES.search(line)
    if b:  # a conditional: each branch counted as if taken (an upper bound)
      comps[current] += [(c.strip().lstrip('%'), 1, False) for c in b.group(1).split(',')]
  entry = [name for name, is_entry in order if is_entry]
  mult = {name: 0 for name in comps}
  unknown = set()
  # HLO text lists callees before their callers: walk it backwards from the entry.
  for name, _ in reversed(order):
    if name in entry:
      mult[name] = 1
    for callee, times, unbounded in comps[name]:
      if callee in mult and mult[name]:
        mult[callee] += mult[name] * times
        if unbounded:
          unknown.add(callee)
  return comps, mult, unknown


def hlo_collectives(hlo_text: str, with_ops: bool = False, node_size: int = 0) -> list:
  """The collectives of a compiled (per-device) HLO module: (kind, result shapes, bytes,
  times) per op, and with ``with_ops`` the jax op it came from; the bytes are those of
  its result on one device (for an all-gather, what the device receives and keeps; for
  an all-to-all or a permute, what it exchanges), ``times`` how often it runs per step
  (loop trip counts applied; a loop of unknown trip count counts once). With
  ``node_size`` each tuple ends with the group size and the link ('node' within
  blocks of node_size consecutive partition ids, 'cross' otherwise, see ``link``)."""
  comps, mult, _ = _multiplicities(hlo_text)
  out, current = [], None
  for line in hlo_text.splitlines():
    c = _COMPUTATION.match(line)
    if c and line.rstrip().endswith('{'):
      current = c.group(1)
      continue
    m = _OP.search(line)
    if not m or '-done(' in line:
      continue
    shapes = [(t, tuple(int(d) for d in dims.split(',') if d))
              for t, dims in _ARRAY.findall(m.group(1))]
    if ' ' + m.group(2) + '-start(' in line and len(shapes) > 1:
      # Async form (GPU/TPU): the result tuple also holds the operand (and contexts).
      shapes = shapes[-1:] if m.group(2) == 'all-gather' else shapes[1:2]
    nbytes = sum(_ITEMSIZE.get(t, 4) * int(np.prod(s)) for t, s in shapes)
    times = mult.get(current, 1) if current in comps else 1
    row = (m.group(2), shapes, nbytes, times)
    if with_ops:
      op = _OP_NAME.search(line)
      row += (op.group(1) if op else '',)
    if node_size:
      groups = replica_groups(line)
      row += (len(groups[0]) if groups else 0, link(groups, node_size))
    out.append(row)
  return out


def unbounded_loops(hlo_text: str) -> set:
  """Computations run by a loop whose trip count XLA did not state (counted once)."""
  return _multiplicities(hlo_text)[2]


def collective_bytes(hlo_text: str) -> dict:
  """kind -> (number of ops run, bytes per device) of a compiled HLO module's
  collectives per execution (an op in a loop counts once per iteration)."""
  out = {k: [0, 0] for k in COLLECTIVES}
  for kind, _, nbytes, times in hlo_collectives(hlo_text):
    out[kind][0] += times
    out[kind][1] += nbytes * times
  return {k: tuple(v) for k, v in out.items()}


def collective_links(hlo_text: str, node_size: int) -> dict:
  """(kind, link) -> bytes one device sends per execution (``wire_bytes``, loop trip
  counts applied), link 'node' or 'cross' (``link``) or '?'."""
  out = {}
  for kind, _, nbytes, times, size, where in hlo_collectives(hlo_text, node_size=node_size):
    key = (kind, where)
    out[key] = out.get(key, 0.) + wire_bytes(kind, nbytes, size) * times
  return out
