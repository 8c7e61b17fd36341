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
  instrs = prof._parse_hlo(_HLO)
  layer = lambda n: prof._layer(instrs[n][1])
  kind = lambda n: prof._kind(n, instrs[n][0])
  # Metadata of its own, of its fused computation, of its operand's producer.
  assert layer('ynn_fusion.3') == 'temporal conv (SpaceTimeConvBlock)'
  assert layer('fusion.1') == 'ResBlock'
  assert layer('transpose_copy_fusion.2') == 'ResBlock'
  assert layer('a') == 'optimizer, EMA, noise, loss'  # nothing to go on
  assert kind('ynn_fusion.3') == 'matmul / convolution'
  assert kind('transpose_copy_fusion.2') == 'transpose / copy'
  assert kind('fusion.1') == 'elementwise / reduce / other'


def test_hlo_collectives_reads_each_op_once_with_its_result_bytes():
  hlo_module = _module('hlo')
  text = """
  %ag = bf16[4,8]{1,0} all-gather(%x), dimensions={0}, metadata={op_name="jit(f)/u/conv"}
  %a2a = (f32[2,3]{1,0}, f32[2,3]{1,0}) all-to-all(%a, %b), channel_id=2
  %ags = (f32[2]{0}, f32[8]{0}) all-gather-start(%y), channel_id=3
  %agd = f32[8]{0} all-gather-done(%ags)
  %ar = f32[] all-reduce(%z), to_apply=%add
  %cp = s32[5]{0} collective-permute(%w), source_target_pairs={{0,1}}
  %mul = f32[4,8]{1,0} multiply(%ag, %ag)
  """
  ops = hlo_module.hlo_collectives(text, with_ops=True)
  assert ops == [('all-gather', [('bf16', (4, 8))], 64, 'jit(f)/u/conv'),
                 ('all-to-all', [('f32', (2, 3)), ('f32', (2, 3))], 48, ''),
                 ('all-gather', [('f32', (8,))], 32, ''),
                 ('all-reduce', [('f32', ())], 4, ''),
                 ('collective-permute', [('s32', (5,))], 20, '')]
  assert hlo_module.collective_bytes(text) == {
      'all-gather': (2, 96), 'all-reduce': (1, 4), 'reduce-scatter': (0, 0),
      'all-to-all': (1, 48), 'collective-permute': (1, 20)}


def test_accelerator_check_runs_on_cpu_and_prints_every_figure():
  """benchmarks/accelerator.py, the prepared accelerator check, end to end on the
  smallest config."""
  import subprocess  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, 'tests'), ROOT]))
  run = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'benchmarks', 'accelerator.py'),
       f'--config={ROOT}/tests/small_config_file.py:stunet', '--shapes=2x8',
       '--steps=1', '--sample_steps=1', '--peak_tflops=1'],
      env=env, capture_output=True, text=True, timeout=600, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  out = run.stdout
  for line in ('device: cpu', 'shape 2 clips x 8 frames x 16x16', 'attention: XLA',
               'train step: ', 'MFU ', 'train step memory (XLA)', 'sampler: '):
    assert line in out, out
