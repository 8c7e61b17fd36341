"""The keyframe + TSR cascade (stunet/cascade.py): its frames, windows and training views,
which window each generated frame comes from, and both stages end to end."""

import jax
import numpy as np
import pytest

from configs import tiny
from conftest import FixedTokens
from conftest import real_batch
from conftest import light_config
from conftest import small_config
from stunet import cascade
from stunet import config as config_lib
from stunet import sharding
from stunet import train_step
from stunet.generator import Generator
from stunet.models import build_model


def _stage(role):
  """light_config's cascade: 8 frames, keyframes every 2nd (4), TSR windows of 4 (the
  frames each stage sees are tested, not its layers)."""
  c = light_config('conditional' if role == 'tsr' else 'scratch')
  c.model.conditional = role == 'tsr'
  c.cascade.role, c.cascade.stride, c.cascade.window = role, 2, 4
  c.train.init_from = 'unused'   # (the tests start from random weights)
  config_lib.validate(c)
  return c


def test_keyframes_windows_and_the_frames_each_stage_sees():
  assert cascade.window_starts(16, 4, 8) == (0, 4, 8)
  assert cascade.window_starts(8, 2, 4) == (0, 2, 4)
  np.testing.assert_array_equal(cascade.key_mask(8, 4), [1, 0, 0, 0, 1, 0, 0, 0])
  for window in (6, 4, 20):
    with pytest.raises(ValueError, match='multiple of the stride, longer than it'):
      cascade.window_starts(16, 4, window)
  frames = {}
  for stage in ('stunet', 'keyframes', 'tsr'):
    c = tiny.get_config(f'stage={stage}')
    c.train.init_from = 'workdir/t2i'
    config_lib.validate(c)
    frames[stage] = cascade.model_frames(c)
  assert frames == {'stunet': 16, 'keyframes': 4, 'tsr': 8}


def test_training_views_are_the_keyframes_and_aligned_windows_given_theirs():
  b, t = 3, 16
  video = np.zeros((b, t, 2, 2, 3), np.float32)
  video += (np.arange(t)[None, :] + 100 * np.arange(b)[:, None])[:, :, None, None, None]
  keys, cond = cascade.training_view(jax.random.key(0), video, 'keyframes', 4, 8)
  assert cond is None
  np.testing.assert_array_equal(keys, video[:, ::4])
  seen = set()
  for seed in range(8):
    win, (c, m) = cascade.training_view(jax.random.key(seed), video, 'tsr', 4, 8)
    assert win.shape == (b, 8, 2, 2, 3) and m.shape == (b, 8, 2, 2, 1)
    for i in range(b):
      start = int(win[i, 0, 0, 0, 0]) - 100 * i
      seen.add(start)
      np.testing.assert_array_equal(win[i], video[i, start:start + 8])
    np.testing.assert_array_equal(m[:, :, 0, 0, 0], np.tile([1, 0, 0, 0, 1, 0, 0, 0], (b, 1)))
    np.testing.assert_array_equal(c, win * m)
  assert seen == {0, 4, 8}


class _FakeTSR:
  """Returns window i of every clip filled with 1000 * (i + 1); records what it got."""

  def __init__(self, windows):
    self.windows, self.calls = windows, []

  def __call__(self, prompts, *, guidance, seed, cond):
    self.calls.append(dict(prompts=prompts, cond=cond, seed=seed, guidance=guidance))
    out = np.zeros(cond[0].shape, np.float32)
    for j in range(len(prompts)):
      out[j] = 1000. * (j % self.windows + 1)
    return out


def test_the_cascade_keeps_the_keyframes_and_takes_each_frame_from_its_window():
  rng = np.random.default_rng(0)
  keyframes = rng.uniform(-1, 1, (2, 4, 3, 3, 3)).astype(np.float32)
  asked = {}

  def keyframe_model(prompts, *, guidance, seed, num_frames):
    asked.update(prompts=prompts, num_frames=num_frames, seed=seed)
    return keyframes

  tsr = _FakeTSR(windows=3)
  cas = cascade.Cascade(keyframe_model, tsr, num_frames=16, stride=4, window=8)
  out = cas(['a', 'b'], guidance=2., seed=5)
  assert out.shape == (2, 16, 3, 3, 3)
  assert asked == dict(prompts=['a', 'b'], num_frames=4, seed=5)
  np.testing.assert_array_equal(out[:, ::4], keyframes)   # the keyframes, exactly
  source = out[:, :, 0, 0, 0].copy()
  source[:, ::4] = 0
  want = [0, 1, 1, 1, 0, 2, 2, 2, 0, 3, 3, 3, 0, 3, 3, 3]  # window of each frame (0: key)
  np.testing.assert_array_equal(source, 1000. * np.tile(want, (2, 1)))
  (call,) = tsr.calls  # every window in one batch, each given its two keyframes
  assert call['prompts'] == ['a', 'a', 'a', 'b', 'b', 'b'] and call['seed'] == 6
  c, m = call['cond']
  np.testing.assert_array_equal(m[0, :, 0, 0, 0], [1, 0, 0, 0, 1, 0, 0, 0])
  for clip in range(2):
    for w in range(3):
      np.testing.assert_array_equal(c[3 * clip + w, 0], keyframes[clip, w])
      np.testing.assert_array_equal(c[3 * clip + w, 4], keyframes[clip, w + 1])
      assert not c[3 * clip + w, 1:4].any() and not c[3 * clip + w, 5:].any()
  with pytest.raises(ValueError, match='keyframes of shape .* need \\[2, 4, h, w, 3\\]'):
    cas.fill(['a', 'b'], keyframes[:, :3], guidance=1.)


@pytest.mark.slow  # the paper's baseline (experiments): not in the CI run (setup.cfg)
def test_both_stages_train_and_the_cascade_samples_whole_clips():
  mesh = sharding.make_mesh(small_config().mesh)
  gens, configs = {}, {}
  for role in ('keyframes', 'tsr'):
    cfg = configs[role] = _stage(role)
    spec = train_step.TrainSpec(cfg, mesh)
    state = spec.init(jax.random.key(0))
    n = cfg.data.max_text_len
    step = train_step.make_train_step(spec, np.zeros((n,), np.int32), np.zeros((n,), bool))
    batch = sharding.global_batch(real_batch(cfg), mesh)  # whole 8-frame clips
    state, metrics = step(state, batch, jax.random.key(1))
    assert bool(metrics['finite']) and float(metrics['loss']) > 0
    gens[role] = Generator.from_config(build_model(cfg.model),
                                                {'params': jax.device_get(state.params)},
                                                FixedTokens(), cfg)
    assert gens[role].video_shape == (4, 16, 16, 3)  # 4 keyframes; TSR windows of 4
  cas = cascade.Cascade.from_stages(gens['keyframes'], configs['keyframes'], gens['tsr'],
                                    configs['tsr'])
  assert (cas.num_frames, cas.stride, cas.window, cas.starts) == (8, 2, 4, (0, 2, 4))
  with pytest.raises(ValueError, match='the keyframe run is not a keyframes model'):
    cascade.Cascade.from_stages(gens['tsr'], configs['tsr'], gens['tsr'], configs['tsr'])
  out = cas(['a red square', 'a blue circle'], guidance=1.5, seed=3)
  assert out.shape == (2, 8, 16, 16, 3) and np.isfinite(out).all()
  keys = gens['keyframes'](['a red square', 'a blue circle'], guidance=1.5, seed=3,
                           num_frames=4)
  np.testing.assert_array_equal(out[:, ::2], keys)
  assert np.abs(out[:, 1::2]).max() > 0   # the TSR filled the frames between
