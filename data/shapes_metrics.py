"""Evaluation of generated videos against their prompts.

`detect` is an analytic (no learned weights) detector for the embedded shapes
benchmark (`data/shapes.py`): it reads back the colour, shape and motion of the single
object in a video, so generated samples can be scored for prompt accuracy with
`score`. It is deliberately simple, rotation-robust and resolution-robust: ~100%
accurate on the generator's own clips (also with pixel noise), chance level when the
captions do not match the videos, and it reports 'none' (no credit) for noise that
is not one object on a dark background (see tests/test_metrics.py).

Pipeline per frame: foreground = brightest channel above FG_THRESHOLD; the object =
the largest connected foreground component; its area, centroid, fill ratio and
angular harmonics feed a shape vote, and their trajectories over time the motion.

Conventions: video [t, h, w, 3], either uint8 in [0, 255] or float in [-1, 1];
image coordinates with y pointing down ('moves up' means y decreases).
"""

from __future__ import annotations

import collections
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage

from data import shapes as shapes_lib

NONE = "none"  # label returned when nothing (or nothing conclusive) is seen

# A pixel is foreground when its brightest channel exceeds this fraction of full
# scale: well above the black background, and above the faint anti-aliased rim.
FG_THRESHOLD = 0.35
# Frames with fewer foreground pixels than this (fraction of the frame, at least 3 px)
# carry no usable shape/position and are ignored.
MIN_AREA_FRAC = 0.002
# Frames with more foreground than this are not "one object on black" (the
# generator's largest object covers ~20% of the frame): noise or a wash of colour
# gets no credit for any label.
MAX_AREA_FRAC = 0.5
# The object is the largest 4-connected foreground component (small spurious blobs
# are ignored); if it holds less than this fraction of the foreground, the frame is
# scattered pixels rather than an object. 4-connected clusters of i.i.d. noise stay
# small below the ~59% percolation density: at 50% density on 32x32 the largest holds
# ~18% (at most ~42%) of the foreground.
MIN_COMPONENT_FRAC = 0.5

# Shape prototypes in (fill, |z3|, |z4|) space, measured on clean 32x32 clips:
#   fill = area / (pi * (r_max + 0.5)^2), r_max the farthest foreground pixel centre
#     from the centroid (+0.5 px for the pixel's extent): ~1 for a disc, 2/pi for a
#     square, 0.41 for a triangle in the continuum; pixelisation lowers all three.
#   |zk| = |sum d^2 exp(i k phi)| / sum d^2 over foreground pixels (polar coordinates
#     d, phi about the centroid): the k-fold angular harmonic. A triangle has 3-fold
#     symmetry (strong z3, no z4), a square 4-fold (strong z4, no z3), a disc neither.
# All three features are rotation invariant, so rotating shapes are classified as well.
_SHAPE_PROTOTYPES = collections.OrderedDict(
    circle=np.array([0.86, 0.0, 0.0]),
    square=np.array([0.65, 0.0, 0.28]),
    triangle=np.array([0.46, 0.54, 0.0]),
)
# Symmetry order of each polygon: its orientation is defined modulo 360/k degrees.
_SYMMETRY = {"square": 4, "triangle": 3}

# Motion thresholds, in fractions of the frame size (the generator moves objects by
# 40-50% of the frame and bounces them by 30-40%).
MOVE_MIN = 0.2  # net displacement for 'moves <dir>'
BOUNCE_MIN_RANGE = 0.12  # vertical extent of a bounce
BOUNCE_PATH_RATIO = 2.0  # path length / net displacement above this: back and forth
AREA_RATIO = 1.5  # last/first area above this: grows; below 1/this: shrinks
ROTATE_MIN_DEG = 30.0  # the generator turns polygons by 75 degrees
ROTATE_MIN_HARMONIC = 0.1  # below this, the orientation estimate is noise


def _to_unit(video) -> np.ndarray:
  """uint8 [0, 255] or float [-1, 1] -> float32 [0, 1]."""
  v = np.asarray(video)
  if v.ndim != 4 or v.shape[-1] != 3:
    raise ValueError(f"Expected a video [t, h, w, 3], got shape {v.shape}.")
  if np.issubdtype(v.dtype, np.integer):
    return v.astype(np.float32) / 255.0
  return np.clip((v.astype(np.float32) + 1.0) / 2.0, 0.0, 1.0)


def _object_mask(fg: np.ndarray) -> np.ndarray | None:
  """The object's pixels in one foreground mask [h, w] (bool), or None if none."""
  h, w = fg.shape
  total = int(fg.sum())
  if total < max(3, MIN_AREA_FRAC * h * w) or total > MAX_AREA_FRAC * h * w:
    return None
  labels, n = ndimage.label(fg)  # default structure: 4-connectivity
  sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
  k = int(np.argmax(sizes))
  if sizes[k] < max(3, MIN_COMPONENT_FRAC * total):
    return None
  return labels == k + 1


