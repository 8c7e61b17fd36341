"""Prompt accuracy on the embedded shapes benchmark.

  python evaluate.py --workdir=workdir/stunet --num_samples=32
samples prompts (colour, shape, motion drawn uniformly from the valid combinations),
generates one video each and reports how often the analytic detector
(data/shapes_metrics.py) reads back the prompted colour, shape and motion, next to chance.
--source=data scores real dataset clips and --source=noise scores noise videos with
the same prompts: the detector's own validation (near 100%% and near chance).
With --fvd (default) it also reports the Frechet Video Distance (stunet/fvd.py) of the
videos against held-out real clips of the same prompts, beside the floor: the FVD of a
second real set against the first, what a perfect model would score at this n.
With --ssr_workdir the videos come from the base -> SSR cascade (the shipped SSR:
--ssr_workdir=pretrained/ssr_tiny) and three rows are scored: the base model's clips,
the same clips bilinearly upsampled to the SSR's size (what the SSR must beat on FVD),
and the SSR's output (windows fused by MultiDiffusion; --ssr_overlap=0: independent
windows); their FVD is against real clips at the high resolution (the base row's
frame size has none).
Writes <output_dir>/scores.json and a frame grid with X-T slices of the first videos
(with FVD, also the I3D features of every scored set: fvd_features.npz).
"""

import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# TensorFlow (the input pipeline only) prints a oneDNN notice on import, past the level.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

import numpy as np  # pylint: disable=g-import-not-at-top
import tqdm
from absl import app
from absl import flags

from data import shapes
from data import shapes_metrics as metrics
from stunet import cli
from stunet import config as config_lib
from stunet import sampling
from stunet import video_io

_WORKDIR = flags.DEFINE_string('workdir', None, 'train.py workdir (for --source=model); '
                               'default: the shipped model, pretrained/stunet_tiny.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step of --workdir (default: latest).')
_SSR = flags.DEFINE_string('ssr_workdir', None, 'An SSR run (shipped: pretrained/ssr_tiny): '
                           'score the base -> SSR cascade, beside the base clips and their '
                           'bilinear upsampling.')
_SSR_OVERLAP = flags.DEFINE_integer('ssr_overlap', None, 'Frames shared by the SSR\'s '
                                    'MultiDiffusion windows (default: its config, 2); 0: '
                                    'independent windows.')
_SSR_STEPS = flags.DEFINE_integer('ssr_num_steps', None, 'The SSR\'s denoising steps '
                                  '(default: its config).')
_SSR_SAMPLER = flags.DEFINE_enum('ssr_sampler', None, list(sampling.SAMPLERS),
                                 'The SSR\'s sampler (default: its config).')
_SSR_SPACING = flags.DEFINE_enum('ssr_spacing', None, list(sampling.SPACINGS),
                                 'The SSR\'s step times (default: its config).')
_BASE_VIDEOS = flags.DEFINE_string('base_videos', None, 'An .npz keeping the base model\'s '
                                   'videos, keyed by workdir, step, prompts, seed and sampler '
                                   'settings: computed once, then read (e.g. to compare SSR '
                                   'settings on the same base clips).')
_NEGATIVE = flags.DEFINE_string('negative_prompt', None, 'Text for the unconditional branch '
                                'of guidance instead of the empty prompt (every video).')
_TSR = flags.DEFINE_string('tsr_workdir', None, 'A stage=tsr run: --workdir is then the '
                           'stage=keyframes run and the videos come from the keyframe + TSR '
                           'cascade (stunet/cascade.py).')
_SOURCE = flags.DEFINE_enum('source', 'model', ['model', 'data', 'noise'],
                            'Videos to score: generated, real dataset clips, or noise.')
_NUM = flags.DEFINE_integer('num_samples', 32, 'Number of prompts/videos.')
_BATCH = flags.DEFINE_integer('batch_size', 8, 'Videos generated per sampler call.')
_NUM_STEPS = flags.DEFINE_integer('num_steps', None, 'Denoising steps (default: config).')
_GUIDANCE = flags.DEFINE_float('guidance', None, 'CFG weight (default: config).')
_SAMPLER = flags.DEFINE_enum('sampler', None, list(sampling.SAMPLERS), 'Default: config.')
_SPACING = flags.DEFINE_enum('spacing', None, list(sampling.SPACINGS), 'Step times '
                             '(default: config).')
