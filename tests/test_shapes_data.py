"""The numpy shapes generator (data/shapes.py): determinism, captions, motions."""

import numpy as np
import pytest

from data import shapes


def _geometry(video):
  """Per-frame centroid x, y (pixels), soft area and hard mask of one clip."""
  cov = video.astype(np.float32).max(axis=-1) / 255.0  # [t, h, w] coverage
  t, h, w = cov.shape
  yy, xx = np.mgrid[0:h, 0:w] + 0.5
  area = cov.sum(axis=(1, 2))
  cx = (cov * xx).sum(axis=(1, 2)) / area
  cy = (cov * yy).sum(axis=(1, 2)) / area
  return cx, cy, area, cov > 0.5


def test_example_is_deterministic():
  a = shapes.example(3, 17, 16, 32)
  b = shapes.example(3, 17, 16, 32)
  assert np.array_equal(a["video"], b["video"])
  assert a["caption"] == b["caption"]
  c = shapes.example(3, 18, 16, 32)
  d = shapes.example(4, 17, 16, 32)
  assert not np.array_equal(a["video"], c["video"])
  assert not np.array_equal(a["video"], d["video"])


@pytest.mark.parametrize("frames,size", [(16, 32), (8, 16), (16, 64), (4, 16), (5, 17)])
def test_example_shapes_and_dtypes(frames, size):
  ex = shapes.example(0, 1, frames, size)
  assert ex["video"].shape == (frames, size, size, 3)
  assert ex["video"].dtype == np.uint8
  assert ex["video"].max() > 200  # the object is drawn at full colour
  assert ex["caption"] == shapes.caption(ex["color"], ex["shape"], ex["motion"])
  assert set(ex) == {"video", "caption", "color", "shape", "motion"}


def test_captions_round_trip():
  caps = shapes.all_captions()
  assert len(caps) == len(set(caps)) == 7 * 23
  for cap in caps:
    labels = shapes.parse_caption(cap)
    assert shapes.caption(**labels) == cap
  assert "a red square moves left" in caps
  assert "a blue circle bounces up and down" in caps
  assert "a red circle rotates" not in caps  # invisible motion is never used


def test_benchmark_prompts_are_seeded_valid_captions():
  """evaluate.py's prompts: the same for a seed (so scores in the docs compare), pinned
  for seed 0 (the README's), drawn from the valid combinations."""
  assert shapes.benchmark_prompts(3, 0) == [
      "a cyan triangle shrinks", "a magenta square moves down", "a yellow square shrinks"]
  prompts = shapes.benchmark_prompts(200, 1234)
  assert prompts == shapes.benchmark_prompts(200, 1234)
  assert prompts != shapes.benchmark_prompts(200, 4242)
  assert set(prompts) <= set(shapes.all_captions())


def test_parse_caption_is_lenient_about_format_but_strict_about_words():
  assert shapes.parse_caption("  A Red  Square moves left. ") == dict(
      color="red", shape="square", motion="moves left"
  )
  for bad in ["a red hexagon moves left", "a purple square moves left", "red square",
              "a red square moves sideways", ""]:
    with pytest.raises(ValueError, match="Cannot parse caption"):
      shapes.parse_caption(bad)


def test_labels_cover_valid_combinations_only():
  seen = set()
  for i in range(600):
    ex = shapes.example(0, i, 4, 16)
    assert not (ex["shape"] == "circle" and ex["motion"] == "rotates")
    seen.add((ex["color"], ex["shape"], ex["motion"]))
  assert len(seen) > 140  # ~uniform over the 161 combinations


def test_render_rejects_bad_input():
  rng = np.random.default_rng(0)
  with pytest.raises(ValueError):
    shapes.render(dict(color="red", shape="circle", motion="rotates"), 16, 32, rng)
  with pytest.raises(ValueError):
    shapes.render(dict(color="red", shape="oval", motion="grows"), 16, 32, rng)
  with pytest.raises(ValueError):
    shapes.render(dict(color="red", shape="square", motion="grows"), 3, 32, rng)


def _clips(motion, frames=16, size=32, n=4):
  """n clips per valid shape for one motion."""
  for shape in shapes.SHAPES:
    if shape == "circle" and motion == "rotates":
      continue
    for seed in range(n):
      rng = np.random.default_rng([seed, shapes.MOTIONS.index(motion)])
      labels = dict(color="cyan", shape=shape, motion=motion)
      yield shape, shapes.render(labels, frames, size, rng)


@pytest.mark.parametrize("frames,size", [(16, 32), (8, 16), (16, 64)])
@pytest.mark.parametrize("motion", ["moves left", "moves right", "moves up", "moves down"])
def test_linear_moves_go_the_named_way(motion, frames, size):
  for _, video in _clips(motion, frames, size):
    cx, cy, area, _ = _geometry(video)
    along, across = (cx, cy) if motion in ("moves left", "moves right") else (cy, cx)
    sign = -1 if motion in ("moves left", "moves up") else 1  # image y points down
    steps = sign * np.diff(along)
    assert np.all(steps > 0), motion  # monotone
    assert 0.35 * size <= sign * (along[-1] - along[0]) <= 0.55 * size
    assert np.ptp(across) < 0.05 * size
    # Fully visible throughout: the drawn area does not drop at the frame border.
    assert np.ptp(area) < 0.05 * area.mean() + 1.0  # supersampling jitter


