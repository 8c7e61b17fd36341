"""The analytic colour/shape/motion detector (data/shapes_metrics.py)."""

import collections

import numpy as np
import pytest

from data import shapes
from data import shapes_metrics as metrics


def _real(n, frames=16, size=32, seed=11):
  exs = [shapes.example(seed, i, frames, size) for i in range(n)]
  return np.stack([e["video"] for e in exs]), [e["caption"] for e in exs]


def _random_captions(n, seed=0):
  rng = np.random.default_rng(seed)
  return [shapes.caption(*shapes.COMBINATIONS[i])
          for i in rng.integers(len(shapes.COMBINATIONS), size=n)]


def test_accurate_on_generated_videos():
  videos, captions = _real(240)
  got = metrics.score(videos, captions)
  assert got["n"] == 240
  for key in ("color_acc", "shape_acc", "motion_acc"):
    assert got[key] >= 0.95, got
  assert got["all_acc"] >= 0.95, got
  rows = got["by_motion"]
  assert set(rows) == set(shapes.MOTIONS) and sum(r["n"] for r in rows.values()) == 240
  for m, r in rows.items():
    assert sum(r["detected"].values()) == r["n"] and r["acc"] == r["detected"].get(m, 0) / r["n"]


def test_by_motion_says_what_was_detected_instead():
  videos, captions = _real(12, seed=14)
  still = np.repeat(videos[:, :1], videos.shape[1], axis=1)  # every clip frozen
  rows = metrics.score(still, captions)["by_motion"]
  assert sum(r["n"] for r in rows.values()) == 12
  assert all(r["acc"] == 0. and r["detected"] == {"none": r["n"]} for r in rows.values()), rows


@pytest.mark.parametrize("frames,size", [(8, 32), (16, 64), (8, 16)])
def test_accurate_at_other_resolutions(frames, size):
  videos, captions = _real(80, frames, size, seed=12)
  got = metrics.score(videos, captions)
  for key in ("color_acc", "shape_acc", "motion_acc"):
    assert got[key] >= 0.93, got  # 16x16 triangles are a dozen pixels


def test_every_motion_and_shape_is_recognised():
  # Per-label check so one weak class cannot hide behind a good average.
  hits = collections.Counter()
  totals = collections.Counter()
  rng = np.random.default_rng(0)
  for color, shape, motion in shapes.COMBINATIONS[:23]:  # all shape/motion pairs
    for _ in range(3):
      video = shapes.render(dict(color=color, shape=shape, motion=motion), 16, 32, rng)
      got = metrics.detect(video)
      totals[shape, motion] += 1
      hits[shape, motion] += got["shape"] == shape and got["motion"] == motion
  assert all(hits[k] == totals[k] for k in totals), {k: hits[k] for k in totals}


def test_float_input_matches_uint8():
  videos, _ = _real(40, seed=13)
  for v in videos:
    f = v.astype(np.float32) / 127.5 - 1.0
    assert metrics.detect(f) == metrics.detect(v)


@pytest.mark.parametrize("kind", ["uniform_uint8", "gaussian_float", "sparse_gaussian"])
def test_noise_scores_near_chance(kind):
  n = 120
  rng = np.random.default_rng(1)
  shape = (n, 16, 32, 32, 3)
  if kind == "uniform_uint8":
    videos = rng.integers(0, 256, size=shape, dtype=np.uint8)
  elif kind == "gaussian_float":
    videos = np.clip(rng.normal(0.0, 1.0, size=shape), -1, 1).astype(np.float32)
  else:  # mostly black with scattered bright pixels: blobs that are not objects
    videos = np.clip(rng.normal(-1.0, 0.5, size=shape), -1, 1).astype(np.float32)
  got = metrics.score(videos, _random_captions(n))
  chance = metrics.chance_levels()
  for key in ("color_acc", "shape_acc", "motion_acc"):
    assert got[key] <= 2 * chance[key] + 0.1, (key, got, chance)
  assert got["all_acc"] <= 0.05


def test_real_videos_with_wrong_captions_score_near_chance():
  # The detector reads the video, not some bias: mismatched prompts get chance.
  videos, _ = _real(150, seed=15)
  got = metrics.score(videos, _random_captions(150, seed=3))
  chance = metrics.chance_levels()
  for key in ("color_acc", "shape_acc", "motion_acc"):
    assert got[key] <= 2 * chance[key] + 0.1, (key, got, chance)


def test_robust_to_pixel_noise_and_speckles():
  videos, captions = _real(80, seed=16)
  rng = np.random.default_rng(2)
  noisy = videos.astype(np.float32) / 127.5 - 1.0 + rng.normal(0, 0.25, videos.shape)
  got = metrics.score(np.clip(noisy, -1, 1), captions)
  for key in ("color_acc", "shape_acc", "motion_acc"):
    assert got[key] >= 0.9, got


def test_frozen_and_reversed_videos():
  videos, captions = _real(60, seed=14)
  motions = [shapes.parse_caption(c)["motion"] for c in captions]
  frozen = np.repeat(videos[:, :1], videos.shape[1], axis=1)
  got = [metrics.detect(v)["motion"] for v in frozen]
  assert all(m == metrics.NONE for m in got), collections.Counter(got)
  # Time-reversal swaps direction words: the detector really reads the order.
  rev = [metrics.detect(v[::-1])["motion"] for v in videos]
  swap = {"moves left": "moves right", "moves right": "moves left",
          "moves up": "moves down", "moves down": "moves up",
          "grows": "shrinks", "shrinks": "grows"}
  for m, r in zip(motions, rev):
    assert r == swap.get(m, m)


