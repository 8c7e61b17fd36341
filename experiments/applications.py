"""Lumiere's applications on held-out clips, measured: a table (JSON) and a figure.

  python experiments/applications.py --output_dir=applications

So far one application: video-to-video editing (SDEdit, ``stunet.editing``). Each
held-out real clip of the embedded shapes dataset ('a red square moves left') is
edited towards a caption that changes its colour and keeps its shape and motion ('a
blue square moves left'), at several strengths. Per strength:

  colour   the detector's accuracy against the new colour (the edit took);
  shape, motion   against the input's (what the edit should keep);
  track    mean distance in pixels between the object's centroid in the output and in
           the input, frame by frame (the input's trajectory kept);
  psnr     of the output against the input (dB, pixels in [-1, 1]).

The figure (``editing.png``) shows, per clip, the input and each strength's output:
every 3rd frame, then an X-T image (time runs down; each pixel the brightest of its
column, so the object's horizontal track shows whatever row it is on).
"""

import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tqdm

from configs import common
from data import shapes
from data import shapes_metrics as metrics
from stunet import checkpoints
from stunet import cli
from stunet import editing
from stunet import sampling
from stunet import video_io

_WORKDIR = flags.DEFINE_string('workdir', None, 'A STUNet workdir (default: the shipped '
                               'model).')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'applications', 'Where the JSON and PNG go.')
_NUM_CLIPS = flags.DEFINE_integer('num_clips', 16, 'Held-out clips.')
_STRENGTHS = flags.DEFINE_list('strengths', ['0.5', '0.7', '0.85', '1'],
                               'SDEdit strengths.')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
_DATA_SEED = flags.DEFINE_integer('data_seed', 4242, 'Stream of held-out clips and edits.')
_SHOWN = flags.DEFINE_integer('shown', 4, 'Clips in the figure.')


def edit_pairs(n: int, seed: int, frames: int, size: int):
  """n held-out clips [n, t, h, w, 3] in [-1, 1], their captions and the edit captions
  (another colour, the same shape and motion)."""
  rng = np.random.default_rng(seed)
  combos = [shapes.COMBINATIONS[i] for i in rng.integers(len(shapes.COMBINATIONS), size=n)]
  clips = np.stack([shapes.render(dict(color=c, shape=s, motion=m), frames, size, rng)
                    for c, s, m in combos]).astype(np.float32) / 127.5 - 1.
  colours = list(shapes.COLORS)
  edits = []
  for c, s, m in combos:
    others = [o for o in colours if o != c]
    edits.append(shapes.caption(others[rng.integers(len(others))], s, m))
  return clips, [shapes.caption(*c) for c in combos], edits


def centroids(videos) -> np.ndarray:
  """[n, t, h, w, 3] in [-1, 1] -> [n, t, 2] (x, y) of the foreground; NaN where empty."""
  fg = (np.asarray(videos).max(-1) + 1.) / 2. > metrics.FG_THRESHOLD
  mass = fg.sum((2, 3)).astype(np.float32)
  ys, xs = np.arange(fg.shape[2]), np.arange(fg.shape[3])
  with np.errstate(invalid='ignore', divide='ignore'):
    cx = (fg.sum(2) * xs).sum(-1) / mass
    cy = (fg.sum(3) * ys).sum(-1) / mass
  return np.stack([cx, cy], -1)


def psnr(a, b) -> float:
  mse = float(np.mean((np.asarray(a) - np.asarray(b)) ** 2))
  return float(10. * np.log10(4. / max(mse, 1e-12)))  # peak-to-peak 2 in [-1, 1]


def measure_editing(gen, config, strengths, clips, captions, edits):
  guidance = config.sample.guidance
  rows, outputs = {}, {}
  keep = [shapes.parse_caption(c) for c in captions]
  want = [shapes.parse_caption(e) for e in edits]
  track_in = centroids(clips)
  for s in tqdm.tqdm(strengths, desc='editing', unit='strength', file=sys.stderr,
                     dynamic_ncols=True):
    out = np.concatenate([
        editing.sdedit(gen, edits[i:i + 8], clips[i:i + 8], strength=s, guidance=guidance,
                       seed=_SEED.value + i) for i in range(0, len(clips), 8)])
    got = [metrics.detect(v) for v in out]
    dist = np.linalg.norm(centroids(out) - track_in, axis=-1)
    rows[str(s)] = dict(
        colour=np.mean([g['color'] == w['color'] for g, w in zip(got, want)]),
        shape=np.mean([g['shape'] == k['shape'] for g, k in zip(got, keep)]),
        motion=np.mean([g['motion'] == k['motion'] for g, k in zip(got, keep)]),
        track_px=float(np.nanmean(dist)), psnr_db=psnr(out, clips))
    outputs[s] = out
  return rows, outputs


def figure(clips, outputs, n):
  """Rows: per clip the input then each strength; columns: every 3rd frame | X-T image."""
  rows = []
  for i in range(n):
    for video in [clips[i]] + [outputs[s][i] for s in outputs]:
      xt = video_io.to_uint8(video).max(1)  # [t, w, 3]: every row's brightest pixel
      frames = video_io.frame_grid(video[None, ::3])
      gap = np.full((frames.shape[0], 2, 3), 255, np.uint8)
      xt = np.pad(xt, ((0, frames.shape[0] - xt.shape[0]), (0, 0), (0, 0)))
      rows.append(np.concatenate([frames, gap, xt], axis=1))
  width = max(r.shape[1] for r in rows)
  rows = [np.pad(r, ((0, 1), (0, width - r.shape[1]), (0, 0)), constant_values=255)
          for r in rows]
  return video_io.upscale(np.concatenate(rows), 3)


def main(argv):
  del argv
  cli.quiet_library_logs()
  strengths = [editing.check_strength(float(s)) for s in _STRENGTHS.value]
  workdir = _WORKDIR.value or checkpoints.default_workdir()
  gen, config = sampling.Generator.from_workdir(workdir, defaults=common.base_config())
  d = config.data
  clips, captions, edits = edit_pairs(_NUM_CLIPS.value, _DATA_SEED.value, d.num_frames,
                                      d.size)
  rows, outputs = measure_editing(gen, config, strengths, clips, captions, edits)
  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  result = dict(workdir=os.path.relpath(workdir), num_clips=len(clips), seed=_SEED.value,
                data_seed=_DATA_SEED.value, editing=rows,
                examples=[dict(input=c, edit=e) for c, e in
                          zip(captions[:_SHOWN.value], edits[:_SHOWN.value])])
  path = os.path.join(_OUTPUT_DIR.value, 'applications.json')
  with open(path, 'w') as f:
    json.dump(result, f, indent=1, default=float)
  png = video_io.write_image(os.path.join(_OUTPUT_DIR.value, 'editing.png'),
                             figure(clips, outputs, min(_SHOWN.value, len(clips))))
  print(f'editing (SDEdit), {len(clips)} held-out clips, a new colour, the same shape and '
        f'motion:')
  print(f'{"strength":>9s} {"colour":>7s} {"shape":>6s} {"motion":>7s} {"track px":>9s} '
        f'{"PSNR dB":>8s}')
  for s, r in rows.items():
    print(f'{s:>9s} {r["colour"]:7.3f} {r["shape"]:6.3f} {r["motion"]:7.3f} '
          f'{r["track_px"]:9.2f} {r["psnr_db"]:8.2f}')
  print(f'wrote {path} and {png}')


if __name__ == '__main__':
  cli.run(main)