def _frame_features(mask: np.ndarray) -> dict:
  """Geometry of one object mask [h, w] (bool, non-empty)."""
  ys, xs = np.nonzero(mask)
  area = xs.size
  x, y = xs + 0.5, ys + 0.5  # pixel centres
  cx, cy = x.mean(), y.mean()
  dx, dy = x - cx, y - cy
  d2 = dx * dx + dy * dy
  rmax = float(np.sqrt(d2.max()))
  phi = np.arctan2(dy, dx)
  norm = max(float(d2.sum()), 1e-6)
  z = {k: complex((d2 * np.exp(1j * k * phi)).sum()) / norm for k in (3, 4)}
  return dict(
      area=float(area),
      cx=float(cx),
      cy=float(cy),
      fill=area / (np.pi * (rmax + 0.5) ** 2),
      z3=z[3],
      z4=z[4],
  )


def _classify_shape(feats: Sequence[dict]) -> str:
  """Area-weighted vote of per-frame nearest-prototype shape decisions."""
  votes = collections.Counter()
  for f in feats:
    x = np.array([f["fill"], abs(f["z3"]), abs(f["z4"])])
    name = min(_SHAPE_PROTOTYPES, key=lambda s: np.sum((x - _SHAPE_PROTOTYPES[s]) ** 2))
    # Big frames are resolved better (a shrunk triangle is a handful of pixels).
    votes[name] += f["area"]
  return votes.most_common(1)[0][0]


def _classify_color(px: np.ndarray) -> str:
  """Nearest named colour to the median chroma of the object's pixels px [n, 3]."""
  # Dividing by the brightest channel removes the anti-aliasing/brightness factor
  # and keeps only hue and saturation (edge pixels of a red disc are dark red).
  chroma = px / np.maximum(px.max(axis=-1, keepdims=True), 1e-6)
  med = np.median(chroma, axis=0)
  names = list(shapes_lib.COLORS)
  protos = np.stack([shapes_lib.COLORS[n] for n in names]).astype(np.float32) / 255.0
  return names[int(np.argmin(np.sum((protos - med) ** 2, axis=-1)))]


def _rotation_deg(feats: Sequence[dict], shape: str) -> float:
  """Total (unwrapped) turn of the polygon's orientation over the clip, degrees."""
  k = _SYMMETRY.get(shape)
  if k is None or len(feats) < 2:
    return 0.0
  z = np.array([f[f"z{k}"] for f in feats])
  if np.mean(np.abs(z)) < ROTATE_MIN_HARMONIC:
    return 0.0
  # arg(z_k)/k is the orientation modulo 360/k; per-frame steps are far below the
  # half period, so unwrapping in the k-fold phase recovers the accumulated turn.
  phase = np.unwrap(np.angle(z))
  return float(np.degrees(abs(phase[-1] - phase[0]) / k))


