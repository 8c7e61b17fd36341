"""The paper's initialisation properties of the inflated network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from conftest import perturb
from conftest import small_config
from stunet import inflate
from stunet import layers as L
from stunet.models import build_model


def _init(config, frames, rng=0, abstract=False):
  """(model, params); abstract: their shapes only (jax.eval_shape, nothing compiled)."""
  model = build_model(config.model)
  s, n = config.data.size, config.data.max_text_len
  args = (jnp.zeros((1, frames, s, s, 3)), jnp.zeros((1,)), jnp.ones((1, n), jnp.int32),
          jnp.ones((1, n), bool))
  init = lambda r: model.init(r, *args)
  init = jax.eval_shape(init, jax.random.key(rng)) if abstract else jax.jit(init)(
      jax.random.key(rng))  # one compile, not op by op
  return model, nn.meta.unbox(init)['params']


def _inputs(config, b, frames, rng=1):
  k = jax.random.split(jax.random.key(rng), 3)
  s, n = config.data.size, config.data.max_text_len
  x = jax.random.normal(k[0], (b, frames, s, s, 3))
  t = jax.random.uniform(k[1], (b,))
  tokens = jax.random.randint(k[2], (b, n), 2, config.model.text.vocab_size)
  mask = jnp.arange(n)[None] < jnp.array([[5], [3]])[:b]
  return x, t, tokens, mask


def _spatial_part(params):
  flat = inflate.traverse_util.flatten_dict(params)
  return inflate.traverse_util.unflatten_dict(
      {k: v for k, v in flat.items() if not inflate.is_temporal(k)})


def test_stunet_equals_t2i_per_frame_on_static_video():
  cfg = small_config('scratch')
  cfg.model.channel_mult = (1, 2, 2)  # two temporal halvings
  cfg.model.attn_levels, cfg.model.cross_attn_levels = (2,), (1, 2)
  frames = cfg.data.num_frames
  stunet, params = _init(cfg, frames)
  # conv_out is zero-initialised; give it weights so the comparison is not 0 == 0.
  params['unet']['conv_out']['kernel'] = jax.random.normal(
      jax.random.key(3), params['unet']['conv_out']['kernel'].shape)
  t2i_cfg = small_config('t2i')
  t2i_cfg.model = cfg.model.copy_and_resolve_references()
  t2i_cfg.model.temporal = False
  t2i, t2i_init = _init(t2i_cfg, 1, rng=5, abstract=True)
  t2i_params = _spatial_part(params)  # the same spatial weights
  assert jax.tree.structure(t2i_params) == jax.tree.structure(t2i_init)

  x, t, tokens, mask = _inputs(cfg, 2, 1)
  x = jnp.repeat(x, frames, axis=1)  # every frame identical
  out = jax.jit(stunet.apply)({'params': params}, x, t, tokens, mask)
  per_frame = jax.jit(t2i.apply)({'params': t2i_params}, x.reshape((-1, 1) + x.shape[2:]),
                        jnp.repeat(t, frames), jnp.repeat(tokens, frames, 0),
                        jnp.repeat(mask, frames, 0))
  assert float(jnp.abs(out).max()) > 0.1
  np.testing.assert_allclose(out, per_frame.reshape(out.shape), atol=2e-5, rtol=1e-5)


def test_inflated_temporal_blocks_change_moving_video_after_training_like_perturbation():
  """Once temporal weights move away from init, frames interact (the test above is not vacuous)."""
  cfg = small_config('scratch')
  model, params = _init(cfg, cfg.data.num_frames)
  x, t, tokens, mask = _inputs(cfg, 2, cfg.data.num_frames)
  params = perturb(params, scale=0.1,
                   where=lambda k: inflate.is_temporal(k) or k[-2] == 'conv_out')
  apply = jax.jit(model.apply)  # one compile for both calls, not op by op
  out = apply({'params': params}, x, t, tokens, mask)
  x2 = x.at[:, 0].set(0.)  # changing frame 0 must affect other frames' outputs
  out2 = apply({'params': params}, x2, t, tokens, mask)
  assert float(jnp.abs(out[:, -1] - out2[:, -1]).max()) > 1e-4


def test_temporal_downsample_is_striding_at_init():
  x = jax.random.normal(jax.random.key(0), (2, 8, 4, 4, 6))
  mod = L.TemporalDownsample()
  p = mod.init(jax.random.key(1), x)
  np.testing.assert_allclose(mod.apply(p, x), x[:, ::2], atol=1e-6)


def test_temporal_upsample_is_frame_repetition_at_init():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 4, 6))
  mod = L.TemporalUpsample()
  p = mod.init(jax.random.key(1), x)
  np.testing.assert_allclose(mod.apply(p, x), jnp.repeat(x, 2, axis=1), atol=1e-6)


def test_linear_resampling_is_pair_average_and_linear_interpolation_at_init():
  ramp = lambda n: jnp.broadcast_to(jnp.arange(n, dtype=jnp.float32)[None, :, None, None, None],
                                    (2, n, 3, 3, 4))
  down, up = L.TemporalDownsample(init_scheme='linear'), L.TemporalUpsample(init_scheme='linear')
  pd, pu = down.init(jax.random.key(1), ramp(8)), up.init(jax.random.key(1), ramp(4))
  np.testing.assert_allclose(down.apply(pd, ramp(8))[0, :, 0, 0, 0], [.5, 2.5, 4.5, 6.5])
  # Fine frame i sits at coarse position (i - 1/2) / 2; the ends hold the edge frames.
  np.testing.assert_allclose(up.apply(pu, ramp(4))[0, :, 0, 0, 0],
                             [0., .25, .75, 1.25, 1.75, 2.25, 2.75, 3.])
  static = jax.random.normal(jax.random.key(0), (2, 1, 3, 3, 4))
  np.testing.assert_allclose(down.apply(pd, jnp.repeat(static, 8, 1)), jnp.repeat(static, 4, 1),
                             atol=1e-6)
  np.testing.assert_allclose(up.apply(pu, jnp.repeat(static, 4, 1)), jnp.repeat(static, 8, 1),
                             atol=1e-6)


def test_he_init_ablation_is_not_identity():
  x = jax.random.normal(jax.random.key(0), (2, 8, 4, 4, 6))
  mod = L.TemporalDownsample(init_scheme='he')
  p = mod.init(jax.random.key(1), x)
  assert float(jnp.abs(mod.apply(p, x) - x[:, ::2]).max()) > 0.1


def test_space_time_block_and_temporal_attention_are_identity_at_init():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 4, 8))
  for mod in (L.SpaceTimeConvBlock(), L.TemporalAttention(num_heads=2)):
    p = mod.init(jax.random.key(1), x)
    np.testing.assert_allclose(mod.apply(p, x), x, atol=1e-6)


def test_temporal_blocks_with_emb_are_identity_at_init_and_then_follow_it():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 4, 8))
  emb = jax.random.normal(jax.random.key(2), (2, 12))
  for mod in (L.SpaceTimeConvBlock(), L.TemporalAttention(num_heads=2)):
    p = mod.init(jax.random.key(1), x, emb)
    np.testing.assert_allclose(mod.apply(p, x, emb), x, atol=1e-6)
    # Trained-like weights: the output now depends on the embedding (time + text).
    p = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(4), a.shape), p)
    diff = mod.apply(p, x, emb) - mod.apply(p, x, emb[::-1])
    assert float(jnp.abs(diff).max()) > 1e-2


def test_temporal_layers_see_the_prompt_through_their_own_text_projection():
  """With temporal_cond='film' the prompt reaches the temporal layers by a trainable
  path: the loss has a gradient in temporal_text_pool (zero with 'none': absent)."""
  cfg = small_config('scratch')
  model, params = _init(cfg, cfg.data.num_frames)
  assert 'temporal_text_pool' in params['unet']
  x, t, tokens, mask = _inputs(cfg, 2, cfg.data.num_frames)
  flat = inflate.traverse_util.flatten_dict(params)
  flat = {k: (v + 0.1 * jax.random.normal(jax.random.key(i), v.shape)
              if inflate.is_temporal(k) or k[-2] == 'conv_out' else v)
          for i, (k, v) in enumerate(sorted(flat.items()))}
  params = inflate.traverse_util.unflatten_dict(flat)
  apply = jax.jit(model.apply)
  loss = lambda p: jnp.mean(apply({'params': p}, x, t, tokens, mask) ** 2)
  grad = jax.jit(jax.grad(loss))(params)['unet']['temporal_text_pool']['kernel']
  assert float(jnp.abs(grad).max()) > 1e-6
  other = apply({'params': params}, x, t, (tokens + 1) % cfg.model.text.vocab_size, mask)
  assert float(jnp.abs(other - apply({'params': params}, x, t, tokens, mask)).max()) > 1e-4
  cfg.model.temporal_cond = 'none'
  _, plain = _init(cfg, cfg.data.num_frames, abstract=True)
  assert 'temporal_text_pool' not in plain['unet']


@pytest.mark.slow  # an optional path: not in the CI run (setup.cfg)
def test_temporal_cross_attention_starts_as_the_film_model_and_reads_each_token():
  """temporal_cond='film_xattn': a film model's weights load into it (inflate from a
  STUNet) and give the same output; once its zero-initialised output is trained, a
  change of one token changes each frame differently (what pooled FiLM cannot)."""
  cfg = small_config('scratch')
  film_model, film_params = _init(cfg, cfg.data.num_frames)
  cfg.model.temporal_cond = 'film_xattn'
  model, params = _init(cfg, cfg.data.num_frames, rng=4)
  added = {k for k in inflate.traverse_util.flatten_dict(params)
           if k not in inflate.traverse_util.flatten_dict(film_params)}
  assert added and all(inflate.is_temporal(k) and 'temporal_attn' in k[1] for k in added)
  params = inflate.inflate(film_params, params)
  x, t, tokens, mask = _inputs(cfg, 2, cfg.data.num_frames)
  np.testing.assert_array_equal(model.apply({'params': params}, x, t, tokens, mask),
                                film_model.apply({'params': film_params}, x, t, tokens, mask))
  attn = params['unet']['mid_0_temporal_attn_0']
  attn['text_out']['kernel'] = jax.random.normal(jax.random.key(5), attn['text_out']['kernel'].shape)
  params['unet']['conv_out']['kernel'] = jax.random.normal(
      jax.random.key(6), params['unet']['conv_out']['kernel'].shape)
  static = jnp.repeat(x[:, :1], cfg.data.num_frames, axis=1)  # the same frame throughout
  other = tokens.at[:, 2].set((tokens[:, 2] + 1) % cfg.model.text.vocab_size)
  diff = (model.apply({'params': params}, static, t, other, mask)
          - model.apply({'params': params}, static, t, tokens, mask))
  per_frame = jnp.abs(diff).mean(axis=(2, 3, 4))  # [b, frames]
  assert float(per_frame.min()) > 1e-4
  assert float((per_frame.max(1) - per_frame.min(1)).min()) > 1e-5  # frame-dependent


def test_layout_bias_starts_at_zero_and_adds_a_smooth_pattern_chosen_by_the_prompt():
  cfg = small_config('scratch')
  plain_model, plain = _init(cfg, cfg.data.num_frames)
  cfg.model.layout_basis = 3
  model, params = _init(cfg, cfg.data.num_frames, rng=4)
  params = inflate.inflate(plain, params)  # only temporal_layout_bias is new
  x, t, tokens, mask = _inputs(cfg, 2, cfg.data.num_frames)
  apply, plain_apply = jax.jit(model.apply), jax.jit(plain_model.apply)
  np.testing.assert_array_equal(apply({'params': params}, x, t, tokens, mask),
                                plain_apply({'params': plain}, x, t, tokens, mask))
  proj = params['unet']['temporal_layout_bias']['proj']
  proj['kernel'] = jax.random.normal(jax.random.key(5), proj['kernel'].shape)
  bias = apply({'params': params}, x, t, tokens, mask) - plain_apply(
      {'params': plain}, x, t, tokens, mask)
  # The same pattern whatever the input video; another prompt, another pattern.
  other_x = apply({'params': params}, -x, t, tokens, mask) - plain_apply(
      {'params': plain}, -x, t, tokens, mask)
  np.testing.assert_allclose(other_x, bias, atol=1e-4)
  other = (tokens + 1) % cfg.model.text.vocab_size
  other_bias = apply({'params': params}, x, t, other, mask) - plain_apply(
      {'params': plain}, x, t, other, mask)
  assert float(jnp.abs(other_bias - bias).max()) > 1e-3
  # Smooth: three cosines per axis, so the pattern varies over frames and pixels but
  # neighbouring pixels differ far less than the pattern's range.
  b = np.asarray(bias[0, ..., 0])
  assert np.ptp(b) > 1e-2 and np.abs(np.diff(b, axis=2)).max() < 0.5 * np.ptp(b)
  assert np.ptp(b.mean(axis=(1, 2))) > 1e-3  # it changes with the frame


def test_the_long_video_probes_layout_bias_is_the_clips_cut_into_windows():
  # experiments/long_video_global_layout.py: with no clip set, the model's layout bias;
  # with windows at frames 0 and 16 of 32, each window's rows get their half of the
  # 32-frame bias (rows: [conditional, unconditional], windows-major).
  import os, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), 'experiments'))
  import long_video_global_layout as probe  # pylint: disable=g-import-not-at-top
  emb = jax.random.normal(jax.random.key(0), (4, 16))
  params = perturb(L.LayoutBias(3, 2).init(jax.random.key(1), emb, (16, 4, 4)), scale=1.)
  window = L.LayoutBias(3, 2).apply(params, emb, (16, 4, 4))
  probe.CLIP.clear()
  np.testing.assert_allclose(probe.ClipLayoutBias(3, 2).apply(params, emb, (16, 4, 4)),
                             window, rtol=1e-5, atol=1e-5)
  probe.CLIP.update(starts=(0, 16), frames=32)
  try:
    clip = probe.ClipLayoutBias(3, 2).apply(params, emb, (16, 4, 4))
  finally:
    probe.CLIP.clear()
  whole = L.LayoutBias(3, 2).apply(params, emb, (32, 4, 4))
  for row, half in ((0, 0), (1, 1), (2, 0), (3, 1)):
    np.testing.assert_allclose(clip[row], whole[row, 16 * half:16 * half + 16],
                               rtol=1e-5, atol=1e-4)
  assert float(jnp.abs(clip[1] - window[1]).max()) > 1e-2  # not the window's


class _Conv(nn.Module):
  pad: str
  stride: int = 1

  @nn.compact
  def __call__(self, h):
    return L.conv2d(4, 'conv', jnp.float32, stride=self.stride, pad=self.pad)(h)


def test_circular_padding_wraps_the_frame_and_keeps_the_windows_of_zero_padding():
  h = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  params = _Conv('circular').init(jax.random.key(1), h)
  # Stride 1: flax's own circular padding.
  np.testing.assert_allclose(
      _Conv('circular').apply(params, h),
      nn.Conv(4, (3, 3), padding='CIRCULAR').apply({'params': params['params']['conv']}, h),
      atol=1e-5)
  # Stride 2: the windows of 'SAME' (flax's 'CIRCULAR' would centre them a pixel
  # earlier): away from the padded last row and column, the same as zero padding.
  circ, zero = (_Conv(pad, 2).apply(params, h) for pad in ('circular', 'zeros'))
  assert circ.shape == zero.shape == (2, 8, 8, 4)
  np.testing.assert_allclose(circ[:, :-1, :-1], zero[:, :-1, :-1], atol=1e-5)
  assert float(jnp.abs(circ[:, -1] - zero[:, -1]).max()) > 1e-3
  with pytest.raises(ValueError, match="spatial padding 'reflect'"):
    _Conv('reflect').init(jax.random.key(1), h)


def test_circular_padding_makes_the_network_shift_equivariant():
  """With spatial_pad='circular' (and no absolute position: no coordinates, no layout
  bias) the STUNet commutes with a shift of its input around the torus by a multiple
  of its downsampling factor (one halving here: even shifts); an odd shift moves the
  stride-2 windows, and then it does not (the check can fail)."""
  cfg = small_config('scratch')
  cfg.model.spatial_pad = 'circular'
  model, params = _init(cfg, cfg.data.num_frames)
  params = perturb(params)  # zero-initialised outputs would give 0 = roll(0)
  x, t, tokens, mask = _inputs(cfg, 2, cfg.data.num_frames)
  apply = jax.jit(model.apply)
  run = lambda v: apply({'params': params}, v, t, tokens, mask)
  gap = lambda shift: float(jnp.abs(run(jnp.roll(x, shift, axis=(2, 3))) -
                                    jnp.roll(run(x), shift, axis=(2, 3))).max())
  assert gap((2, -4)) < 1e-4 and gap((1, 0)) > 1e-2, (gap((2, -4)), gap((1, 0)))


def test_temporal_parameter_names_are_the_only_additions():
  cfg = small_config('scratch')
  _, st = _init(cfg, cfg.data.num_frames, abstract=True)
  t2i_cfg = small_config('t2i')
  _, im = _init(t2i_cfg, 1, abstract=True)
  st_flat = inflate.traverse_util.flatten_dict(st)
  im_flat = inflate.traverse_util.flatten_dict(im)
  assert {k for k in st_flat if not inflate.is_temporal(k)} == set(im_flat)
  assert any(inflate.is_temporal(k) for k in st_flat)
  for k in im_flat:
    assert st_flat[k].shape == im_flat[k].shape


def test_group_norm_equals_flax_group_norm():
  """The project's GroupNorm (one reduction, one scale-and-shift pass) has flax's
  parameters and computes flax's values, for float32 and bfloat16 output."""
  x = 3. + 2. * jax.random.normal(jax.random.key(0), (4, 5, 6, 7, 32))
  for dtype in (jnp.float32, jnp.bfloat16):
    ours, ref = L.GroupNorm(8, dtype=dtype), nn.GroupNorm(8, dtype=dtype)
    params = perturb(ref.init(jax.random.key(1), x), scale=0.5)
    assert (jax.tree.map(jnp.shape, nn.meta.unbox(ours.init(jax.random.key(1), x))) ==
            jax.tree.map(jnp.shape, params))
    a, b = ours.apply(params, x), ref.apply(params, x)
    assert a.dtype == b.dtype == dtype
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               atol=1e-5 if dtype == jnp.float32 else 2e-2)



@pytest.mark.parametrize('frames, dtype, expected', [
    (16, jnp.bfloat16, 'cudnn'),   # an even length in bfloat16: cuDNN's fused attention
    (5, jnp.bfloat16, None),       # 80 frames' coarsest level: cuDNN's backward refuses it
    (16, jnp.float32, None),       # float32: XLA's
])
def test_attention_asks_cudnn_only_for_what_its_backward_pass_takes(
    monkeypatch, frames, dtype, expected):
  """On a GPU, layers.attention routes bfloat16 heads to cuDNN, but odd sequence lengths
  to XLA: cuDNN accepts them in the forward pass and raises only once the train step
  is differentiated (seen on an H100 with the paper's 80-frame base model)."""
  calls = []
  real = jax.nn.dot_product_attention

  def record(q, k, v, mask=None, implementation=None):
    calls.append(implementation)
    return real(q, k, v, mask=mask)

  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  monkeypatch.setattr(jax.nn, 'dot_product_attention', record)
  q = jnp.ones((2, frames, 2, 8), dtype)
  out = L.attention(q, q, q)
  assert calls == [expected] and out.shape == q.shape
