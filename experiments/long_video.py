"""Long videos and prompt transitions: does a clip past the trained length keep moving?

  python experiments/long_video.py                          # the shipped model
  python experiments/long_video.py --workdir=workdir/stationary --name=stationary

Long clips: --num_prompts held-out captions (every motion), --frames frames (default
4x the trained length) denoised in MultiDiffusion windows, scored by

  per-window accuracy  the detector on every window of the trained length (stride 1),
                       read as the stationary data is (on a torus, growth by its rate:
                       data/shapes_metrics.py), so a motion that goes on scores in
                       every window and one that restarts does not;
  backward jumps       for 'moves <dir>' prompts: frames whose centroid moves against
                       the prompted direction by more than --jump_px pixels, per clip;
  window edges         the mean frame-to-frame change at the pairs where a
                       MultiDiffusion window begins or ends, over that of the other
                       pairs; real long clips of the stationary data beside it;
  FVD                  one random window of the trained length per clip against real
                       windows of the stationary data, with the real-vs-real floor.

Transitions: --num_transitions schedules of two prompts of the same colour and shape
whose motion changes halfway (--prompt_frames 0, frames/2; stunet.prompt_schedule),
scored by each half's per-window accuracy for its own prompt (the windows inside the
half), the centroid's largest step at the change against the largest inside the halves
(the object keeps its place when only the motion changes), and the frame change at the
change against inside. Writes to --output_dir <name>.json, <name>_long_xt.png (the
first 8 long clips) and <name>_transition.png, _transition_xt.png (the first 4
transitions): frames, and X-T and Y-T slices with time running down (the brightest
pixel over rows and over columns: the object's x and y over time).

--noise=freenoise replaces the sampler's noise with FreeNoise's rescheduled noise (Qiu
et al. 2023): the first window's frames get independent noise, and every later block of
a window's length gets those same frame noises in a random order of its own, so every
window starts from a shuffle of the first one's noise. FreeNoise uses it with a
deterministic sampler (DDIM): run it with --sampler=dpm++2m (with a stochastic sampler
each step's fresh noise is rescheduled the same way).
"""

import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from data import shapes
from data import shapes_metrics as metrics
from stunet import checkpoints
from stunet import cli
from stunet import sampling
from stunet import video_io
from stunet.generator import Generator

_WORKDIR = flags.DEFINE_string('workdir', None, 'A base model\'s train.py workdir (default: '
                               'the shipped model).')