_THRESHOLD = flags.DEFINE_float('threshold', None, 'Dynamic-thresholding percentile, 0 for a '
                                'plain clip (default: config).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the prompts and of the sampler.')
_OUT = flags.DEFINE_string('output_dir', None, 'Default: <workdir>/eval or eval_<source>.')
_FRAMES = flags.DEFINE_integer('num_frames', 16, 'Frames (data/noise sources).')
_SIZE = flags.DEFINE_integer('size', 32, 'Frame size (data/noise sources).')
_FVD = flags.DEFINE_bool('fvd', True, 'Also report FVD (Kinetics-400 I3D features) against '
                         'real clips of the same prompts, and the real-vs-real floor (two '
                         'such sets): about 1 s per video on 2 CPU cores.')
_FVD_REFERENCE = flags.DEFINE_string('fvd_reference', None, 'An .npz file keeping the real '
                                    'sets\' I3D features: read when it holds these prompts, '
                                    'seed and clip shape, else computed and written there '
                                    '(scoring many settings on the same prompts).')
_STATIONARY = flags.DEFINE_bool('stationary', False, 'Score against the stationary variant '
                                'of the data (motion at a rate per frame, on a torus; '
                                'data/shapes.py). On by itself for a model trained on it '
                                '(config.data.stationary_frames).')


# Seconds per sampling stage of this run: {stage: {'compile_s', 'sample_s'}} (scores.json).
TIMES = {}
# I3D features of each scored set: {row name: [n, 400]} (fvd_features.npz, with the
# reference set's as 'real').
FEATURES = {}


def _default_workdir():
  from stunet import checkpoints  # pylint: disable=g-import-not-at-top
  try:
    return checkpoints.default_workdir()
  except FileNotFoundError as e:
    raise app.UsageError(str(e)) from e


def generated(prompts, workdir):
  from stunet import cascade  # pylint: disable=g-import-not-at-top
  from stunet.generator import Generator  # pylint: disable=g-import-not-at-top
  kw = dict(num_steps=_NUM_STEPS.value, sampler=_SAMPLER.value, threshold=_THRESHOLD.value,
            spacing=_SPACING.value)
  gen, config = Generator.from_workdir(workdir, _STEP.value, **kw)
  if _TSR.value:  # the keyframe run's step; the TSR run's latest
    tsr, tsr_config = Generator.from_workdir(_TSR.value, None, **kw)
    gen = cascade.Cascade.from_stages(gen, config, tsr, tsr_config, (workdir, _TSR.value))
  elif config.cascade.role:
    raise app.UsageError(f'{workdir} is a {config.cascade.role} model of the keyframe + TSR '
                         f'cascade: score the cascade with --workdir=<its keyframe run> '
                         f'--tsr_workdir=<its TSR run>.')
  if not config.model.temporal:
    raise app.UsageError(f'{workdir} is a T2I run; motion needs a STUNet workdir.')
  sc = config.sample
  guidance = sc.guidance if _GUIDANCE.value is None else _GUIDANCE.value
  kw = {} if _NEGATIVE.value is None else {'negative_prompt': _NEGATIVE.value}
  return _batches(gen, prompts, 'sampling', guidance=guidance, **kw)


def _base_videos(prompts, workdir):
  """generated(prompts, workdir), kept in --base_videos when given."""
  from stunet import fvd  # pylint: disable=g-import-not-at-top
  key = json.dumps([os.path.abspath(workdir), _STEP.value, prompts, _SEED.value,
                    _NUM_STEPS.value, _SAMPLER.value, _THRESHOLD.value, _SPACING.value,
                    _GUIDANCE.value, _NEGATIVE.value, _BATCH.value])
  return fvd.cached(_BASE_VIDEOS.value, key,
                    lambda: {'videos': generated(prompts, workdir)})['videos']


