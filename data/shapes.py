"""Deterministic toy video-caption data: one coloured shape moving on black.

This is the project's embedded benchmark (docs/evaluation.md):
small enough to train a tiny model on a CPU, and with ground truth that an analytic
detector (`data.shapes_metrics.detect`) can read back from a generated video, so samples
can be *scored* for colour, shape and motion. Periodic motion ('bounces up and down')
is included because that is where keyframe + temporal-super-resolution cascades fail,
which is the paper's core claim.

Pure numpy (no TensorFlow), so the generator can be used anywhere.

Geometry conventions: image coordinates, x to the right, y *down* (so 'moves up'
means y decreases); pixel (row i, col j) covers [j, j+1) x [i, i+1). Every shape is
described by its circumradius r (the radius of the smallest circle enclosing it), so
the same r keeps any shape inside the frame whatever its orientation.
"""

from __future__ import annotations

import collections
import itertools
import re

import numpy as np

# Saturated, well separated colours: a tiny model can learn them and the detector
# (which normalises each pixel by its brightest channel) separates them by hue/saturation.
COLORS: "collections.OrderedDict[str, np.ndarray]" = collections.OrderedDict(
    (name, np.asarray(rgb, dtype=np.uint8))
    for name, rgb in [
        ("red", (255, 0, 0)),
        ("green", (0, 255, 0)),
        ("blue", (0, 0, 255)),
        ("yellow", (255, 255, 0)),
        ("magenta", (255, 0, 255)),
        ("cyan", (0, 255, 255)),
        ("white", (255, 255, 255)),
    ]
)
SHAPES = ("circle", "square", "triangle")
MOTIONS = (
    "moves left",
    "moves right",
    "moves up",
    "moves down",
    "bounces up and down",
    "grows",
    "shrinks",
    "rotates",
)

# Number of polygon sides; a circle has none.
_SIDES = {"square": 4, "triangle": 3}

# Object circumradius as a fraction of the frame size (32 px -> 5.76 px).
BASE_RADIUS = 0.18
# Scale range of 'grows' (reversed for 'shrinks').
GROW_RANGE = (0.5, 1.4)
# Total rotation of 'rotates', degrees: below the square's 90 degree symmetry so the
# turn is detectable (and well below the triangle's 120).
ROTATION_DEG = 75.0
# Looks of the shapes ('' = solid): 'outline' draws each shape as its outline, a line
# OUTLINE_WIDTH x the frame size wide (the style of stylized generation).
STYLES = ("", "outline")
OUTLINE_WIDTH = 0.05
# Periods of the |sin| bounce per clip, independent of the number of frames (clips
# shorter than 8 frames get num_frames/4 periods).
BOUNCE_PERIODS = 2.0
# The stationary variant (render(..., stationary=True)): every motion has a rate per
# frame, the one a default clip of this many frames has, whatever the clip's length:
# a translation of 40-50% of the frame per 15 frames (leaving one edge, the object
# enters at the opposite one: the frame is a torus), a bounce every 8 frames, a turn
# of 75 degrees per 15 frames. Growth cannot go on forever in a frame: the radius
# grows (shrinks) geometrically over GROW_PERIOD frames from one end of GROW_RANGE to
# the other, then starts again: a window of the reference length holds at most one
# restart and keeps growing (shrinking) at the same rate around it.
STATIONARY_REFERENCE_FRAMES = 16
GROW_PERIOD = 24


def valid_combination(shape: str, motion: str) -> bool:
  # A rotating circle looks static, so 'rotates' is only used with polygons.
  return not (shape == "circle" and motion == "rotates")


# Every valid (color, shape, motion) triple; labels are sampled uniformly from this.
COMBINATIONS: tuple[tuple[str, str, str], ...] = tuple(
    (c, s, m) for c, s, m in itertools.product(COLORS, SHAPES, MOTIONS)
    if valid_combination(s, m)
)


def caption(color: str, shape: str, motion: str) -> str:
  """'a red square moves left', 'a blue circle bounces up and down', ..."""
  if color not in COLORS or shape not in SHAPES or motion not in MOTIONS:
    raise ValueError(
        f"Unknown label ({color!r}, {shape!r}, {motion!r}); colours are "
        f"{list(COLORS)}, shapes {list(SHAPES)}, motions {list(MOTIONS)}."
    )
  return f"a {color} {shape} {motion}"


def benchmark_prompts(n: int, seed: int) -> list:
  """The benchmark's n prompts (evaluate.py): captions of (colour, shape, motion)
  combinations drawn uniformly with the seed."""
  rng = np.random.default_rng(seed)
  return [caption(*COMBINATIONS[i]) for i in rng.integers(len(COMBINATIONS), size=n)]


