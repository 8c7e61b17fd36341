"""Configuration: every config file validates, and every rule of stunet/config.py refuses
what it should with a message that names the field (the one place rules are checked)."""

import ast
import json
import math
import re

import pytest

from configs import paper
from configs import reproduce
from configs import ssr as ssr_config
from configs import tiny
from conftest import small_config
from stunet import config as config_lib
from stunet import sharding
from stunet import text as text_lib

TINY_STAGES = ('t2i', 'stunet', 'scratch', 'conditional', 'style', 'stationary', 'keyframes',
               'tsr')


def _tiny(stage='scratch'):
  cfg = tiny.get_config(f'stage={stage}')
  if not cfg.train.init_from and stage in ('stunet', 'keyframes', 'tsr'):
    cfg.train.init_from = '/some/t2i/workdir'
  return cfg


@pytest.mark.parametrize('stage', TINY_STAGES)
def test_tiny_variants_validate_and_say_what_they_are(stage):
  cfg = _tiny(stage)
  text_lib.resolve(cfg)
  config_lib.validate(cfg)
  assert cfg.model.temporal == (stage != 't2i')
  assert cfg.model.text.vocab_size > 20  # from the shipped tokenizer
  kind = {'scratch': 'stunet', 'style': 'stunet', 'stationary': 'stunet'}.get(stage, stage)
  assert config_lib.model_kind(cfg) == kind


def test_the_other_config_files_validate():
  for stage in ('scratch', 't2i', 'stunet'):
    cfg = ssr_config.get_config(f'stage={stage}')
    cfg.train.init_from = 'x'
    config_lib.validate(cfg)
    assert config_lib.model_kind(cfg) == ('t2i' if stage == 't2i' else 'ssr')
  # The recorded tables held the STUNet stage's learning rate after warmup, which the
  # stage's default decays: every STUNet arm runs constant (as the T2I flags do).
  assert tiny.get_config('stage=stunet').train.schedule == 'cosine'
  for name in reproduce.EXPERIMENTS:  # every arm is a tiny stage that validates
    c = reproduce.get_config(f'experiment={name}')
    assert c.experiment == name and c.seeds
    assert '--config.train.schedule=constant' in c.t2i_flags
    for arm in c.arms.values():
      path, stage = arm.config.split(':')
      assert path == 'configs/tiny.py'
      cfg = tiny.get_config(stage)
      cfg.train.init_from = arm.init_from
      for flag in arm.flags:  # '--config.a.b=value', as train.py would set it
        field, value = flag[len('--config.'):].split('=')
        section, name = field.rsplit('.', 1)
        target = cfg
        for part in section.split('.'):
          target = target[part]
        try:
          value = ast.literal_eval(value)
        except (ValueError, SyntaxError):  # a bare word: a string field's value
          pass
        target[name] = type(target[name])(value)
      config_lib.validate(cfg)
      if stage == 'stage=stunet':
        assert cfg.train.schedule == 'constant', (name, arm.flags)
  for name in ('cascade', 'cascade_fair', 'cascade_moving'):
    assert set(reproduce.get_config(f'experiment={name}').arms) == {'stunet', 'keyframes', 'tsr'}
  # The fair tests: every arm from the same T2I run, in runs of their own.
  runs_dirs = {reproduce.get_config('experiment=cascade').runs_dir}
  for name in ('cascade_fair', 'cascade_moving'):
    fair = reproduce.get_config(f'experiment={name}')
    assert {arm.init_from for arm in fair.arms.values()} == {'t2i'} and len(fair.seeds) >= 3
    assert fair.runs_dir not in runs_dirs
    runs_dirs.add(fair.runs_dir)
  # The moving test gives the cascade's stages the STUNet stage's learning-rate split.
  moving = reproduce.get_config('experiment=cascade_moving')
  assert tiny.get_config('stage=stunet').train.spatial_lr_scale == 0.1
  assert all('--config.train.spatial_lr_scale=0.1' in moving.arms[a].flags
             for a in ('keyframes', 'tsr'))


@pytest.mark.parametrize('arg', ['model=base', 'model=base,stage=scratch', 'model=ssr',
                                 'model=ssr,window=8', 'model=base,text=encoder'])
def test_paper_configs_validate(arg):
  config = paper.get_config(arg)
  if not config.model.text.pretrained:  # a placeholder path otherwise (nothing to read)
    text_lib.resolve(config)  # a no-op: the T5 vocabulary size is set
  config_lib.validate(config)
  assert config.model.temporal
  assert config.model.text.vocab_size == 32128
  assert config.train.freeze_spatial == ('scratch' not in arg)
  assert config.train.init_from  # the placeholder T2I run


