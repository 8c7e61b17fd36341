"""Lumiere's applications on held-out clips, measured: a table (JSON), figures and plots.

  pip install -e '.[experiments]'   # matplotlib, for the two plots
  python experiments/applications.py --output_dir=applications

Every application runs on the same held-out clips of the embedded shapes dataset (a
stream no training run reads), with the shipped models: the text-to-video one
(editing, style), the conditional one (image-to-video, inpainting, outpainting,
cinemagraphs) and the style weights. Per application:

  image-to-video  the clip's frame 0 is the image; the prompt is the clip's caption.
                  frame0_psnr: the model's own frame 0 against the image (before the
                  known pixels are pasted); colour / shape / motion: the detector
                  against the caption.
  inpainting      the region to fill is the box around the object's whole track
                  (dilated 2 px), so what is left is background; the prompt names
                  another colour and shape with the same motion (object replacement).
                  known_psnr: the model's own known pixels against the input; accuracy
                  against the new caption; seam: mean |difference| of neighbouring
                  pixels across the mask's edge (output, and the input's for scale).
  outpainting     the known area is the central 16x16 box; the prompt is the caption.
  cinemagraph     frame 0 is the image everywhere but the object's track box, where the
                  caption's motion should happen. static_psnr: the model's own pixels
                  outside the box, all frames, against the image; motion: the detector
                  against the caption; region_change: mean |x_t - x_0| in the box (and
                  the real clip's); moving: the share of clips whose box changes at
                  least half as much as the real clip's.
  editing         SDEdit at several strengths towards another colour (or, separately,
                  another motion), the rest of the caption the same: the new
                  attribute's accuracy, what is kept, PSNR to the input.
  style           the style weights mixed in at alpha 0..1: the share of clips drawn in
                  the style (the detector's outline test) against motion accuracy.
Figures: applications.png (per application and clip: input | mask | output, every 3rd
frame then an X-T image; then per clip the style at each alpha), editing.png and
editing_motion.png, and the plots editing_sweep.png and style_sweep.png. A run of some
applications (--only) updates their numbers in the JSON and writes its own figure.
"""

import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tqdm

from data import shapes
from data import shapes_metrics as metrics
from stunet import checkpoints
from stunet import cli
from stunet import conditioning as C
from stunet import editing
from stunet.generator import Generator
from stunet import video_io

_WORKDIR = flags.DEFINE_string('workdir', None, 'The text-to-video workdir (default: the '
                               'shipped model).')
_CONDITIONAL = flags.DEFINE_string('conditional_workdir', None, 'The conditional model '
                                   '(default: the shipped one).')
_STYLE = flags.DEFINE_string('style_workdir', None, 'Style weights (default: the shipped '
                             'pretrained/style_outline).')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'applications', 'Where results go.')
_NUM_CLIPS = flags.DEFINE_integer('num_clips', 16, 'Held-out clips per application.')
_STRENGTHS = flags.DEFINE_list('strengths', ['0.5', '0.7', '0.85', '1'], 'SDEdit strengths.')
_ALPHAS = flags.DEFINE_list('alphas', ['0', '0.25', '0.5', '0.75', '1'], 'Style alphas.')
_ONLY = flags.DEFINE_list('only', ['image_to_video', 'inpainting', 'outpainting',
                                   'cinemagraph', 'editing', 'style'], 'Applications to run.')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
_DATA_SEED = flags.DEFINE_integer('data_seed', 4242, 'Stream of held-out clips and edits.')
_SHOWN = flags.DEFINE_integer('shown', 2, 'Clips per application in the figures.')
BATCH = 8  # prompts per sampler call


def held_out(n: int, seed: int, frames: int, size: int):
  """n held-out clips [n, t, h, w, 3] in [-1, 1], their labels and captions, and a
  second caption per clip: another colour and shape, the same motion."""
  rng = np.random.default_rng(seed)
  combos = [shapes.COMBINATIONS[i] for i in rng.integers(len(shapes.COMBINATIONS), size=n)]
  clips = np.stack([shapes.render(dict(color=c, shape=s, motion=m), frames, size, rng)
                    for c, s, m in combos]).astype(np.float32) / 127.5 - 1.
  others = []
  for c, s, m in combos:
    colour = [o for o in shapes.COLORS if o != c][rng.integers(len(shapes.COLORS) - 1)]
    fits = [o for o in shapes.SHAPES if o != s and (c, o, m) in shapes.COMBINATIONS]
    others.append(shapes.caption(colour, fits[rng.integers(len(fits))], m))
  return clips, [shapes.caption(*c) for c in combos], others


