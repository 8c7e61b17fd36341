"""Do window boundaries leave seams in time? MultiDiffusion vs independent windows.

The paper's SSR ablation: run a model over a clip longer than its window (a) as
independent, non-overlapping windows and (b) with MultiDiffusion (windows overlapping
by 2 frames, predictions fused at every step), on the same inputs and seeds. It works
for the SSR (held-out low-res clips as input) and for the base model (a clip several
times its trained length, from held-out captions).
Without fusion, frames on either side of a window boundary are denoised without
seeing each other, so the frame-to-frame change spikes there. The script measures

  d[f] = mean |x[f+1] - x[f]|   (per frame pair, over clips, pixels and channels)

at the pairs that straddle a boundary of the independent tiling versus the pairs
inside windows, for both methods, the whole clip in one pass (no windows) and real
clips, on the frames as they are and low-passed (area-downsampled by --lowpass, which
removes per-pixel noise and keeps what moves), plus the SSR's error against the
ground truth, and writes an X-T slice image (time runs down) of every clip per method.

  python experiments/window_seams.py --workdir=workdir/ssr --output_dir=seams/ssr
  python experiments/window_seams.py --workdir=workdir/stunet --frames=48 \
      --output_dir=seams/base

SSR inputs are held-out clips of the embedded shapes dataset at the SSR's output size,
downsampled to its input size exactly as in training, so the ground truth is known.
"""

import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

from data import shapes
from stunet import cli
from stunet.generator import Generator
from stunet import ssr
from stunet import video_io

_WORKDIR = flags.DEFINE_string('workdir', None, 'A trained SSR or base model\'s workdir.')
_OUTPUT_DIR = flags.DEFINE_string('output_dir', 'seams', 'Where the images and JSON go.')
_FRAMES = flags.DEFINE_integer('frames', 24, 'Clip length (a multiple of the window).')
_NUM_CLIPS = flags.DEFINE_integer('num_clips', 4, 'Held-out clips.')
_WINDOW = flags.DEFINE_integer('window', None, 'Window length (default: the SSR config\'s).')
_OVERLAP = flags.DEFINE_integer('overlap', 2, 'MultiDiffusion overlap in frames.')
_NUM_STEPS = flags.DEFINE_integer('num_steps', None, 'Denoising steps (default: config).')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed, the same for every method.')
_DATA_SEED = flags.DEFINE_integer('data_seed', 12345, 'Stream of held-out shapes clips.')
_LOWPASS = flags.DEFINE_integer('lowpass', 4, 'Area-downsampling factor of the low-passed '
                                'statistics.')
_LOWRES_AUG = flags.DEFINE_float('lowres_aug', None, 'SSR: noise level of the low-res input '
                                 '(default: config.sample.lowres_aug).')
_THRESHOLD = flags.DEFINE_float('threshold', None, 'Dynamic-thresholding percentile, 0 for '
                                 'a plain clip (default: config.sample.threshold).')
flags.mark_flags_as_required(['workdir'])


def frame_diffs(videos: np.ndarray) -> np.ndarray:
  """[n, t, h, w, c] -> d [t - 1]: mean |x[f+1] - x[f]| per frame pair."""
  return np.abs(np.diff(videos.astype(np.float64), axis=1)).mean(axis=(0, 2, 3, 4))