_CAPTION_RE = re.compile(
    r"^an? (?P<color>{}) (?P<shape>{}) (?P<motion>{})$".format(
        "|".join(COLORS), "|".join(SHAPES), "|".join(re.escape(m) for m in MOTIONS)
    )
)


def parse_caption(text: str) -> dict:
  """Inverse of `caption`: returns dict(color=..., shape=..., motion=...).

  Case, surrounding whitespace, repeated spaces and a trailing '.' are tolerated.
  Raises ValueError for anything else.
  """
  norm = " ".join(str(text).strip().lower().rstrip(".").split())
  m = _CAPTION_RE.match(norm)
  if m is None:
    raise ValueError(
        f"Cannot parse caption {text!r}: expected 'a <colour> <shape> <motion>' with "
        f"colour in {list(COLORS)}, shape in {list(SHAPES)}, motion in {list(MOTIONS)}."
    )
  return m.groupdict()


def all_captions() -> list[str]:
  """Every valid caption (7 colours x 23 shape/motion pairs = 161)."""
  return [caption(*c) for c in COMBINATIONS]


def _supersample_grid(size: int) -> tuple[np.ndarray, np.ndarray, int]:
  """Sub-pixel sample coordinates (x, y), each [S, S] with S = size * ss."""
  # 4x4 samples per pixel gives clean edges at the small sizes we use; 2x2 keeps
  # large frames cheap.
  ss = 4 if size <= 64 else 2
  c = (np.arange(size * ss, dtype=np.float32) + 0.5) / ss
  y, x = np.meshgrid(c, c, indexing="ij")
  return x, y, ss


def _coverage(shape: str, cx, cy, r, theta, size: int) -> np.ndarray:
  """Fraction of each pixel covered by the shape, float32 [t, size, size].

  cx, cy, r, theta: [t] arrays (centre, circumradius, orientation in radians).
  """
  x, y, ss = _supersample_grid(size)
  dx = x[None] - np.asarray(cx, np.float32)[:, None, None]
  dy = y[None] - np.asarray(cy, np.float32)[:, None, None]
  r = np.asarray(r, np.float32)[:, None, None]
  if shape == "circle":
    inside = dx * dx + dy * dy <= r * r
  else:
    n = _SIDES[shape]
    # Vertices at theta + 2*pi*k/n; edge k's outward normal lies halfway between two
    # vertices, at distance r*cos(pi/n) (the apothem) from the centre.
    inside = np.ones(dx.shape, dtype=bool)
    for k in range(n):
      a = np.asarray(theta, np.float32)[:, None, None] + np.pi * (2 * k + 1) / n
      inside &= dx * np.cos(a) + dy * np.sin(a) <= r * np.cos(np.pi / n)
  t = inside.shape[0]
  return inside.reshape(t, size, ss, size, ss).mean(axis=(2, 4))


def _check_labels(labels: dict) -> tuple[str, str, str]:
  color, shape, motion = labels["color"], labels["shape"], labels["motion"]
  caption(color, shape, motion)  # validates names
  if not valid_combination(shape, motion):
    raise ValueError(f"Invalid combination: a {shape} cannot '{motion}'.")
  return color, shape, motion