_NAME = flags.DEFINE_string('name', 'long_video_shipped', 'Name of the results\' files.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'experiments/results', 'Where they go.')
_FRAMES = flags.DEFINE_integer('frames', None, 'Clip length (default: 4x the trained one).')
_NUM_PROMPTS = flags.DEFINE_integer('num_prompts', 32, 'Held-out captions of long clips.')
_NUM_TRANSITIONS = flags.DEFINE_integer('num_transitions', 16, 'Two-prompt schedules.')
_SEED = flags.DEFINE_integer('seed', 2024, 'Seed of the captions and of the sampler.')
_BATCH = flags.DEFINE_integer('batch_size', 8, 'Videos per sampler call.')
_JUMP_PX = flags.DEFINE_float('jump_px', 2., 'A backward jump: a step against the prompted '
                              'direction larger than this, in pixels.')
_FVD = flags.DEFINE_bool('fvd', True, 'Also FVD of random windows against real windows.')
_SAMPLER = flags.DEFINE_enum('sampler', None, list(sampling.SAMPLERS), 'Default: the '
                             'model\'s config.')
_NUM_STEPS = flags.DEFINE_integer('num_steps', None, 'Denoising steps (default: config).')
_NOISE = flags.DEFINE_enum('noise', 'independent', ['independent', 'freenoise'],
                          'The sampler\'s noise: independent per frame, or FreeNoise\'s '
                          'rescheduling of the first window\'s noise (see above).')
_OVERLAP = flags.DEFINE_integer('overlap', None, 'Frames shared by neighbouring windows '
                                '(default: the model\'s config.sample.overlap, 2).')


def freenoise(video_noise, window: int):
  """video_noise(rng, shape, shared) -> the same for clips longer than ``window``
  frames, with FreeNoise's rescheduling: block i > 0 of ``window`` frames is block 0's
  frame noise permuted by its own draw (the last block cut to the clip)."""
  def noise(rng, shape, shared=0.):
    frames = shape[1]
    if frames <= window:
      return video_noise(rng, shape, shared)
    first = video_noise(rng, (shape[0], window) + tuple(shape[2:]), shared)
    blocks = [first]
    for i in range(1, -(-frames // window)):
      order = jax.random.permutation(jax.random.fold_in(rng, i), window)
      blocks.append(jnp.take(first, order, axis=1))
    return jnp.concatenate(blocks, axis=1)[:, :frames]
  return noise


def window_accuracy(videos, prompts, length: int, first: int = 0, last=None) -> dict:
  """Detector accuracy over every window of ``length`` frames (stride 1) that lies in
  frames [first, last) of the videos, against the prompts (stationary reading)."""
  last = last or videos.shape[1]
  windows, captions = [], []
  for video, prompt in zip(videos, prompts):
    for s in range(first, last - length + 1):
      windows.append(video[s:s + length])
      captions.append(prompt)
  got = metrics.score(windows, captions, stationary=True)
  return {k: got[k] for k in ('color_acc', 'shape_acc', 'motion_acc', 'all_acc', 'n')}


def backward_jumps(videos, prompts, jump_px: float) -> dict:
  """Per 'moves <dir>' clip, the frames whose centroid steps against the prompted
  direction by more than jump_px (on a torus: the shorter way round)."""
  counts = [metrics.backward_steps(v, p, jump_px) for v, p in zip(videos, prompts)]
  counts = [c for c in counts if c is not None]
  return {'clips': len(counts), 'per_clip': float(np.mean(counts)) if counts else None,
          'share_of_clips_with_any': float(np.mean([c > 0 for c in counts])) if counts
          else None}


def edge_pairs(starts, length: int, frames: int) -> list:
  """Indices f of the frame pairs (f, f + 1) at which a window begins or ends."""
  pairs = {s - 1 for s in starts if s > 0} | {s + length - 1 for s in starts
                                               if s + length < frames}
  return sorted(pairs)


def edge_ratio(videos, pairs) -> dict:
  profile = np.asarray(metrics.frame_change(videos)['profile'])
  at = np.zeros(len(profile), bool)
  at[pairs] = True
  return {'edges': float(profile[at].mean()), 'inside': float(profile[~at].mean()),
          'ratio': float(profile[at].mean() / profile[~at].mean())}


def tracks(videos) -> np.ndarray:
  """One image: per video, where the object is along x (left) and y (right) over time
  (time runs down): the brightest pixel over rows, and over columns (one object on
  black)."""
  white = np.full((videos.shape[1], 1, 3), 255, np.uint8)
  return np.concatenate([part for v in video_io.to_uint8(videos)
                         for part in (v.max(axis=1), white, v.max(axis=2), white, white)], 1)


def random_windows(videos, length: int, rng) -> np.ndarray:
  starts = rng.integers(0, videos.shape[1] - length + 1, size=len(videos))
  return np.stack([v[s:s + length] for v, s in zip(videos, starts)])


def real_clips(prompts, frames: int, size: int, seed: int) -> np.ndarray:
  """Clips of the stationary data for the prompts, [-1, 1]."""
  rng = np.random.default_rng(seed)
  clips = [shapes.render(shapes.parse_caption(p), frames, size, rng, stationary=True)
           for p in prompts]
  return np.stack(clips).astype(np.float32) / 127.5 - 1.


def transition_prompts(n: int, rng) -> list:
  """n pairs of captions of one colour and shape whose motion changes."""
  out = []
  while len(out) < n:
    color, shape, a = shapes.COMBINATIONS[int(rng.integers(len(shapes.COMBINATIONS)))]
    b = shapes.MOTIONS[int(rng.integers(len(shapes.MOTIONS)))]
    if b != a and shapes.valid_combination(shape, b):
      out.append([shapes.caption(color, shape, a), shapes.caption(color, shape, b)])
  return out


def sample(gen, prompts, frames: int, guidance: float, desc: str, **kw) -> np.ndarray:
  out, n = [], _BATCH.value
  with tqdm.tqdm(total=len(prompts), desc=desc, unit='video', file=sys.stderr) as bar:
    for i in range(0, len(prompts), n):
      out.append(gen(prompts[i:i + n], guidance=guidance, seed=_SEED.value + i,
                     num_frames=frames, **kw))
      bar.update(len(out[-1]))
  return np.concatenate(out)


def transition_stats(videos, pairs, change: int, length: int) -> dict:
  """Each half's per-window accuracy, the centroid's steps and the frame change at
  the change (pairs change-2 .. change+1) against inside the halves."""
  first = window_accuracy(videos, [p[0] for p in pairs], length, 0, change)
  second = window_accuracy(videos, [p[1] for p in pairs], length, change)
  near = np.zeros(videos.shape[1] - 1, bool)
  near[change - 2:change + 2] = True
  steps_near, steps_inside = [], []
  for video in videos:
    xy = metrics.track(video, stationary=True)
    step = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    ok = np.isfinite(step)
    if (ok & near).any() and (ok & ~near).any():
      steps_near.append(float(step[ok & near].max()))
      steps_inside.append(float(step[ok & ~near].max()))
  profile = np.asarray(metrics.frame_change(videos)['profile'])
  return {'first_half': first, 'second_half': second,
          'largest_step_px_at_change': float(np.median(steps_near)),
          'largest_step_px_inside': float(np.median(steps_inside)),
          'frame_change_at_change': float(profile[near].mean()),
          'frame_change_inside': float(profile[~near].mean())}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_library_logs()
  workdir = _WORKDIR.value or checkpoints.default_workdir()
  gen, config = Generator.from_workdir(workdir, overlap=_OVERLAP.value,
                                       sampler=_SAMPLER.value, num_steps=_NUM_STEPS.value)
  length, size = config.data.num_frames, config.data.size
  if _NOISE.value == 'freenoise':  # every sampler draws its noise through this function
    sampling.D.video_noise = freenoise(sampling.D.video_noise, length)
  frames = _FRAMES.value or 4 * length
  if frames <= gen.window:
    raise app.UsageError(f'--frames={frames}: a long clip is longer than the window '
                         f'({gen.window}).')
  guidance = config.sample.guidance
  rng = np.random.default_rng(_SEED.value)
  prompts = [shapes.caption(*shapes.COMBINATIONS[i]) for i in
             rng.integers(len(shapes.COMBINATIONS), size=_NUM_PROMPTS.value)]
  t0 = time.time()
  videos = sample(gen, prompts, frames, guidance, 'long clips')
  real = real_clips(prompts, frames, size, _SEED.value + 1)
  starts = gen.windows(frames).starts
  pairs = edge_pairs(starts, gen.window, frames)
  result = {'workdir': workdir, 'frames': frames, 'window': gen.window,
            'overlap': gen.window_kw['overlap'], 'noise': _NOISE.value,
            'window_starts': list(starts), 'prompts': len(prompts), 'seed': _SEED.value,
            'long': {'model': {'per_window': window_accuracy(videos, prompts, length),
                               'backward_jumps': backward_jumps(videos, prompts,
                                                                _JUMP_PX.value),
                               'window_edges': edge_ratio(videos, pairs)},
                     'real': {'per_window': window_accuracy(real, prompts, length),
                              'backward_jumps': backward_jumps(real, prompts, _JUMP_PX.value),
                              'window_edges': edge_ratio(real, pairs)}}}
  if _FVD.value:
    from stunet import fvd  # pylint: disable=g-import-not-at-top
    featurizer = fvd.Featurizer(batch_size=8)
    pick = np.random.default_rng(_SEED.value + 2)
    feats = featurizer(random_windows(videos, length, pick))
    real_a = featurizer(real_clips(prompts, length, size, _SEED.value + 3))
    real_b = featurizer(real_clips(prompts, length, size, _SEED.value + 4))
    result['long']['model']['fvd_windows'] = fvd.fvd(feats, real_a)
    result['long']['real']['fvd_windows'] = fvd.fvd(real_b, real_a)

  change = frames // 2
  trans = transition_prompts(_NUM_TRANSITIONS.value, rng)
  tvideos = sample(gen, trans, frames, guidance, 'transitions', prompt_frames=[0, change])
  result['transitions'] = {'prompt_frames': [0, change], 'schedules': trans,
                           'model': transition_stats(tvideos, trans, change, length)}
  result['seconds'] = time.time() - t0

  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  out = lambda suffix: os.path.join(_OUTPUT_DIR.value, _NAME.value + suffix)
  with open(out('.json'), 'w') as f:
    json.dump(result, f, indent=1)
  video_io.write_image(out('_long_xt.png'), video_io.upscale(tracks(videos[:8]), 3))
  # Every 4th frame of the first transitions, one row per video.
  video_io.write_image(out('_transition.png'), video_io.upscale(
      video_io.frame_grid(tvideos[:4, ::4]), 3))
  video_io.write_image(out('_transition_xt.png'), video_io.upscale(tracks(tvideos[:4]), 3))

  lm, lr = result['long']['model'], result['long']['real']
  print(f'{frames}-frame clips from {workdir}, windows of {gen.window} at {list(starts)}; '
        f'{len(prompts)} prompts, seed {_SEED.value}')
  print(f'{"":8s} {"colour":>7s} {"shape":>7s} {"motion":>7s} {"all":>7s} '
        f'{"back jumps/clip":>16s} {"edge/inside":>12s} {"FVD windows":>12s}')
  for name, r in (('model', lm), ('real', lr)):
    w = r['per_window']
    fv = f'{r["fvd_windows"]:12.1f}' if 'fvd_windows' in r else ''
    print(f'{name:8s} {w["color_acc"]:7.3f} {w["shape_acc"]:7.3f} {w["motion_acc"]:7.3f} '
          f'{w["all_acc"]:7.3f} {r["backward_jumps"]["per_clip"]:16.2f} '
          f'{r["window_edges"]["ratio"]:12.2f} {fv}')
  t = result['transitions']['model']
  print(f'transitions at frame {change} ({len(trans)} schedules): motion per window, first '
        f'half {t["first_half"]["motion_acc"]:.3f}, second half '
        f'{t["second_half"]["motion_acc"]:.3f}; largest centroid step at the change '
        f'{t["largest_step_px_at_change"]:.1f} px (inside {t["largest_step_px_inside"]:.1f}); '
        f'frame change at the change {t["frame_change_at_change"]:.4f} (inside '
        f'{t["frame_change_inside"]:.4f})')
  print(f'wrote {out(".json")}, _long_xt.png, _transition.png, _transition_xt.png '
        f'({result["seconds"]:.0f}s)')


if __name__ == '__main__':
  cli.run(main)