def _batches(gen, prompts, desc, lowres=None, **kw):
  """gen over the prompts in batches of --batch_size, with a progress bar (seeded per
  batch by its first prompt's index); lowres: the SSR's input videos, batched alike.
  Adds the stage's compile and sampling seconds to TIMES."""
  out, t0, n = [], time.time(), _BATCH.value
  times = TIMES.setdefault(desc, {'compile_s': 0., 'sample_s': 0.})
  with tqdm.tqdm(total=len(prompts), desc=desc, unit='video', file=sys.stderr,
                 dynamic_ncols=True) as bar:
    for i in range(0, len(prompts), n):
      extra = {} if lowres is None else {'lowres': lowres[i:i + n]}
      out.append(gen(prompts[i:i + n], seed=_SEED.value + i, **extra, **kw))
      bar.update(len(out[-1]))
      for k in times:
        times[k] += getattr(gen, 'last_times', {}).get(k, 0.)
  print(f'{desc}: {len(prompts)} videos in {time.time() - t0:.0f}s', flush=True)
  return np.concatenate(out)


def check_ssr(workdir):
  """The --ssr_workdir run's config, checked to be an SSR model of the base model's
  frame size (before anything is sampled)."""
  ssr_config, base_size = config_lib.load(_SSR.value), config_lib.load(workdir).data.size
  if config_lib.model_kind(ssr_config) != 'ssr':
    raise ValueError(f'--ssr_workdir={_SSR.value} is not an SSR model '
                     f'(config.model.lowres_size is 0).')
  if ssr_config.model.lowres_size != base_size:
    raise ValueError(f'the SSR model upsamples {ssr_config.model.lowres_size}px frames, '
                     f'{workdir} makes {base_size}px ones.')
  return ssr_config


def upsampled(prompts, videos, ssr_config):
  """The SSR stage of the cascade over the base videos: {'bilinear': the videos resized
  to the SSR's size, 'ssr': the SSR's output}."""
  from stunet import ssr  # pylint: disable=g-import-not-at-top
  from stunet.generator import Generator  # pylint: disable=g-import-not-at-top
  gen, _ = Generator.from_workdir(_SSR.value, overlap=_SSR_OVERLAP.value,
                                  num_steps=_SSR_STEPS.value, sampler=_SSR_SAMPLER.value,
                                  spacing=_SSR_SPACING.value)
  high = _batches(gen, prompts, 'super-resolution', lowres=videos,
                  guidance=ssr_config.sample.guidance)
  bilinear = np.clip(np.asarray(ssr.resize(videos, ssr_config.data.size)), -1., 1.)
  return {'bilinear': bilinear, 'ssr': high}


def real_clips(prompts, seed: int, frames: int, size: int, stationary: bool = False
               ) -> np.ndarray:
  """Held-out real clips of the prompts (fresh random positions and phases), [-1, 1]; of
  the stationary variant, a clip of ``frames`` is a random window of a longer one."""
  rng = np.random.default_rng(seed)
  clips = [shapes.render(shapes.parse_caption(p), frames, size, rng, stationary=stationary)
           for p in prompts]
  return np.stack(clips).astype(np.float32) / 127.5 - 1.