def render(labels: dict, num_frames: int, size: int, rng: np.random.Generator,
           style: str = "", stationary: bool = False) -> np.ndarray:
  """Renders one clip. Returns uint8 [num_frames, size, size, 3].

  labels: dict with 'color', 'shape', 'motion' (names from COLORS/SHAPES/MOTIONS).
  rng supplies the random start position, orientation, extent and phase; the object
  stays fully inside the frame for the whole clip. style: one of STYLES; the same rng
  draws give the same motion in every style.

  stationary: the motion has a rate per frame instead of an extent per clip (see
  STATIONARY_REFERENCE_FRAMES), so a clip of any length continues it and every window
  of STATIONARY_REFERENCE_FRAMES frames shows it as a default clip does; a translating
  object wraps around the frame's edges. Read back with
  ``shapes_metrics.detect(..., stationary=True)``.
  """
  color, shape, motion = _check_labels(labels)
  if style not in STYLES:
    raise ValueError(f"Unknown style {style!r}; use one of {STYLES}.")
  if num_frames < 4 or size < 16:
    raise ValueError(f"Need num_frames >= 4 and size >= 16, got {num_frames}, {size}.")
  t = num_frames
  # Clip progress per frame: 0..1 over the clip, or (stationary) over the first
  # STATIONARY_REFERENCE_FRAMES frames and on at the same rate.
  s = (np.arange(t) / (STATIONARY_REFERENCE_FRAMES - 1) if stationary
       else np.linspace(0.0, 1.0, t))
  r0 = BASE_RADIUS * size
  margin = 0.5  # keep anti-aliased edges off the border

  def uniform(lo, hi):
    return float(rng.uniform(lo, hi)) if hi > lo else float(lo)

  r = np.full(t, r0)
  theta = np.full(t, uniform(0.0, 2 * np.pi))
  lo, hi = r0 + margin, size - r0 - margin  # allowed centre range for radius r0
  cx = np.full(t, uniform(lo, hi))
  cy = np.full(t, uniform(lo, hi))
  wrap_axis = None  # stationary translations: the axis along which the frame wraps

  if motion.startswith("moves"):
    # Traverse 40-50% of the frame along one axis (stationary: per 15 frames, on a torus).
    dist = uniform(0.40, 0.50) * size
    direction = motion.split()[1]
    if stationary:
      path = uniform(0.0, size) + dist * s * (-1 if direction in ("left", "up") else 1)
      path = np.mod(path, size)
      wrap_axis = "x" if direction in ("left", "right") else "y"
    else:
      dist = min(dist, hi - lo)
      path = uniform(lo, hi - dist) + dist * s
      if direction in ("left", "up"):  # decreasing coordinate
        path = path[::-1]
    if direction in ("left", "right"):
      cx = path
    else:
      cy = path
  elif motion == "bounces up and down":
    # |sin| bounce off a floor with BOUNCE_PERIODS periods per clip and a random phase.
    # Using k/t (not k/(t-1)) makes the clip loop seamlessly. Very short clips get
    # fewer periods so that every period is sampled by >= 4 frames (with 2 frames
    # per period some phases would alias to a still object).
    periods = min(BOUNCE_PERIODS, t / 4)
    amp = min(uniform(0.30, 0.40) * size, hi - lo)
    floor = uniform(lo + amp, hi)
    phase = uniform(0.0, 1.0)
    if stationary:
      u = BOUNCE_PERIODS / STATIONARY_REFERENCE_FRAMES * np.arange(t) + phase
    else:
      u = periods * np.arange(t) / t + phase
    cy = floor - amp * np.abs(np.sin(np.pi * u))
  elif motion in ("grows", "shrinks"):
    a, b = GROW_RANGE if motion == "grows" else GROW_RANGE[::-1]
    if stationary:  # geometric, restarting every GROW_PERIOD frames at a random phase
      u = np.mod(np.arange(t) / GROW_PERIOD + uniform(0.0, 1.0), 1.0)
      r = r0 * a * (b / a) ** u
    else:
      r = r0 * (a + (b - a) * s)
    rmax = r0 * max(GROW_RANGE)
    cx = np.full(t, uniform(rmax + margin, size - rmax - margin))
    cy = np.full(t, uniform(rmax + margin, size - rmax - margin))
  elif motion == "rotates":
    sign = 1.0 if rng.random() < 0.5 else -1.0
    theta = theta + sign * np.deg2rad(ROTATION_DEG) * s

  def coverage(radius):
    """The shape's coverage; on a torus along wrap_axis (copies one frame away)."""
    shifts = (-size, 0, size) if wrap_axis else (0,)
    return np.max([_coverage(shape, cx + (d if wrap_axis == "x" else 0),
                             cy + (d if wrap_axis == "y" else 0), radius, theta, size)
                   for d in shifts], axis=0)

  cov = coverage(r)
  if style == "outline":  # minus the same shape with its edges moved in by the width
    inset = OUTLINE_WIDTH * size / (np.cos(np.pi / _SIDES[shape]) if shape in _SIDES else 1.)
    cov = cov - coverage(np.maximum(r - inset, 0.))
  video = cov[..., None] * COLORS[color].astype(np.float32)
  return np.clip(np.round(video), 0, 255).astype(np.uint8)


def sample_labels(rng: np.random.Generator) -> dict:
  """Uniform over the valid (color, shape, motion) combinations."""
  color, shape, motion = COMBINATIONS[int(rng.integers(len(COMBINATIONS)))]
  return dict(color=color, shape=shape, motion=motion)


def example(seed: int, index: int, num_frames: int = 16, size: int = 32,
            style: str = "", stationary: bool = False) -> dict:
  """Example `index` of the stream `seed`: a pure function of (seed, index) (and the
  style, which changes only the look; stationary: ``render``'s).

  Returns dict(video=uint8 [t, size, size, 3], caption=str, color=str, shape=str,
  motion=str).
  """
  if seed < 0 or index < 0:
    raise ValueError(f"seed and index must be non-negative, got {seed}, {index}.")
  rng = np.random.default_rng([seed, index])
  labels = sample_labels(rng)
  video = render(labels, num_frames, size, rng, style, stationary)
  return dict(video=video, caption=caption(**labels), **labels)
