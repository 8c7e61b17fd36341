"""The benchmark scripts' own logic (their timings are measured, not tested)."""

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_HLO = '''
%fused_computation.1 (p: f32[2]) -> f32[2] {
  %p = f32[2]{0} parameter(0)
  ROOT %m = f32[2]{0} multiply(%p, %p), metadata={op_name="jit(f)/u/up_0_0_res/conv_0/mul"}
}

ENTRY %main (a: f32[2]) -> f32[2] {
  %a = f32[2]{0} parameter(0)
  %fusion.1 = f32[2]{0} fusion(%a), kind=kLoop, calls=%fused_computation.1
  %transpose_copy_fusion.2 = f32[2]{0} fusion(%fusion.1), kind=kLoop, calls=%fused_computation.9
  ROOT %ynn_fusion.3 = f32[2]{0} fusion(%transpose_copy_fusion.2), kind=kCustom, calls=%fc.3, metadata={op_name="jit(f)/u/down_1_0_temporal_conv/temporal_conv/conv/conv_general_dilated"}
}
'''


def _module(name):
  sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))  # as when run: beside the script
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'benchmarks',
                                                                   f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_profile_step_attributes_instructions_to_layers_and_kinds():
  prof = _module('profile_step')
  instrs = prof._parse_hlo(_HLO)  # pylint: disable=protected-access
  layer = lambda n: prof._layer(instrs[n][1])  # pylint: disable=protected-access
  kind = lambda n: prof._kind(n, instrs[n][0])  # pylint: disable=protected-access
  # Metadata of its own, of its fused computation, of its operand's producer.
  assert layer('ynn_fusion.3') == 'temporal conv (SpaceTimeConvBlock)'
  assert layer('fusion.1') == 'ResBlock'
  assert layer('transpose_copy_fusion.2') == 'ResBlock'
  assert layer('a') == 'optimizer, EMA, noise, loss'  # nothing to go on
  assert kind('ynn_fusion.3') == 'matmul / convolution'
  assert kind('transpose_copy_fusion.2') == 'transpose / copy'
  assert kind('fusion.1') == 'elementwise / reduce / other'