def _check_flags() -> None:
  """Refuses bad numbers before anything is loaded (the sampler settings by the rules
  of the config fields they override)."""
  try:
    for flag, value, field in (('--num_steps', _NUM_STEPS.value, 'sample.num_steps'),
                               ('--guidance', _GUIDANCE.value, 'sample.guidance'),
                               ('--threshold', _THRESHOLD.value, 'sample.threshold'),
                               ('--seed', _SEED.value, 'seed')):
      config_lib.check_flag(flag, value, field)
    for flag, value, what in (('--num_samples', _NUM.value, 'prompts to score'),
                              ('--batch_size', _BATCH.value, 'videos per sampler call'),
                              ('--num_frames', _FRAMES.value, 'frames per clip'),
                              ('--size', _SIZE.value, 'the frame size')):
      config_lib.check_range(flag, value, 1, None, what)
    if _STEP.value is not None:
      config_lib.check_range('--step', _STEP.value, 0, None, 'a checkpoint step')
    config_lib.check_flag('--ssr_num_steps', _SSR_STEPS.value, 'sample.num_steps')
    if _SSR_OVERLAP.value is not None:
      config_lib.check_range('--ssr_overlap', _SSR_OVERLAP.value, 0, None,
                             'frames shared by neighbouring windows')
    if _NEGATIVE.value is not None and not _NEGATIVE.value.strip():
      raise ValueError('--negative_prompt is empty: leave it out for the empty '
                       'unconditional prompt.')
    if _BASE_VIDEOS.value and (_SOURCE.value != 'model' or _TSR.value):
      raise ValueError('--base_videos keeps the base model\'s videos: use it with '
                       '--source=model and without --tsr_workdir.')
    if _SSR.value and (_SOURCE.value != 'model' or _TSR.value):
      raise ValueError('--ssr_workdir upsamples the base model\'s videos: use it with '
                       '--source=model and without --tsr_workdir.')
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def _score(row_name, videos, prompts, reference, stationary: bool) -> dict:
  """Detector accuracies, frame-change profile and (with reference, ``_fvd_reference``
  at this size) FVD and its floor of one set of videos (its I3D features kept in
  FEATURES[row_name])."""
  row = {'scores': metrics.score(videos, prompts, stationary),
         'frame_change': metrics.frame_change(videos),
         'size': int(videos.shape[2]), 'fvd': None}
  if reference:
    from stunet import fvd  # pylint: disable=g-import-not-at-top
    featurizer, real_a, real_b = reference
    if videos.dtype == np.uint8:  # real clips (--source=data)
      videos = videos.astype(np.float32) / 127.5 - 1.
    features = featurizer(videos)
    row['fvd'] = {'fvd': fvd.fvd(features, real_a),
                  'real_vs_real': fvd.fvd(real_b, real_a), 'n': len(videos)}
    FEATURES[row_name] = features
  return row


def _fvd_reference(prompts, frames: int, size: int, stationary: bool):
  """(featurizer, features of real set a, of real set b): two held-out real sets of the
  prompts at this frame size (FVD's reference and the floor's second set); None when the
  clips are too short for I3D."""
  from stunet import fvd  # pylint: disable=g-import-not-at-top
  if frames < fvd.MIN_FRAMES:
    print(f'FVD skipped: I3D needs at least {fvd.MIN_FRAMES} frames, these videos have '
          f'{frames}.')
    return None
  featurizer = fvd.Featurizer(batch_size=8)

  def compute():
    print(f'FVD: I3D features of 2 x {len(prompts)} real {size}px clips', flush=True)
    return {k: featurizer(real_clips(prompts, _SEED.value + seed, frames, size, stationary))
            for k, seed in (('a', 10_001), ('b', 10_002))}
  key = json.dumps([prompts, _SEED.value, frames, size, stationary])
  real = fvd.cached(_FVD_REFERENCE.value, key, compute)
  return featurizer, real['a'], real['b']


def _print_row(name, row, chance):
  scores, change = row['scores'], row['frame_change']
  print(f'{name}: n={scores["n"]}, {row["size"]}px')
  for k in ('color', 'shape', 'motion', 'all'):
    print(f'  {k:6s} accuracy {scores[k + "_acc"]:.3f}   (chance {chance[k + "_acc"]:.3f})')
  for m, r in scores['by_motion'].items():
    misses = ', '.join(f'{k} {v}' for k, v in r['detected'].items() if k != m)
    print(f'    {m:20s} {r["acc"]:.2f} of {r["n"]:3d}' + (f'   (seen as: {misses})'
                                                        if misses else ''))
  print(f'  frame-to-frame change: mean {change["mean"]:.4f}, largest pair / median pair '
        f'{change["max_over_median"]:.2f}')
  if row['fvd']:
    print(f'  FVD {row["fvd"]["fvd"]:.1f}   (real vs real {row["fvd"]["real_vs_real"]:.1f}, '
          f'n={row["fvd"]["n"]} each)')