def lowpass(videos: np.ndarray, factor: int) -> np.ndarray:
  n, t, h, w, c = videos.shape
  return videos.reshape(n, t, h // factor, factor, w // factor, factor, c).mean((3, 5))


def seam_stats(videos: np.ndarray, boundaries, factor: int) -> dict:
  """Mean frame-to-frame change at boundary pairs (f-1, f) vs the other pairs, of the
  frames and of the low-passed frames."""
  out = {}
  for key, v in (('', videos), ('lowpass_', lowpass(videos, factor))):
    d = frame_diffs(v)
    at = np.zeros(len(d), bool)
    at[[f - 1 for f in boundaries]] = True
    out.update({key + 'boundary': float(d[at].mean()), key + 'interior': float(d[~at].mean()),
                key + 'ratio': float(d[at].mean() / d[~at].mean()),
                key + 'per_pair': d.round(5).tolist()})
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_library_logs()
  workdir = _WORKDIR.value
  window_kw = dict(num_steps=_NUM_STEPS.value, window=_WINDOW.value)
  gen, config = Generator.from_workdir(workdir, overlap=_OVERLAP.value, **window_kw)
  separate, _ = Generator.from_workdir(workdir, overlap=0, **window_kw)
  whole, _ = Generator.from_workdir(workdir, window=_FRAMES.value, num_steps=_NUM_STEPS.value)
  for g in (gen, separate, whole):
    if _LOWRES_AUG.value is not None:
      g.lowres_aug = _LOWRES_AUG.value
    if _THRESHOLD.value is not None:
      g.kw['threshold'] = _THRESHOLD.value
  t, w, lp = _FRAMES.value, gen.window, _LOWPASS.value
  if t % w or t == w:
    raise app.UsageError(f'--frames={t} must be a multiple (> 1) of the window ({w}), so '
                         f'independent windows tile the clip.')
  size = config.data.size
  examples = [shapes.example(_DATA_SEED.value, i, t, size) for i in range(_NUM_CLIPS.value)]
  truth = np.stack([e['video'] for e in examples]).astype(np.float32) / 127.5 - 1.
  prompts = [e['caption'] for e in examples]
  kw = {'lowres': np.asarray(ssr.resize(truth, config.model.lowres_size))} if gen.ssr else {
      'num_frames': t}
  guidance = config.sample.guidance

  methods = {'multidiffusion': gen, 'independent': separate, 'whole_clip': whole}
  boundaries = separate.windows(t).starts[1:]
  results = {'model': 'ssr' if gen.ssr else 'base', 'frames': t, 'window': w,
             'overlap': _OVERLAP.value, 'boundaries': boundaries,
             'md_starts': gen.windows(t).starts, 'clips': len(prompts),
             'real_clips': seam_stats(truth, boundaries, lp)}
  slices = {'real_clips': truth}
  for name, g in methods.items():
    videos = g(prompts, guidance=guidance, seed=_SEED.value, **kw)
    slices[name] = videos
    results[name] = seam_stats(videos, boundaries, lp)
    if gen.ssr:
      results[name]['mae_vs_truth'] = float(np.abs(videos - truth).mean())
    results[name]['sample_s'] = g.last_times['sample_s']
    results[name]['windows'] = g.last_times['windows']

  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  for name, videos in slices.items():
    # One X-T slice per clip side by side, through the middle row.
    image = np.concatenate([video_io.xt_slice(v) for v in videos], axis=1)
    video_io.write_image(os.path.join(_OUTPUT_DIR.value, f'xt_{name}.png'),
                         video_io.upscale(image, 4))
  with open(os.path.join(_OUTPUT_DIR.value, 'seams.json'), 'w') as f:
    json.dump(results, f, indent=1)

  print(f'{results["model"]}: {t} frames, window {w}; independent windows start at '
        f'{(0,) + boundaries}, MultiDiffusion windows (overlap {_OVERLAP.value}) at '
        f'{results["md_starts"]}. |dx| = mean |x[f+1] - x[f]| at the independent '
        f'boundaries vs inside windows; "low-passed": frames area-downsampled {lp}x.')
  print(f'{"":15s} {"|dx| boundary":>13s} {"inside":>7s} {"ratio":>6s} '
        f'{"low-passed boundary":>19s} {"inside":>7s} {"ratio":>6s} {"MAE vs truth":>12s}')
  for name in ('real_clips',) + tuple(methods):
    r = results[name]
    mae = f'{r["mae_vs_truth"]:12.4f}' if 'mae_vs_truth' in r else ''
    print(f'{name:15s} {r["boundary"]:13.4f} {r["interior"]:7.4f} {r["ratio"]:6.2f} '
          f'{r["lowpass_boundary"]:19.4f} {r["lowpass_interior"]:7.4f} '
          f'{r["lowpass_ratio"]:6.2f} {mae}')
  print(f'wrote {_OUTPUT_DIR.value}/seams.json and xt_*.png')


if __name__ == '__main__':
  cli.run(main)