def test_empty_video_and_bad_input():
  black = np.zeros((8, 32, 32, 3), np.uint8)
  assert metrics.detect(black) == dict(color="none", shape="none", motion="none")
  assert metrics.detect(-np.ones((8, 32, 32, 3), np.float32))["shape"] == "none"
  with pytest.raises(ValueError, match="video"):
    metrics.detect(np.zeros((32, 32, 3), np.uint8))
  with pytest.raises(ValueError):
    metrics.score(np.zeros((2, 4, 16, 16, 3), np.uint8), ["a red square grows"])
  with pytest.raises(ValueError, match="Cannot parse"):
    metrics.score(np.zeros((1, 4, 16, 16, 3), np.uint8), ["a square"])


def test_chance_levels():
  c = metrics.chance_levels()
  assert c["color_acc"] == pytest.approx(1 / 7)
  assert c["shape_acc"] == pytest.approx(8 / 23)  # squares and triangles: 8 motions each
  assert c["motion_acc"] == pytest.approx(3 / 23)  # non-rotating motions: 3 shapes each
  assert c["all_acc"] == pytest.approx(1 / 161)


def test_the_style_detector_tells_outlines_from_solid_shapes_and_keeps_the_labels():
  for i in range(60):
    outline, solid = (shapes.example(5, i, 16, 32, style) for style in ("outline", ""))
    assert metrics.detect_style(outline["video"]) == "outline", outline["caption"]
    assert metrics.detect_style(solid["video"]) == "solid", solid["caption"]
    got = metrics.detect(outline["video"])  # same motion and colour in either style
    assert (got["color"], got["motion"]) == (outline["color"], outline["motion"])
  assert metrics.detect_style(np.zeros((4, 32, 32, 3), np.uint8)) == metrics.NONE


def _stationary(n, frames=64, seed=21):
  exs = [shapes.example(seed, i, frames, 32, stationary=True) for i in range(n)]
  return np.stack([e["video"] for e in exs]), [e["caption"] for e in exs]


def test_every_window_of_a_stationary_clip_reads_back_its_labels():
  """The stationary variant (data.stationary_frames): any window of the trained length
  of a long clip shows the clip's labels, read on a torus."""
  videos, captions = _stationary(48)
  windows = [v[s:s + 16] for v in videos for s in range(0, 49, 6)]
  labels = [c for c in captions for _ in range(0, 49, 6)]
  got = metrics.score(windows, labels, stationary=True)
  for key in ("color_acc", "shape_acc", "motion_acc"):
    assert got[key] == 1.0, got
  # Read as a default clip, a window in which the object wraps around looks otherwise.
  assert metrics.score(windows, labels)["motion_acc"] < 0.95


def test_the_stationary_reading_stays_at_chance_on_noise_and_wrong_captions():
  rng = np.random.default_rng(4)
  chance = metrics.chance_levels()
  noise = rng.integers(0, 256, size=(100, 16, 32, 32, 3), dtype=np.uint8)
  wrong = _stationary(100, frames=16, seed=22)[0]
  for videos in (noise, wrong):
    got = metrics.score(videos, _random_captions(100, seed=5), stationary=True)
    for key in ("color_acc", "shape_acc", "motion_acc"):
      assert got[key] <= 2 * chance[key] + 0.1, (key, got, chance)
  # The default clips read the same either way.
  videos, captions = _real(80, seed=23)
  assert (metrics.score(videos, captions, stationary=True)["motion_acc"] ==
          metrics.score(videos, captions)["motion_acc"])


def test_track_follows_the_object_across_the_edge():
  labels = dict(color="red", shape="square", motion="moves left")
  video = shapes.render(labels, 64, 32, np.random.default_rng(1), stationary=True)
  xy = metrics.track(video, stationary=True)
  steps = np.diff(xy[:, 0])
  assert np.all(steps < 0) and np.all(steps > -2.)  # left every frame, no jump
  assert xy[0, 0] - xy[-1, 0] > 32  # once around the frame and more
  np.testing.assert_allclose(xy[:, 1], xy[0, 1], atol=0.5)
  plain = metrics.track(video)  # without the torus: the wrap is a jump the other way
  assert np.nanmax(np.diff(plain[:, 0])) > 10
  dark = np.zeros((4, 32, 32, 3), np.uint8)
  dark[2, 10:14, 10:14] = 255
  got = metrics.track(dark)
  assert np.isnan(got[[0, 1, 3]]).all() and np.allclose(got[2], [12, 12])


def test_backward_steps_count_restarts_not_wraps():
  """A move that goes on (the stationary data, wrapping around) has none; clips of the
  default data one after another (the motion replayed) have one per restart."""
  labels = dict(color="red", shape="square", motion="moves right")
  rng = np.random.default_rng(2)
  going_on = shapes.render(labels, 64, 32, rng, stationary=True)
  replayed = np.concatenate([shapes.render(labels, 16, 32, rng) for _ in range(4)])
  assert metrics.backward_steps(going_on, "a red square moves right") == 0
  assert metrics.backward_steps(replayed, "a red square moves right") == 3
  reverse = going_on[::-1]  # every step backwards, each below 2 px: not a jump
  assert metrics.backward_steps(reverse, "a red square moves right") == 0
  assert metrics.backward_steps(reverse, "a red square moves right", min_px=0.5) == 63
  assert metrics.backward_steps(going_on, "a red square grows") is None