def main(argv):
  del argv
  cli.quiet_library_logs()
  _check_flags()
  prompts = shapes.benchmark_prompts(_NUM.value, _SEED.value)
  rows = {}
  stationary = _STATIONARY.value
  if _SOURCE.value == 'model':
    workdir = _WORKDIR.value or _default_workdir()
    try:
      stationary = stationary or config_lib.load(workdir).data.stationary_frames > 0
      ssr_config = check_ssr(workdir) if _SSR.value else None
      rows['base'] = _base_videos(prompts, workdir)
      if ssr_config is not None:
        rows.update(upsampled(prompts, rows['base'], ssr_config))
    except (ValueError, FileNotFoundError) as e:  # not a workdir, no such step, ...
      raise app.UsageError(str(e)) from e
  elif _SOURCE.value == 'data':  # real clips rendered for exactly these captions
    rng = np.random.default_rng(_SEED.value + 1)
    rows['data'] = np.stack([shapes.render(shapes.parse_caption(p), _FRAMES.value,
                                           _SIZE.value, rng, stationary=stationary)
                             for p in prompts])
  else:
    rng = np.random.default_rng(_SEED.value + 1)
    rows['noise'] = rng.uniform(-1, 1, (len(prompts), _FRAMES.value, _SIZE.value,
                                        _SIZE.value, 3))
  videos = list(rows.values())[-1]  # what the command makes: the cascade's last stage
  chance = metrics.chance_levels()
  out_dir = _OUT.value or (os.path.join(_WORKDIR.value, 'eval') if _WORKDIR.value
                           else f'eval_{_SOURCE.value}')
  os.makedirs(out_dir, exist_ok=True)
  frames = videos.shape[1]
  # FVD at the final size (with an SSR: its output against its bilinear upsampling).
  size = videos.shape[2]
  reference = _fvd_reference(prompts, frames, size, stationary) if _FVD.value else None
  scored = {name: _score(name, v, prompts, reference if v.shape[2] == size else None,
                         stationary) for name, v in rows.items()}
  final = list(scored.values())[-1]
  real_change = metrics.frame_change(real_clips(prompts, _SEED.value + 10_001, frames,
                                                videos.shape[2], stationary))
  detected = [metrics.detect(v, stationary) for v in videos[:8]]
  with open(os.path.join(out_dir, 'scores.json'), 'w') as f:
    json.dump({'source': _SOURCE.value, 'stationary': stationary,
               'scores': final['scores'], 'chance': chance,
               'fvd': final['fvd'], 'frame_change': final['frame_change'],
               'real_frame_change': real_change, 'rows': scored, 'times': TIMES,
               'examples': [{'prompt': p, 'detected': d} for p, d in zip(prompts, detected)]},
              f, indent=2)
  if FEATURES:
    np.savez(os.path.join(out_dir, 'fvd_features.npz'), real=reference[1], **FEATURES)
  n = min(8, len(videos))
  grid = video_io.frame_grid(videos[:n])
  xt = np.concatenate([video_io.xt_slice(v) for v in videos[:n]], axis=1)  # [t, n*w, 3]
  scale = max(1, 96 // videos.shape[2])
  video_io.write_image(os.path.join(out_dir, 'frames.png'), video_io.upscale(grid, scale))
  video_io.write_image(os.path.join(out_dir, 'xt_slices.png'), video_io.upscale(xt, scale))
  for name, row in scored.items():
    _print_row({'base': 'model', 'ssr': 'model -> SSR', 'bilinear': 'model, bilinear '
                'upsampling'}.get(name, name) if _SSR.value else _SOURCE.value, row, chance)
  print(f'  real clips: frame-to-frame change mean {real_change["mean"]:.4f}, largest pair / '
        f'median pair {real_change["max_over_median"]:.2f}')
  for p, d in list(zip(prompts, detected))[:n]:
    print(f'  "{p}" -> {d["color"]} {d["shape"]} {d["motion"]}')
  print(f'wrote {out_dir}/scores.json, frames.png, xt_slices.png' +
        (', fvd_features.npz' if FEATURES else ''))


if __name__ == '__main__':
  cli.run(main)
