"""Config files and their validation."""

import pytest

from configs import common
from configs import tiny
from conftest import small_config
from stunet import text as text_lib


@pytest.mark.parametrize('stage', ['t2i', 'stunet', 'scratch', 'conditional', 'style'])
def test_tiny_variants_validate(stage):
  cfg = tiny.get_config(f'stage={stage}')
  if stage == 'stunet':
    cfg.train.init_from = '/some/t2i/workdir'
  text_lib.resolve(cfg)
  common.validate(cfg)
  assert cfg.model.temporal == (stage != 't2i')
  assert cfg.model.text.vocab_size > 20  # from the shipped tokenizer


def test_conditional_and_style_stages_fine_tune_the_shipped_model():
  cond, style = tiny.get_config('stage=conditional'), tiny.get_config('stage=style')
  for cfg in (cond, style):
    assert cfg.train.init_from == 'pretrained/stunet_tiny' and cfg.model.layout_basis == 6
  assert cond.model.conditional and cond.train.stage == 'conditional'
  assert style.train.freeze_temporal and style.data.style == 'outline'
  assert not style.model.conditional
  cond.model.conditional = False
  with pytest.raises(ValueError, match='stage=conditional trains the conditional STUNet'):
    common.validate(cond)
  cond = tiny.get_config('stage=conditional')
  cond.train.condition_mix = (1., 0., 0.)
  with pytest.raises(ValueError, match='condition_mix'):
    common.validate(cond)


def test_stunet_stage_needs_init_from():
  with pytest.raises(ValueError, match='init_from'):
    common.validate(tiny.get_config('stage=stunet'))


def test_bad_variants_and_fields_are_refused():
  with pytest.raises(ValueError, match='unknown stage'):
    tiny.get_config('stage=video')
  with pytest.raises(ValueError, match='unknown config variant key'):
    tiny.get_config('stages=t2i')
  cfg = tiny.get_config('stage=scratch')
  cfg.lock()  # as train.py's config flag does: a misspelt override is an error
  with pytest.raises(AttributeError):
    cfg.train.learning_rate = 1.
  cfg = tiny.get_config('stage=t2i')
  cfg.model.temporal = True
  with pytest.raises(ValueError, match='stage=t2i'):
    common.validate(cfg)


@pytest.mark.parametrize('field,value,match', [
    ('model.remat', 'some', 'remat'), ('train.nan_policy', 'ignore', 'nan_policy'),
    ('train.grad_accum', 3, 'grad_accum'),
    ('train.schedule', 'linear', "train.schedule='linear': use one of constant, cosine"),
    ('sample.sampler', 'euler', "sample.sampler='euler': use one of ddim, ddpm"),
    ('data.num_shards', -1, 'num_shards=-1'), ('sample.num_steps', 0, 'num_steps=0'),
    ('sample.guidance', -1., 'guidance=-1.0'), ('train.t_power', 0., 't_power=0.0')])
def test_fields_are_validated(field, value, match):
  cfg = tiny.get_config('stage=scratch')
  section, name = field.split('.')
  setattr(cfg[section], name, value)
  with pytest.raises(ValueError, match=match):
    common.validate(cfg)


def test_a_batch_the_data_parallel_devices_cannot_split_is_refused_up_front():
  from stunet import sharding  # pylint: disable=g-import-not-at-top
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


def test_enumerated_fields_match_the_modules_that_own_them():
  from stunet import sampling, train_lib, unet  # pylint: disable=g-import-not-at-top
  assert common.CHOICES == {'model.remat': tuple(unet.REMAT_POLICIES),
                            'model.temporal_cond': unet.TEMPORAL_COND,
                            'train.schedule': train_lib.SCHEDULES,
                            'sample.sampler': sampling.SAMPLERS}


def test_t2i_batches_are_whole_clips():
  t2i = tiny.get_config('stage=t2i')
  t2i.train.batch_size = 30  # not whole clips of 4 frames
  with pytest.raises(ValueError, match='whole clips'):
    common.validate(t2i)


def test_every_reproduction_experiment_names_valid_arms():
  from configs import reproduce  # pylint: disable=g-import-not-at-top
  for name in reproduce.EXPERIMENTS:
    c = reproduce.get_config(f'experiment={name}')
    assert c.experiment == name and c.seeds
    for arm in c.arms.values():  # every arm is a tiny stage that validates
      path, stage = arm.config.split(':')
      assert path == 'configs/tiny.py'
      cfg = tiny.get_config(stage)
      cfg.train.init_from = arm.init_from
      common.validate(cfg)
  assert set(reproduce.get_config('experiment=cascade').arms) == {'stunet', 'keyframes', 'tsr'}
  with pytest.raises(ValueError, match='unknown experiment'):
    reproduce.get_config('experiment=everything')
