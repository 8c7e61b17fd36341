"""Config files and their validation."""

import pytest

from configs import common
from configs import tiny
from stunet import text as text_lib


@pytest.mark.parametrize('stage', ['t2i', 'stunet', 'scratch'])
def test_tiny_variants_validate(stage):
  cfg = tiny.get_config(f'stage={stage}')
  if stage == 'stunet':
    cfg.train.init_from = '/some/t2i/workdir'
  text_lib.resolve(cfg)
  common.validate(cfg)
  assert cfg.model.temporal == (stage != 't2i')
  assert cfg.model.text.vocab_size > 20  # from the shipped tokenizer


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
    ('train.grad_accum', 3, 'grad_accum')])
def test_pod_fields_are_validated(field, value, match):
  cfg = tiny.get_config('stage=scratch')
  section, name = field.split('.')
  setattr(cfg[section], name, value)
  with pytest.raises(ValueError, match=match):
    common.validate(cfg)