def track_box(clip, size: int, pad: int = 2) -> np.ndarray:
  """The box around everything the object covers in the clip, dilated: bool [h, w]."""
  fg = ((clip.max(-1) + 1.) / 2. > 0.1).any(0)
  ys, xs = np.nonzero(fg)
  box = (max(xs.min() - pad, 0), max(ys.min() - pad, 0), min(xs.max() + 1 + pad, size),
         min(ys.max() + 1 + pad, size))
  return C.box_region(size, box)


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


def seam(videos, known) -> float:
  """Mean |difference| of horizontally or vertically neighbouring pixels of which one
  is known and one generated (known: bool [h, w]), over clips, frames and channels."""
  v = np.asarray(videos)
  diffs = []
  for axis in (2, 3):
    a = np.take(v, range(v.shape[axis] - 1), axis=axis)
    b = np.take(v, range(1, v.shape[axis]), axis=axis)
    k = np.take(known, range(known.shape[axis - 2] - 1), axis=axis - 2)
    k2 = np.take(known, range(1, known.shape[axis - 2]), axis=axis - 2)
    edge = k != k2
    diffs.append(np.abs(a - b)[:, :, edge])
  return float(np.concatenate([d.ravel() for d in diffs]).mean())


def accuracy(videos, captions) -> dict:
  s = metrics.score(videos, captions)
  return dict(colour=s['color_acc'], shape=s['shape_acc'], motion=s['motion_acc'])


def batched(fn, n):
  return np.concatenate([fn(slice(i, i + BATCH)) for i in range(0, n, BATCH)])


