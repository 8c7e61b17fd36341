"""stunet: Lumiere's Space-Time U-Net in JAX/Flax.

XLA:CPU options that every program of the project runs with (set here, before any
program initialises a JAX backend; a user's own XLA_FLAGS come first and win): the
3x3 convolutions run through XLA's Eigen path instead of YNNPACK, which on this
project's shapes (16-128 channels) is up to twice as fast forward and for the input
gradient, and faster for the weight gradient (benchmarks/conv_paths.py). The option
names one of XLA:CPU's experimental flags: it exists in the jaxlib this project pins.
"""

import os as _os

_CPU_FLAGS = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
if 'xla_cpu_experimental_ynn_fusion_type' not in _os.environ.get('XLA_FLAGS', ''):
  _os.environ['XLA_FLAGS'] = f"{_os.environ.get('XLA_FLAGS', '')} {_CPU_FLAGS}".strip()
