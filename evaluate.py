"""Prompt accuracy on the embedded shapes benchmark.

  python evaluate.py --workdir=workdir/stunet --num_samples=32
samples prompts (colour, shape, motion drawn uniformly from the valid combinations),
generates one video each and reports how often the analytic detector
(data/shapes_metrics.py) reads back the prompted colour, shape and motion, next to chance.
--source=data scores real dataset clips and --source=noise scores noise videos with
the same prompts: the detector's own validation (near 100% and near chance).
With --fvd (default) it also reports the Frechet Video Distance (stunet/fvd.py) of the
videos against held-out real clips of the same prompts, beside the floor: the FVD of a
second real set against the first, what a perfect model would score at this n.
Writes <output_dir>/scores.json and a frame grid with X-T slices of the first videos.
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
_THRESHOLD = flags.DEFINE_float('threshold', None, 'Dynamic-thresholding percentile, 0 for a '
                                'plain clip (default: config).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the prompts and of the sampler.')
_OUT = flags.DEFINE_string('output_dir', None, 'Default: <workdir>/eval or eval_<source>.')
_FRAMES = flags.DEFINE_integer('num_frames', 16, 'Frames (data/noise sources).')
_SIZE = flags.DEFINE_integer('size', 32, 'Frame size (data/noise sources).')
_FVD = flags.DEFINE_bool('fvd', True, 'Also report FVD (Kinetics-400 I3D features) against '
                         'real clips of the same prompts, and the real-vs-real floor (two '
                         'such sets): about 1 s per video on 2 CPU cores.')


def benchmark_prompts(n: int, seed: int) -> list:
  """n captions drawn uniformly from the valid (colour, shape, motion) combinations."""
  rng = np.random.default_rng(seed)
  combos = [shapes.COMBINATIONS[i] for i in rng.integers(len(shapes.COMBINATIONS), size=n)]
  return [shapes.caption(*c) for c in combos]


def _default_workdir():
  from stunet import checkpoints  # pylint: disable=g-import-not-at-top
  try:
    return checkpoints.default_workdir()
  except FileNotFoundError as e:
    raise app.UsageError(str(e)) from e


def generated(prompts, workdir):
  from stunet import cascade  # pylint: disable=g-import-not-at-top
  from stunet.generator import Generator  # pylint: disable=g-import-not-at-top
  kw = dict(num_steps=_NUM_STEPS.value, sampler=_SAMPLER.value, threshold=_THRESHOLD.value)
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
  out, t0 = [], time.time()
  with tqdm.tqdm(total=len(prompts), desc='sampling', unit='video', file=sys.stderr,
                 dynamic_ncols=True) as bar:
    for i in range(0, len(prompts), _BATCH.value):
      out.append(gen(prompts[i:i + _BATCH.value], guidance=guidance, seed=_SEED.value + i))
      bar.update(len(out[-1]))
  print(f'generated {len(prompts)} videos in {time.time() - t0:.0f}s', flush=True)
  return np.concatenate(out)


def real_clips(prompts, seed: int, frames: int, size: int) -> np.ndarray:
  """Held-out real clips of the prompts (fresh random positions and phases), [-1, 1]."""
  rng = np.random.default_rng(seed)
  clips = [shapes.render(shapes.parse_caption(p), frames, size, rng) for p in prompts]
  return np.stack(clips).astype(np.float32) / 127.5 - 1.


def frechet_video_distance(videos, real, prompts) -> dict | None:
  """FVD of the videos against real clips of the same prompts (``real``), and the floor:
  FVD of a second real set against the first (what a perfect model would score at this n)."""
  from stunet import fvd  # pylint: disable=g-import-not-at-top
  _, frames, size = videos.shape[:3]
  if frames < fvd.MIN_FRAMES:
    print(f'FVD skipped: I3D needs at least {fvd.MIN_FRAMES} frames, these videos have '
          f'{frames}.')
    return None
  featurizer = fvd.Featurizer(batch_size=8)
  print(f'FVD: I3D features of {3 * len(videos)} videos (generated, 2 real sets)', flush=True)
  real_a = featurizer(real)
  real_b = featurizer(real_clips(prompts, _SEED.value + 10_002, frames, size))
  if videos.dtype == np.uint8:  # real clips (--source=data)
    videos = videos.astype(np.float32) / 127.5 - 1.
  feats = featurizer(videos)
  return {'fvd': fvd.fvd(feats, real_a), 'real_vs_real': fvd.fvd(real_b, real_a),
          'n': len(videos)}


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
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def main(argv):
  del argv
  cli.quiet_library_logs()
  _check_flags()
  prompts = benchmark_prompts(_NUM.value, _SEED.value)
  if _SOURCE.value == 'model':
    try:
      videos = generated(prompts, _WORKDIR.value or _default_workdir())
    except (ValueError, FileNotFoundError) as e:  # not a workdir, no such step, ...
      raise app.UsageError(str(e)) from e
  elif _SOURCE.value == 'data':  # real clips rendered for exactly these captions
    rng = np.random.default_rng(_SEED.value + 1)
    videos = np.stack([shapes.render(shapes.parse_caption(p), _FRAMES.value, _SIZE.value, rng)
                       for p in prompts])
  else:
    rng = np.random.default_rng(_SEED.value + 1)
    videos = rng.uniform(-1, 1, (len(prompts), _FRAMES.value, _SIZE.value, _SIZE.value, 3))
  scores = metrics.score(videos, prompts)
  chance = metrics.chance_levels()
  out_dir = _OUT.value or (os.path.join(_WORKDIR.value, 'eval') if _WORKDIR.value
                           else f'eval_{_SOURCE.value}')
  os.makedirs(out_dir, exist_ok=True)
  detected = [metrics.detect(v) for v in videos[:8]]
  real = real_clips(prompts, _SEED.value + 10_001, *videos.shape[1:3])  # held out
  fvd_scores = frechet_video_distance(videos, real, prompts) if _FVD.value else None
  change = metrics.frame_change(videos)
  real_change = metrics.frame_change(real)
  with open(os.path.join(out_dir, 'scores.json'), 'w') as f:
    json.dump({'source': _SOURCE.value, 'scores': scores, 'chance': chance, 'fvd': fvd_scores,
               'frame_change': change, 'real_frame_change': real_change,
               'examples': [{'prompt': p, 'detected': d} for p, d in zip(prompts, detected)]},
              f, indent=2)
  n = min(8, len(videos))
  grid = video_io.frame_grid(videos[:n])
  xt = np.concatenate([video_io.xt_slice(v) for v in videos[:n]], axis=1)  # [t, n*w, 3]
  video_io.write_image(os.path.join(out_dir, 'frames.png'), video_io.upscale(grid, 3))
  video_io.write_image(os.path.join(out_dir, 'xt_slices.png'), video_io.upscale(xt, 3))
  print(f'{_SOURCE.value}: n={scores["n"]}')
  for k in ('color', 'shape', 'motion', 'all'):
    print(f'  {k:6s} accuracy {scores[k + "_acc"]:.3f}   (chance {chance[k + "_acc"]:.3f})')
  for m, row in scores['by_motion'].items():
    misses = ', '.join(f'{k} {v}' for k, v in row['detected'].items() if k != m)
    print(f'    {m:20s} {row["acc"]:.2f} of {row["n"]:3d}' + (f'   (seen as: {misses})'
                                                            if misses else ''))
  print(f'  frame-to-frame change: mean {change["mean"]:.4f}, largest pair / median pair '
        f'{change["max_over_median"]:.2f}   (real clips {real_change["mean"]:.4f}, '
        f'{real_change["max_over_median"]:.2f})')
  if fvd_scores:
    print(f'  FVD {fvd_scores["fvd"]:.1f}   (real vs real {fvd_scores["real_vs_real"]:.1f}, '
          f'n={fvd_scores["n"]} each)')
  for p, d in list(zip(prompts, detected))[:n]:
    print(f'  "{p}" -> {d["color"]} {d["shape"]} {d["motion"]}')
  print(f'wrote {out_dir}/scores.json, frames.png, xt_slices.png')


if __name__ == '__main__':
  cli.run(main)