def run_conditional(gen, config, app_name, clips, captions, others):
  """One conditional application on every clip -> (row, (inputs, masks, outputs))."""
  n, t, size = len(clips), config.data.num_frames, config.data.size
  centre = C.box_region(size, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
  made, prompts = [], captions
  for clip in clips:
    if app_name == 'image_to_video':
      made.append(C.image_to_video(clip[0], t))
    elif app_name == 'inpainting':
      made.append(C.inpainting(clip, track_box(clip, size)))
    elif app_name == 'outpainting':
      made.append(C.outpainting(clip, centre))
    else:
      made.append(C.cinemagraph(clip[0], t, track_box(clip, size)))
  if app_name == 'inpainting':
    prompts = others
  cond, mask = (np.stack(a) for a in zip(*made))
  raw = batched(lambda s: C.generate(gen, prompts[s], cond[s], mask[s],
                                     guidance=config.sample.guidance,
                                     seed=_SEED.value + s.start, paste=False), n)
  out = C.composite(raw, cond, mask)
  row = accuracy(out, prompts)
  if app_name == 'image_to_video':
    row['frame0_psnr'] = psnr(raw[:, 0], clips[:, 0])
  elif app_name == 'cinemagraph':
    row['static_psnr'] = C.known_psnr(raw, cond, mask)
    moves = mask[:, 1, :, :, 0] == 0                      # [n, h, w]: the animated box
    change = lambda v: np.array([np.abs(v[i, 1:] - v[i, :1]).mean(-1)[:, moves[i]].mean()
                                 for i in range(n)])      # per clip: |x_t - x_0| in the box
    got, real = change(out), change(clips)
    row['region_change'], row['region_change_real'] = float(got.mean()), float(real.mean())
    row['moving'] = float(np.mean(got >= 0.5 * real))  # at least half the real clip's
  else:
    row['known_psnr'] = C.known_psnr(raw, cond, mask)
    known = mask[0, 1, :, :, 0] > 0
    row['seam'], row['seam_input'] = seam(out, known), seam(clips, known)
  shown = cond if app_name != 'inpainting' else clips
  return row, (shown, mask, out)


def run_editing(gen, config, strengths, clips, captions, rng_seed, change: str):
  """SDEdit towards another colour or another motion (``change``), the rest of the
  caption kept: the table rows and the outputs per strength. colour, shape, motion:
  the detector against the edit's caption (the changed one is the edit's success, the
  others what it kept)."""
  rng = np.random.default_rng(rng_seed)
  keep = [shapes.parse_caption(c) for c in captions]
  edits = []
  for k in keep:
    if change == 'color':
      options = [(o, k['shape'], k['motion']) for o in shapes.COLORS if o != k['color']]
    else:
      options = [(k['color'], k['shape'], o) for o in shapes.MOTIONS
                 if o != k['motion'] and (k['color'], k['shape'], o) in shapes.COMBINATIONS]
    edits.append(shapes.caption(*options[rng.integers(len(options))]))
  track_in = centroids(clips)
  rows, outputs = {}, {}
  for s in strengths:
    out = batched(lambda sl, s=s: editing.sdedit(
        gen, edits[sl], clips[sl], strength=s, guidance=config.sample.guidance,
        seed=_SEED.value + sl.start), len(clips))
    dist = np.linalg.norm(centroids(out) - track_in, axis=-1)
    rows[str(s)] = dict(accuracy(out, edits), track_px=float(np.nanmean(dist)),
                        psnr_db=psnr(out, clips))
    outputs[s] = out
  return rows, outputs, edits


def run_style(gen, config, style_params, alphas, captions):
  """Text-to-video samples with the style mixed in at each alpha."""
  original = gen.params['params']
  rows, outputs = {}, {}
  try:
    for a in alphas:
      gen.params = {'params': editing.interpolate_style(original, style_params, a)}
      out = batched(lambda s: gen(captions[s], guidance=config.sample.guidance,
                                  seed=_SEED.value + s.start), len(captions))
      styles = [metrics.detect_style(v) for v in out]
      rows[str(a)] = dict(accuracy(out, captions),
                          style=float(np.mean([s == 'outline' for s in styles])))
      outputs[a] = out
  finally:
    gen.params = {'params': original}
  return rows, outputs


def strip(video) -> np.ndarray:
  """One clip as a row: every 3rd frame, a gap, then the X-T image (time runs down;
  each pixel the brightest of its column, so any row's horizontal track shows)."""
  xt = video_io.to_uint8(video).max(1)
  frames = video_io.frame_grid(np.asarray(video)[None, ::3])
  gap = np.full((frames.shape[0], 2, 3), 255, np.uint8)
  xt = np.pad(xt, ((0, max(frames.shape[0] - xt.shape[0], 0)), (0, 0), (0, 0)))
  return np.concatenate([frames, gap, xt[:frames.shape[0]]], axis=1)


def stack(rows, scale=3):
  width = max(r.shape[1] for r in rows)
  rows = [np.pad(r, ((0, 1), (0, width - r.shape[1]), (0, 0)), constant_values=255)
          for r in rows]
  return video_io.upscale(np.concatenate(rows), scale)


def plot(path, series, xlabel, ylabel, title, xlim=(-0.05, 1.05)):
  """One line per (xs, ys, point labels, name) in series."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(4.6, 3.6), dpi=120)
  for xs, ys, labels, name in series:
    ax.plot(xs, ys, 'o-', label=name)
    for i, (x, y, label) in enumerate(zip(xs, ys, labels)):  # alternate sides: no overlap
      ax.annotate(label, (x, y), textcoords='offset points', fontsize=8,
                  xytext=(6, 5) if i % 2 == 0 else (6, -11))
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=xlim, ylim=(-0.05, 1.05))
  if len(series) > 1:
    ax.legend(fontsize=8, loc='center left')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def main(argv):
  del argv
  cli.quiet_library_logs()
  out_dir = _OUTPUT_DIR.value
  os.makedirs(out_dir, exist_ok=True)
  only = set(_ONLY.value)
  gen, config = Generator.from_workdir(_WORKDIR.value or checkpoints.default_workdir())
  d = config.data
  clips, captions, others = held_out(_NUM_CLIPS.value, _DATA_SEED.value, d.num_frames, d.size)
  rel = lambda path, default: os.path.relpath(path or checkpoints.default_workdir(default))
  result = dict(num_clips=len(clips), seed=_SEED.value, data_seed=_DATA_SEED.value,
                models=dict(text_to_video=rel(_WORKDIR.value, checkpoints.PRETRAINED),
                            conditional=rel(_CONDITIONAL.value,
                                            checkpoints.PRETRAINED_CONDITIONAL),
                            style=rel(_STYLE.value, checkpoints.PRETRAINED_STYLE)))
  figure_rows, shown = [], min(_SHOWN.value, len(clips))
  mask_video = lambda m: np.repeat(1. - 2. * m, 3, axis=-1)  # white = generated
  conditional = [a for a in ('image_to_video', 'inpainting', 'outpainting', 'cinemagraph')
                 if a in only]
  if conditional:
    cgen, cconfig = Generator.from_workdir(
        _CONDITIONAL.value or checkpoints.default_workdir(checkpoints.PRETRAINED_CONDITIONAL))
    for name in tqdm.tqdm(conditional, desc='conditional', file=sys.stderr,
                          dynamic_ncols=True):
      row, (inputs, masks, outs) = run_conditional(cgen, cconfig, name, clips, captions,
                                                   others)
      result[name] = row
      print(name, json.dumps(row, default=float), flush=True)
      for i in range(shown):
        figure_rows += [strip(inputs[i]), strip(mask_video(masks[i])), strip(outs[i])]
  if 'editing' in only:
    strengths = [editing.check_strength(float(s)) for s in _STRENGTHS.value]
    series = []
    for change, key in (('color', 'colour'), ('motion', 'motion')):
      rows, outputs, edits = run_editing(gen, config, strengths, clips, captions,
                                         _DATA_SEED.value + 1, change)
      name = 'editing' if change == 'color' else 'editing_motion'
      result[name] = rows
      result[f'{name}_examples'] = [dict(input=c, edit=e) for c, e in
                                    zip(captions[:shown], edits[:shown])]
      print(name, json.dumps(rows, default=float), flush=True)
      video_io.write_image(os.path.join(out_dir, f'{name}.png'), stack(
          [strip(v) for i in range(shown) for v in [clips[i]] + [outputs[s][i] for s in outputs]]))
      series.append(([r['psnr_db'] for r in rows.values()], [r[key] for r in rows.values()],
                     [f'{s}' for s in rows], f'a new {key}'))
    plot(os.path.join(out_dir, 'editing_sweep.png'), series,
         'similarity to the input (PSNR, dB)', 'accuracy of the new colour or motion',
         'SDEdit: strength sweep (labels: strength)', xlim=None)
  if 'style' in only:
    _, style = checkpoints.load_params(
        _STYLE.value or checkpoints.default_workdir(checkpoints.PRETRAINED_STYLE))
    alphas = [editing.check_alpha(float(a)) for a in _ALPHAS.value]
    rows, outputs = run_style(gen, config, style, alphas, captions)
    result['style'] = rows
    print('style', json.dumps(rows, default=float), flush=True)
    for i in range(shown):
      figure_rows += [strip(outputs[a][i]) for a in alphas]
    plot(os.path.join(out_dir, 'style_sweep.png'),
         [([r['style'] for r in rows.values()], [r['motion'] for r in rows.values()],
           [f'alpha={a}' for a in rows], 'style weights mixed in')],
         'in the style (outline detector)', 'motion accuracy', 'Style: alpha sweep')
  if figure_rows:  # a run of some applications only gets a figure of its own
    name = ('applications' if only >= set(_ONLY.default) - {'editing'} else
            '_'.join(['applications'] + sorted(only - {'editing'})))
    video_io.write_image(os.path.join(out_dir, f'{name}.png'), stack(figure_rows))
  path = os.path.join(out_dir, 'applications.json')
  previous = {}
  if os.path.exists(path):  # a run of some applications keeps the others' numbers
    with open(path) as f:
      previous = json.load(f)
  with open(path, 'w') as f:
    json.dump({**previous, **result}, f, indent=1, default=float)
  print(f'wrote {path} and the figures in {out_dir}')


if __name__ == '__main__':
  cli.run(main)
