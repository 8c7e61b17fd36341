"""The paper-scale configs validate and have the intended sizes (abstract: no compile,
nothing allocated)."""

import jax
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from configs import paper
from stunet import train_step
from stunet.models import build_model


def _abstract_params(config):
  """Parameter ShapeDtypeStructs of the config's model, via jax.eval_shape."""
  model = build_model(config.model)
  inputs = train_step.example_inputs(config)  # the SSR's low-res clip and level included
  params = jax.eval_shape(lambda r: model.init(r, *inputs)['params'], jax.random.key(0))
  return nn.meta.unbox(params)


def _count(tree) -> int:
  return int(sum(np.prod(a.shape) for a in jax.tree.leaves(tree)))


def test_base_is_imagen_scale():
  config = paper.get_config('model=base,text=encoder')  # the T5 in the model too
  assert (config.data.num_frames, config.data.size) == (80, 128)
  # 80 frames halve at each of the 4 resolution changes down to 5 at the coarsest level.
  assert config.data.num_frames // 2 ** (len(config.model.channel_mult) - 1) == 5
  params = _abstract_params(config)
  assert set(params) == {'unet', 'text_encoder'}
  n_unet = _count(params['unet'])
  assert 1e9 <= n_unet <= 2e9, n_unet
  flat = traverse_util.flatten_dict(params['unet'], sep='/')
  n_temporal = _count({k: v for k, v in flat.items() if 'temporal' in k})
  assert 0.1 * n_unet < n_temporal < 0.3 * n_unet, (n_temporal, n_unet)
  # T5-XXL's encoder: ~4.76B parameters.
  assert 4.5e9 < _count(params['text_encoder']) < 5e9


def test_ssr_builds_without_temporal_resampling():
  config = paper.get_config('model=ssr,text=encoder')
  assert config.data.size == 1024 and config.data.num_frames == 16
  assert not config.model.temporal_resample
  params = _abstract_params(config)
  names = set(traverse_util.flatten_dict(params['unet'], sep='/'))
  assert not any('temporal_resize' in k for k in names)  # no temporal down/upsampling
  assert any('temporal_conv' in k for k in names)
  assert any('temporal_attn' in k for k in names)
  assert 2e8 < _count(params['unet']) < 1e9
  # 128 px low-res clip upsampled and concatenated: 3 + 3 input channels; its noise
  # level is embedded next to the diffusion time.
  assert config.model.lowres_size == 128
  assert params['unet']['conv_in']['kernel'].shape == (3, 3, 6, 128)
  assert 'aug_mlp_0' in params['unet']


def test_pod_configs_train_on_stored_text_embeddings_and_ssr_crops():
  """The default paper configs keep the frozen T5-XXL out of the train step (stored
  embeddings; no encoder weights in the state), and the SSR trains on 256-px crops that
  cover whole 128-px low-res pixels and halve evenly at each of its levels."""
  from stunet import config as config_lib  # pylint: disable=g-import-not-at-top
  for arg in ('model=base', 'model=ssr'):
    config = paper.get_config(arg)
    assert config.data.precomputed_text and config.data.records
    assert config.model.text.pretrained  # what sampling encodes prompts with
    config_lib.validate(config)
    assert not any(k[0] == 'text_encoder' for k in train_step.param_shapes(config))
  assert paper.get_config('model=base,stage=scratch').data.precomputed_text is False
  ssr = paper.get_config('model=ssr')
  assert ssr.data.crop_size == 256 and ssr.data.size == 1024
  assert ssr.data.crop_size % (ssr.data.size // ssr.model.lowres_size) == 0
  assert paper.get_config('model=base').data.crop_size == 0