def test_fine_tuning_stages_start_from_the_shipped_model():
  cond, style = tiny.get_config('stage=conditional'), tiny.get_config('stage=style')
  stationary = tiny.get_config('stage=stationary')
  for cfg in (cond, style, stationary):
    assert cfg.train.init_from == 'pretrained/stunet_tiny' and cfg.model.layout_basis == 6
  # The stationary data's long clips, read in windows of the shipped model's length.
  assert stationary.data.stationary_frames == 64 and stationary.data.num_frames == 16
  assert stationary.train.stage == 'stunet' and not stationary.model.conditional
  assert cond.model.conditional and cond.train.stage == 'conditional'
  assert style.train.freeze_temporal and style.data.style == 'outline'
  assert not style.model.conditional


def test_bad_variants_and_misspelt_fields_are_refused():
  with pytest.raises(ValueError, match='unknown stage'):
    tiny.get_config('stage=video')
  with pytest.raises(ValueError, match='unknown config variant key'):
    tiny.get_config('stages=t2i')
  with pytest.raises(ValueError, match='unknown experiment'):
    reproduce.get_config('experiment=everything')
  with pytest.raises(ValueError, match='unknown model'):
    paper.get_config('model=tsr')
  with pytest.raises(ValueError, match='unknown stage'):
    paper.get_config('model=base,stage=t2i')
  with pytest.raises(ValueError, match='text='):
    paper.get_config('model=base,stage=scratch,text=precomputed')
  cfg = _tiny()
  cfg.lock()  # as train.py's config flag does: a misspelt override is an error
  with pytest.raises(AttributeError):
    cfg.train.learning_rate = 1.


def _out_of_range(low, high, value):
  """A value of the field's type just outside its range (or NaN for a float)."""
  if low is not None:
    bound = low[1] if isinstance(low, tuple) else low
    return bound if isinstance(low, tuple) else (bound - 1 if isinstance(value, int) else
                                                  bound - 0.5)
  bound = high[1] if isinstance(high, tuple) else high
  return bound if isinstance(high, tuple) else bound + 0.5


@pytest.mark.parametrize('field', sorted(config_lib.RANGES))
def test_every_numeric_field_is_range_checked(field):
  low, high, what = config_lib.RANGES[field]
  cfg = _tiny()
  section, name = field.rsplit('.', 1) if '.' in field else ('', field)
  holder = config_lib.get(cfg, section) if section else cfg
  bad = _out_of_range(low, high, holder[name])
  holder[name] = bad
  with pytest.raises(ValueError, match=re.escape(f'config.{field}={bad!r}: {what} must be ')):
    config_lib.validate(cfg)


@pytest.mark.parametrize('field', ['train.lr', 'sample.guidance', 'train.ema_decay'])
def test_nan_is_refused_where_a_number_is_expected(field):
  cfg = _tiny()
  section, name = field.split('.')
  cfg[section][name] = math.nan
  with pytest.raises(ValueError, match=rf'config\.{field}=nan'):
    config_lib.validate(cfg)


@pytest.mark.parametrize('field', sorted(config_lib.CHOICES))
def test_every_enumerated_field_is_checked_against_its_owner(field):
  cfg = _tiny()
  section, name = field.split('.')
  allowed = config_lib.CHOICES[field]
  assert config_lib.get(cfg, field) in allowed
  cfg[section][name] = 'nonsense'
  with pytest.raises(ValueError, match=rf"config\.{field}='nonsense': use one of"):
    config_lib.validate(cfg)


def _with(cfg, **fields):
  for path, value in fields.items():
    section, name = path.split('__')
    cfg[section][name] = value
  return cfg


@pytest.mark.parametrize('stage, fields, match', [
    ('t2i', dict(model__temporal=True), 'stage=t2i trains the image U-Net'),
    ('scratch', dict(model__temporal=False), 'stage=scratch trains a STUNet'),
    ('stunet', dict(train__init_from=''), 'stage=stunet starts from another run'),
    ('conditional', dict(model__conditional=False), 'stage=conditional trains the conditional'),
    ('conditional', dict(train__condition_mix=(1., 0., 0.)), 'condition_mix'),
    ('scratch', dict(train__freeze_temporal=True), 'freeze_temporal=True trains only'),
    ('scratch', dict(train__freeze_spatial=True), 'freeze_spatial=True needs'),
    ('t2i', dict(train__batch_size=30), 'whole clips'),
    ('scratch', dict(train__grad_accum=3), 'grad_accum=3 must divide'),
    ('scratch', dict(data__num_frames=10), 'num_frames=10 is not divisible by 4'),
    ('scratch', dict(data__size=30), 'size=30 is not divisible by 4'),
    ('scratch', dict(model__attn_levels=(3,)), 'attention level 3 is outside'),
    ('scratch', dict(model__num_heads=3), 'not divisible by config.model.num_heads=3'),
    ('scratch', dict(sample__window=8, sample__overlap=8), 'overlap=8: need'),
    ('scratch', dict(data__precomputed_text=True), 'precomputed_text=True reads'),
    ('scratch', dict(mesh__shape=(-1, -1)), 'at most one -1'),
    ('scratch', dict(model__conditional=True, train__stage='conditional', train__init_from='x',
                     model__lowres_size=16), 'conditional=True is a STUNet option'),
])
def test_rules_between_fields(stage, fields, match):
  cfg = _with(_tiny(stage), **fields)
  with pytest.raises(ValueError, match=match):
    config_lib.validate(cfg)