@pytest.mark.parametrize("frames,size", [(16, 32), (8, 16), (32, 32)])
def test_bounce_is_periodic_vertical_motion(frames, size):
  for _, video in _clips("bounces up and down", frames, size):
    cx, cy, area, _ = _geometry(video)
    d = np.diff(cy)
    d = d[np.abs(d) > 1e-3]
    reversals = int(np.sum(np.sign(d[1:]) != np.sign(d[:-1])))
    assert reversals >= 3  # two |sin| periods: down-up-down-up...
    assert np.ptp(cy) > 0.2 * size
    assert np.ptp(cx) < 0.05 * size
    assert np.ptp(area) < 0.05 * area.mean() + 1.0  # supersampling jitter


def test_grow_shrink_and_rotate():
  for motion in ("grows", "shrinks", "rotates"):
    for shape, video in _clips(motion):
      cx, cy, area, mask = _geometry(video)
      assert np.ptp(cx) < 0.5 and np.ptp(cy) < 0.5, (shape, motion)  # centre fixed
      ratio = area[-1] / area[0]
      if motion == "grows":
        assert np.all(np.diff(area) > 0) and ratio > 4
      elif motion == "shrinks":
        assert np.all(np.diff(area) < 0) and ratio < 0.25
      else:
        assert np.ptp(area) < 0.05 * area.mean()
        # The outline turns: first and last masks differ substantially.
        changed = np.logical_xor(mask[0], mask[-1]).sum() / mask[0].sum()
        assert changed > 0.15, (shape, changed)


def test_colors_are_pure():
  for color in shapes.COLORS:
    rng = np.random.default_rng(0)
    video = shapes.render(dict(color=color, shape="square", motion="grows"), 8, 32, rng)
    fg = video.max(-1) == 255
    assert np.all(video[fg] == shapes.COLORS[color])
    assert np.all(video[video.max(-1) == 0] == 0)  # black background


@pytest.mark.parametrize("motion", shapes.MOTIONS)
def test_stationary_motion_has_a_rate_per_frame_and_goes_on(motion):
  """The stationary variant: every motion keeps the rate a 16-frame clip has, for any
  length; a translating object wraps around the frame (its area never drops), growth
  restarts every GROW_PERIOD frames, and the first frames are those of a short clip of
  the same draws."""
  for shape in ("square", "triangle"):
    rng = np.random.default_rng([3, shapes.MOTIONS.index(motion)])
    labels = dict(color="cyan", shape=shape, motion=motion)
    long = shapes.render(labels, 96, 32, rng, stationary=True)
    short = shapes.render(labels, 16, 32, np.random.default_rng([3, shapes.MOTIONS.index(
        motion)]), stationary=True)
    np.testing.assert_array_equal(long[:16], short)
    cov = long.astype(np.float32).max(-1) / 255.
    area = cov.sum((1, 2))
    if motion.startswith("moves"):
      np.testing.assert_allclose(area, area[0], rtol=0.02)  # whole on the torus
      axis = 2 if motion in ("moves left", "moves right") else 1
      sign = -1 if motion in ("moves left", "moves up") else 1
      # Circular centroid along the motion's axis: a constant step every frame.
      angle = 2 * np.pi * (np.arange(32) + 0.5) / 32
      mass = cov.sum(3 - axis)  # [t, 32] along the axis
      pos = np.unwrap(np.angle((mass * np.exp(1j * angle)).sum(1))) * 32 / (2 * np.pi)
      steps = sign * np.diff(pos)
      assert steps.min() > 0.8 * 0.4 * 32 / 15 and steps.max() < 1.2 * 0.5 * 32 / 15
      assert sign * (pos[-1] - pos[0]) > 32  # past a whole frame: it wrapped
    elif motion in ("grows", "shrinks"):
      sign = 1 if motion == "grows" else -1
      jumps = np.flatnonzero(sign * np.diff(area) < -0.3 * area.max())
      assert len(jumps) in (3, 4) and np.all(np.diff(jumps) == shapes.GROW_PERIOD)
    elif motion == "bounces up and down":
      cy = (cov * (np.arange(32)[None, :, None] + 0.5)).sum((1, 2)) / area
      # The bounce's period stays 8 frames (two per reference clip of 16).
      lows = np.flatnonzero((cy[1:-1] > cy[:-2]) & (cy[1:-1] >= cy[2:])) + 1
      assert len(lows) >= 10 and set(np.diff(lows)) <= {7, 8, 9}


def test_stationary_is_a_different_stream_and_the_default_is_unchanged():
  a = shapes.example(0, 5, 16, 32)
  b = shapes.example(0, 5, 16, 32, stationary=True)
  assert a["caption"] == b["caption"] and not np.array_equal(a["video"], b["video"])
  assert np.array_equal(a["video"], shapes.example(0, 5, 16, 32)["video"])
