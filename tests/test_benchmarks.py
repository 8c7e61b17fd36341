"""The benchmark scripts' own logic (their timings are measured, not tested)."""

import importlib.util
import os
import sys

import pytest

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
  assert ops == [('all-gather', [('bf16', (4, 8))], 64, 1, 'jit(f)/u/conv'),
                 ('all-to-all', [('f32', (2, 3)), ('f32', (2, 3))], 48, 1, ''),
                 ('all-gather', [('f32', (8,))], 32, 1, ''),
                 ('all-reduce', [('f32', ())], 4, 1, ''),
                 ('collective-permute', [('s32', (5,))], 20, 1, '')]
  assert hlo_module.collective_bytes(text) == {
      'all-gather': (2, 96), 'all-reduce': (1, 4), 'reduce-scatter': (0, 0),
      'all-to-all': (1, 48), 'collective-permute': (1, 20)}


def test_hlo_replica_groups_in_every_form_xla_prints():
  hlo_module = _module('hlo')
  groups = hlo_module.replica_groups
  assert groups('x = f32[4] all-reduce(y), replica_groups={{0,1},{2,3}}') == [[0, 1], [2, 3]]
  assert groups('replica_groups=[2,4]<=[8], dims') == [[0, 1, 2, 3], [4, 5, 6, 7]]
  assert groups('replica_groups=[4,2]<=[2,4]T(1,0), x') == [[0, 4], [1, 5], [2, 6], [3, 7]]
  # The mesh form: groups along the named axes of the device mesh (row-major ids).
  mesh = "replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_0'}, use_global_device_ids"
  assert groups(mesh) == [[0, 4], [1, 5], [2, 6], [3, 7]]
  mesh = "replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_1'}, x"
  assert groups(mesh) == [[0, 1, 2, 3], [4, 5, 6, 7]]
  mesh = "replica_groups=mesh['axis_0'=2,'axis_1'=4], device_ids=([4,2]T(1,0)) {'axis_1'}"
  assert groups(mesh) == [[0, 2, 4, 6], [1, 3, 5, 7]]
  assert groups('source_target_pairs={{0,1},{1,0}}') == [[0, 1], [1, 0]]
  assert groups('x = f32[4] all-reduce(y), to_apply=%add') is None
  assert hlo_module.link([[0, 1, 2, 3], [4, 5, 6, 7]], 4) == 'node'
  assert hlo_module.link([[0, 4], [1, 5]], 4) == 'cross'
  assert hlo_module.link(None, 4) == '?'
  assert hlo_module.wire_bytes('all-gather', 400, 4) == 300
  assert hlo_module.wire_bytes('all-reduce', 400, 4) == 600
  assert hlo_module.wire_bytes('reduce-scatter', 100, 4) == 300


def test_hlo_loop_trip_counts_multiply_the_collectives_of_nested_bodies():
  hlo_module = _module('hlo')
  text = """
%inner_body (p: f32[2]) -> f32[2] {
  %ag = f32[8]{0} all-gather(%p), replica_groups=[1,4]<=[4], dimensions={0}
}

%outer_body (p: f32[2]) -> f32[2] {
  %w = f32[2]{0} while(%p), condition=%c2, body=%inner_body, backend_config={"known_trip_count":{"n":"3"}}
  %ar = f32[2]{0} all-reduce(%w), replica_groups={{0,1},{2,3}}, to_apply=%add
}

%loose_body (p: f32[2]) -> f32[2] {
  %a2a = f32[2]{0} all-to-all(%p), replica_groups={{0,1,2,3}}
}

ENTRY %main (a: f32[2]) -> f32[2] {
  %w1 = f32[2]{0} while(%a), condition=%c1, body=%outer_body, backend_config={"known_trip_count":{"n":"4"}}
  %w2 = f32[2]{0} while(%w1), condition=%c3, body=%loose_body
  ROOT %r = f32[2]{0} all-reduce(%w2), replica_groups={{0,1,2,3}}, to_apply=%add
}
"""
  assert hlo_module.collective_bytes(text) == {
      'all-gather': (12, 12 * 32), 'all-reduce': (5, 4 * 8 + 8), 'reduce-scatter': (0, 0),
      'all-to-all': (1, 8), 'collective-permute': (0, 0)}
  assert hlo_module.unbounded_loops(text) == {'loose_body'}
  links = hlo_module.collective_links(text, node_size=2)
  assert links[('all-gather', 'cross')] == 12 * 32 * 3 / 4
  assert links[('all-reduce', 'node')] == 4 * 2 * 8 / 2
  assert links[('all-reduce', 'cross')] == 2 * 8 * 3 / 4


@pytest.mark.slow  # an optional path: not in the CI run (setup.cfg)
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