def test_frames_that_the_temporal_halvings_divide_are_accepted():
  cfg = small_config('scratch')
  cfg.model.channel_mult = (1, 2, 2)
  cfg.data.num_frames = 12
  config_lib.validate(cfg)  # 12 = 3 * 4


@pytest.mark.parametrize('fields, match', [
    (dict(model__temporal_resample=True), 'temporal_resample=False'),
    (dict(model__lowres_size=64), 'lowres_size=64 must be below'),
])
def test_ssr_rules(fields, match):
  cfg = _with(ssr_config.get_config(), **fields)
  with pytest.raises(ValueError, match=match):
    config_lib.validate(cfg)


@pytest.mark.parametrize('change, match', [
    (dict(role='tsr', conditional=False), 'set config.model.conditional=True'),
    (dict(role='keyframes', conditional=True), 'set config.model.conditional=True'),
    (dict(role='keyframes', stride=8), "keyframes model's clip=2 is not divisible by 4"),
    (dict(role='tsr', window=6), 'must be a multiple of the stride'),
    (dict(role='tsr', stride=3), 'stride=3 must divide'),
])
def test_inconsistent_cascade_configs_are_refused(change, match):
  c = tiny.get_config('stage=tsr' if change.get('conditional') else 'stage=keyframes')
  c.model.conditional = change.pop('conditional', c.model.conditional)
  c.train.stage = 'conditional' if c.model.conditional else 'stunet'
  c.train.init_from = 'pretrained/stunet_tiny'
  for k, v in change.items():
    c.cascade[k] = v
  with pytest.raises(ValueError, match=match):
    config_lib.validate(c)


def test_a_saved_config_is_merged_over_the_current_defaults(tmp_path):
  """A config.json written before a field existed gets that field's default, once, in
  config.load; the saved values win; an old boolean remat is read as its policy."""
  saved = config_lib.base_config().to_dict()
  del saved['sample']['window_batch'], saved['model']['text']['eps']
  saved['train']['lr'], saved['model']['channel_mult'] = 1e-3, [1, 3]
  saved['model']['remat'] = True
  (tmp_path / 'config.json').write_text(json.dumps(saved))
  cfg = config_lib.load(str(tmp_path))
  assert cfg.sample.window_batch == config_lib.base_config().sample.window_batch
  assert cfg.model.text.eps == config_lib.base_config().model.text.eps
  assert cfg.train.lr == 1e-3 and cfg.model.channel_mult == (1, 3)
  assert cfg.model.remat == 'full'
  (tmp_path / 'checkpoints' / '7').mkdir(parents=True)
  assert config_lib.load(str(tmp_path / 'checkpoints' / '7')).train.lr == 1e-3
  with pytest.raises(FileNotFoundError, match='not a train.py workdir'):
    config_lib.load(str(tmp_path / 'nowhere'))


def test_a_batch_the_data_parallel_devices_cannot_split_is_refused_up_front():
  c = small_config('scratch')
  c.train.batch_size = 4
  sharding.check_batch(c, 4)  # 4 clips over data=4
  with pytest.raises(ValueError, match=r'batch_size=4 gives 4 clips per step, which the 8 '
                     r'data-parallel devices .*mesh\.shape=\(1, 1, 1, 8\)'):
    sharding.check_batch(c, 8)
  c.mesh.shape = (2, 1, 1, 4)  # 2 data shards, each clip over 4 context devices
  sharding.check_batch(c, 8)
  c.train.batch_size = 1
  c.mesh.shape = (1, 1, 1, 8)  # one clip over 8 devices: fewer clips than devices
  sharding.check_batch(c, 8)
  c.train.batch_size = 4
  c.mesh.shape = (-1, 1, 1, 1)
  c.train.grad_accum = 2  # 2 clips per micro-batch over 4 devices
  with pytest.raises(ValueError, match='2 examples per micro-batch'):
    sharding.check_batch(c, 4)
  c.mesh.shape = (2, 1, -1)  # data=2, tensor=2: 2 per micro-batch divide (context: 1)
  sharding.check_batch(c, 4)
  assert sharding.mesh_shape((2, 1, -1), 4, 4) == (2, 1, 2, 1)
  with pytest.raises(ValueError, match='more entries than the 4 axes'):
    sharding.mesh_shape((1, 1, 1, 1, 1), 1, 4)
  t2i = small_config('t2i')  # 2 frames per clip: a batch of 2 frames is 1 clip
  with pytest.raises(ValueError, match='gives 1 clips per step'):
    sharding.check_batch(t2i, 2)