def _classify_motion(feats: Sequence[dict], shape: str, h: int, w: int,
                     stationary: bool = False) -> str:
  """Motion from the centroid/area/orientation trajectories of the valid frames."""
  n = len(feats)
  if n < 2:
    return NONE
  xs = np.array([f["cx"] for f in feats]) / w
  ys = np.array([f["cy"] for f in feats]) / h
  areas = np.array([f["area"] for f in feats])
  if stationary:  # on a torus: a step of more than half the frame went the other way
    xs, ys = np.unwrap(xs, period=1.0), np.unwrap(ys, period=1.0)
  dx, dy = xs[-1] - xs[0], ys[-1] - ys[0]
  path_y = float(np.sum(np.abs(np.diff(ys))))
  range_y = float(ys.max() - ys.min())

  # Translation is checked first: an object drifting out of the frame also loses
  # area, but a grow/shrink/rotate keeps its centroid still.
  if abs(dx) >= MOVE_MIN and abs(dx) >= 1.5 * abs(dy):
    return "moves right" if dx > 0 else "moves left"
  # Largest rise and largest fall anywhere in the clip (not only between neighbours):
  # both are large for a bounce, one is ~0 for a monotone move.
  rise = float(np.max(np.maximum.accumulate(ys) - ys))
  fall = float(np.max(ys - np.minimum.accumulate(ys)))
  back_and_forth = path_y > BOUNCE_PATH_RATIO * abs(dy) or min(rise, fall) >= 0.25 * range_y
  if range_y >= BOUNCE_MIN_RANGE and back_and_forth:
    return "bounces up and down"
  if abs(dy) >= MOVE_MIN:
    return "moves down" if dy > 0 else "moves up"

  # Size: compare the first and last ~eighth of the clip (robust to one bad frame);
  # stationary growth restarts, so there the median change over a quarter of the
  # clip (long enough to see past pixel steps, short enough that a restart spoils
  # only a quarter of the pairs), scaled to the clip.
  m = max(1, n // 8)
  if stationary:
    lag = max(1, n // 4)
    log_area = np.log(areas)
    ratio = float(np.exp(np.median(log_area[lag:] - log_area[:-lag]) * (n - 1) / lag))
  else:
    ratio = areas[-m:].mean() / max(areas[:m].mean(), 1e-6)
  if ratio > AREA_RATIO:
    return "grows"
  if ratio < 1.0 / AREA_RATIO:
    return "shrinks"

  if _rotation_deg(feats, shape) >= ROTATE_MIN_DEG:
    return "rotates"
  return NONE


def _torus_shift(fg: np.ndarray) -> tuple[int, int]:
  """(rows, columns) to roll a foreground mask [h, w] by (np.roll by minus them) so
  that an empty row and an empty column sit at its first edges: an object that wraps
  around the frame's edges becomes one piece (0 where no row/column is empty)."""
  rows, cols = np.flatnonzero(~fg.any(axis=1)), np.flatnonzero(~fg.any(axis=0))
  return (int(rows[0]) if rows.size else 0, int(cols[0]) if cols.size else 0)


def _objects(video, stationary: bool) -> tuple[list, int, int]:
  """([(frame index, the object's pixels [n, 3], its features)] for every frame that
  shows one object, h, w); positions in the frame's own coordinates (stationary: each
  frame read on a torus, ``_torus_shift``)."""
  unit = _to_unit(video)
  _, h, w, _ = unit.shape
  out = []
  for i, u in enumerate(unit):
    fg = u.max(axis=-1) > FG_THRESHOLD
    dy, dx = _torus_shift(fg) if stationary else (0, 0)
    if dy or dx:
      u, fg = (np.roll(a, (-dy, -dx), axis=(0, 1)) for a in (u, fg))
    m = _object_mask(fg)
    if m is not None:
      f = _frame_features(m)
      f["cx"], f["cy"] = (f["cx"] + dx) % w, (f["cy"] + dy) % h
      out.append((i, u[m], f))
  return out, h, w


def detect(video, stationary: bool = False) -> dict:
  """Reads back the labels of one video.

  Args:
    video: [t, h, w, 3], uint8 in [0, 255] or float in [-1, 1].
    stationary: read the stationary variant of the data (``shapes.render(...,
      stationary=True)``), any window of it: the frame is a torus (an object leaving
      one edge enters at the other) and growth restarts, so it is read from its
      typical rate per frame rather than from the first and last frames.
  Returns:
    dict(color=str, shape=str, motion=str) using the names in data.shapes, or
    'none' where nothing conclusive is seen (e.g. an all-black video).
  """
  objects, h, w = _objects(video, stationary)
  if not objects:
    return dict(color=NONE, shape=NONE, motion=NONE)
  feats = [f for _, _, f in objects]
  color = _classify_color(np.concatenate([px for _, px, _ in objects]))
  shape = _classify_shape(feats)
  motion = _classify_motion(feats, shape, h, w, stationary)
  return dict(color=color, shape=shape, motion=motion)


def track(video, stationary: bool = False) -> np.ndarray:
  """The object's centroid per frame, float [t, 2] (x, y in pixels), NaN where no frame
  shows one object. stationary: on a torus, unwrapped so that a step of more than
  half the frame counts as the shorter way round (the track stays continuous when
  the object leaves one edge and enters at the other)."""
  objects, h, w = _objects(video, stationary)
  out = np.full((np.shape(video)[0], 2), np.nan)
  if objects:
    idx = [i for i, _, _ in objects]
    xy = np.array([[f["cx"], f["cy"]] for _, _, f in objects])
    if stationary:
      xy = np.stack([np.unwrap(xy[:, 0], period=w), np.unwrap(xy[:, 1], period=h)], 1)
    out[idx] = xy
  return out


# Axis (0: x, 1: y) and sign of the prompted direction of each translation.
_DIRECTIONS = {"moves left": (0, -1), "moves right": (0, 1), "moves up": (1, -1),
               "moves down": (1, 1)}


def backward_steps(video, caption: str, min_px: float = 2.0,
                   stationary: bool = True) -> int | None:
  """Frames whose centroid steps against the direction a 'moves <dir>' caption asks
  for by more than min_px pixels (a motion that restarts instead of going on); None
  for the other motions. stationary: ``track``'s (on a torus)."""
  motion = shapes_lib.parse_caption(caption)["motion"]
  if motion not in _DIRECTIONS:
    return None
  axis, sign = _DIRECTIONS[motion]
  step = sign * np.diff(track(video, stationary)[:, axis])
  return int(np.sum(step[np.isfinite(step)] < -min_px))


# 'outline' when the object's holes (pixels enclosed by it but not part of it) make up
# at least this fraction of the filled object, in the median frame (the generator:
# solid 0 always, outlined 0.10 or more).
OUTLINE_HOLE_FRAC = 0.05


def hole_fraction(video) -> float:
  """Median over frames of the object's enclosed background / its filled area: 0 for
  the solid shapes, 0.10 or more (median 0.30) for the outlined style
  (data.shapes.STYLES); NaN when no frame shows one object."""
  unit = _to_unit(video)
  fracs = []
  for m in map(_object_mask, unit.max(axis=-1) > FG_THRESHOLD):
    if m is not None:
      filled = ndimage.binary_fill_holes(m)
      fracs.append(1.0 - m.sum() / filled.sum())
  return float(np.median(fracs)) if fracs else float("nan")


def detect_style(video) -> str:
  """'outline', 'solid' (the two looks of data.shapes) or 'none' (no object seen)."""
  frac = hole_fraction(video)
  if np.isnan(frac):
    return NONE
  return "outline" if frac >= OUTLINE_HOLE_FRAC else "solid"


def score(videos: Iterable, captions: Sequence[str], stationary: bool = False) -> dict:
  """Prompt accuracy of videos against their captions.

  Args:
    videos: [n, t, h, w, 3] array (or sequence of [t, h, w, 3]), uint8 or [-1, 1].
    captions: n captions in the data.shapes grammar ('a red square moves left').
    stationary: ``detect``'s (videos of the stationary variant, or windows of them).
  Returns:
    dict(color_acc, shape_acc, motion_acc, all_acc, n); accuracies in [0, 1]; and
    by_motion: {prompted motion: dict(n, acc, detected={detected motion: count})},
    where a model's motion errors go.
  """
  videos = list(videos)
  if len(videos) != len(captions):
    raise ValueError(f"Got {len(videos)} videos but {len(captions)} captions.")
  if not videos:
    raise ValueError("score() needs at least one video.")
  hits = collections.Counter()
  detected = collections.defaultdict(collections.Counter)  # prompted -> detected
  for video, text in zip(videos, captions):
    want = shapes_lib.parse_caption(text)
    got = detect(video, stationary)
    detected[want["motion"]][got["motion"]] += 1
    ok = [got[k] == want[k] for k in ("color", "shape", "motion")]
    hits["color"] += ok[0]
    hits["shape"] += ok[1]
    hits["motion"] += ok[2]
    hits["all"] += all(ok)
  n = len(videos)
  return dict(
      color_acc=hits["color"] / n,
      shape_acc=hits["shape"] / n,
      motion_acc=hits["motion"] / n,
      all_acc=hits["all"] / n,
      n=n,
      by_motion={
          m: dict(n=sum(c.values()), acc=c[m] / sum(c.values()),
                  detected=dict(c.most_common()))
          for m, c in sorted(detected.items())},
  )


def frame_change(videos) -> dict:
  """How evenly a set of videos changes over time.

  d[f] = mean |x[f+1] - x[f]| over videos, pixels and channels (values in [0, 1]) for
  every pair of neighbouring frames. Smooth motion changes about equally at every
  pair; a clip that holds still and then jumps (e.g. frames repeated in blocks)
  concentrates its change on a few pairs; flicker raises every pair. Returns
  dict(profile=d (list), mean=mean(d), max_over_median=max(d) / median(d)).
  """
  units = np.stack([_to_unit(v) for v in videos])  # [n, t, h, w, 3]
  d = np.abs(np.diff(units, axis=1)).mean(axis=(0, 2, 3, 4))
  return dict(profile=[float(x) for x in d], mean=float(d.mean()),
              max_over_median=float(d.max() / max(np.median(d), 1e-8)))


def chance_levels() -> dict:
  """Accuracy of the best constant guess under the generator's label distribution.

  Labels are uniform over data.shapes.COMBINATIONS (no rotating circles), so e.g.
  shape is 'square' 8/23 of the time and motion 'moves left' 3/23. Any detector
  that ignores the video scores at most this in expectation. Keys as in `score`.
  """
  combos = shapes_lib.COMBINATIONS
  n = len(combos)
  out = {}
  for i, key in enumerate(("color", "shape", "motion")):
    out[f"{key}_acc"] = collections.Counter(c[i] for c in combos).most_common(1)[0][1] / n
  out["all_acc"] = 1.0 / n
  return out
