"""Collectives of a compiled XLA program, read from its HLO text (for the benchmarks).

``paper_scale.py`` compiles a step for a large fake-device mesh and reports what each
device sends and receives; XLA has no API for that, so this parses the per-device HLO.
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


def hlo_collectives(hlo_text: str, with_ops: bool = False) -> list:
  """The collectives of a compiled (per-device) HLO module: (kind, result shapes, bytes)
  per op, and with ``with_ops`` the jax op it came from; the bytes are those of its
  result on one device (for an all-gather, what the device receives and keeps; for an
  all-to-all or a permute, what it exchanges). An op inside a loop (a lax.scan, e.g.
  gradient accumulation) is read once, not once per iteration."""
  out = []
  for line in hlo_text.splitlines():
    m = _OP.search(line)
    if not m or '-done(' in line:
      continue
    shapes = [(t, tuple(int(d) for d in dims.split(',') if d))
              for t, dims in _ARRAY.findall(m.group(1))]
    if ' ' + m.group(2) + '-start(' in line and len(shapes) > 1:
      # Async form (GPU/TPU): the result tuple also holds the operand (and contexts).
      shapes = shapes[-1:] if m.group(2) == 'all-gather' else shapes[1:2]
    nbytes = sum(_ITEMSIZE.get(t, 4) * int(np.prod(s)) for t, s in shapes)
    if with_ops:
      op = _OP_NAME.search(line)
      out.append((m.group(2), shapes, nbytes, op.group(1) if op else ''))
    else:
      out.append((m.group(2), shapes, nbytes))
  return out


def collective_bytes(hlo_text: str) -> dict:
  """kind -> (number of ops, bytes per device) of a compiled HLO module's collectives."""
  out = {k: [0, 0] for k in COLLECTIVES}
  for kind, _, nbytes in hlo_collectives(hlo_text):
    out[kind][0] += 1
    out[kind][1] += nbytes
  return {k: tuple(v) for k, v in out.items()}
