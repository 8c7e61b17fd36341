"""Quality against denoising steps, per sampler: what a faster solver buys.

The base model: each setting (sampler:steps) is one `evaluate.py` run on the same
prompts and seeds: colour / shape / motion accuracy of the analytic detector on
``--num_samples`` prompts, sampling seconds per video (compile excluded), and FVD
against held-out real clips for the settings in ``--fvd`` (about 1 s per video; the real
sets' features are computed once, in <output_dir>/fvd_reference.npz).

An SSR model (``--ssr_workdir``), two ways. ``--ssr_input=real``: real clips whose
ground truth is known are downsampled to its input size, as in training, and upsampled
with each setting; rows give the mean absolute error against the real high-res clips,
the mean frame-to-frame change (real clips: ``real``), the detector's accuracies on the
output, and seconds per video, next to plain bilinear upsampling. ``--ssr_input=base``:
the cascade; the base model (its default sampler) makes the clips once
(<output_dir>/base_videos.npz) and each setting of the SSR upsamples them in one
`evaluate.py --ssr_workdir` run, scored as the base model's rows are (FVD at the SSR's
size), next to the same clips' bilinear upsampling; s/video is the SSR stage's.

  python experiments/sampler_steps.py --output_dir=steps \
      --settings=ddpm:24,ddim:12,dpm++2m:8,dpm++2m:12 --fvd=ddpm:24,dpm++2m:12
  python experiments/sampler_steps.py --ssr_workdir=pretrained/ssr_tiny \
      --settings=ddim:16,dpm++2m:8 --num_samples=32 --output_dir=steps_ssr
  python experiments/sampler_steps.py --ssr_workdir=pretrained/ssr_tiny --ssr_input=base \
      --settings=ddpm:24,dpm++2m-sde:8:quadratic --fvd=ddpm:24,dpm++2m-sde:8:quadratic \
      --output_dir=steps_cascade

FVD's spread: 200 bootstrap resamples of the videos (the same for every row: same
prompts and seeds) and of the real reference give each FVD's std and the std of its
difference from ``--fvd_baseline``'s, the test of "within noise".

Writes ``<output_dir>/results.json`` and a Markdown table ``<output_dir>/table.md``;
each row's evaluation stays in ``<output_dir>/<sampler>_<steps>_<spacing>``.
"""

import json
import os
import subprocess
import sys

import numpy as np

from absl import app
from absl import flags

from stunet import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_OUT = flags.DEFINE_string('output_dir', 'sampler_steps', 'Where results go.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'The base model (default: the shipped one).')
_SSR = flags.DEFINE_string('ssr_workdir', None, 'Score this SSR run\'s settings instead, '
                           'on the input --ssr_input names.')
_SSR_INPUT = flags.DEFINE_enum('ssr_input', 'real', ['real', 'base'], 'With --ssr_workdir: '
                               'real clips downsampled to its input (the ground truth known; '
                               'error against it), or the base model\'s clips (the cascade; '
                               'the same base clips for every setting, scored like the base '
                               'model\'s rows, FVD at the SSR\'s size).')
_SETTINGS = flags.DEFINE_list('settings', ['ddpm:24', 'ddim:12', 'ddim:24', 'dpm++2m:4',
                                           'dpm++2m:8', 'dpm++2m:12', 'dpm++2m:16'],
                              'sampler:steps to score.')
_FVD = flags.DEFINE_list('fvd', [], 'Settings also scored on FVD.')
_BASELINE = flags.DEFINE_string('fvd_baseline', 'ddpm:24', 'The setting the others\' FVD is '
                                'compared with: the difference and its bootstrap std '
                                '(paired: same prompts, seeds and reference); with '
                                '--ssr_input=base also "bilinear".')
_OVERLAP = flags.DEFINE_integer('ssr_overlap', None, 'With --ssr_input=base: frames shared '
                                'by the SSR\'s MultiDiffusion windows (evaluate.py '
                                '--ssr_overlap; 0: independent windows), its rows named '
                                '<setting>/overlap=<n> beside the default\'s.')
_NUM = flags.DEFINE_integer('num_samples', 128, 'Prompts per setting.')
_SEED = flags.DEFINE_integer('seed', 4321, 'Prompt and sampling seed (evaluate.py --seed).')


def _setting(text: str) -> tuple:
  """'sampler:steps' or 'sampler:steps:spacing' -> (sampler, steps, spacing)."""
  try:
    sampler, steps, *spacing = text.split(':')
    if len(spacing) > 1:
      raise ValueError(text)
    return sampler, int(steps), spacing[0] if spacing else 'uniform'
  except ValueError as e:
    raise app.UsageError(f'--settings: {text!r} is not sampler:steps[:spacing], e.g. '
                         f'dpm++2m:12 or dpm++2m:12:quadratic.') from e


def ssr_rows(settings, results, results_path):
  """Scores the SSR of --ssr_workdir on real clips (ground truth known), per setting."""
  from data import shapes  # pylint: disable=g-import-not-at-top
  from data import shapes_metrics as metrics  # pylint: disable=g-import-not-at-top
  from stunet import config as config_lib  # pylint: disable=g-import-not-at-top
  from stunet import ssr  # pylint: disable=g-import-not-at-top
  from stunet.generator import Generator  # pylint: disable=g-import-not-at-top
  config = config_lib.load(_SSR.value)
  size, frames = config.data.size, 16
  examples = [shapes.example(_SEED.value, i, frames, size) for i in range(_NUM.value)]
  truth = np.stack([e['video'] for e in examples]).astype(np.float32) / 127.5 - 1.
  prompts = [e['caption'] for e in examples]
  low = np.asarray(ssr.resize(truth, config.model.lowres_size))

  def row(videos, **extra):
    scores = metrics.score(videos, prompts)
    return dict(**{k: scores[k] for k in ('color_acc', 'shape_acc', 'motion_acc', 'all_acc')},
                mae=float(np.abs(videos - truth).mean()),
                frame_change=metrics.frame_change(videos)['mean'], **extra)

  results.setdefault('real', row(truth, sampler='real clips', steps=0, s_per_video=0.))
  results.setdefault('bilinear', row(np.clip(np.asarray(ssr.resize(low, size)), -1., 1.),
                                     sampler='bilinear', steps=0, s_per_video=0.))
  for sampler, steps, spacing in settings:
    name = f'{sampler}:{steps}:{spacing}'
    if name in results:
      continue
    gen, _ = Generator.from_workdir(_SSR.value, sampler=sampler, num_steps=steps,
                                    spacing=spacing)
    out, seconds, n = [], 0., 8
    for i in range(0, len(prompts), n):
      out.append(gen(prompts[i:i + n], guidance=config.sample.guidance, seed=_SEED.value + i,
                     lowres=low[i:i + n]))
      seconds += gen.last_times['sample_s']
    results[name] = row(np.concatenate(out), sampler=sampler, steps=steps, spacing=spacing,
                        s_per_video=seconds / len(prompts))
    json.dump(results, open(results_path, 'w'), indent=2)
    print(f'{name}: {results[name]}', flush=True)
  lines = ['| sampler | steps | spacing | MAE vs real | frame change | colour | shape | '
           'motion | s/video |', '|---|---|---|---|---|---|---|---|---|']
  for r in results.values():
    lines.append(f'| {r["sampler"]} | {r["steps"] or "-"} | {r.get("spacing", "-")} | '
                 f'{r["mae"]:.4f} | '
                 f'{r["frame_change"]:.4f} | {r["color_acc"]:.3f} | {r["shape_acc"]:.3f} | '
                 f'{r["motion_acc"]:.3f} | {r["s_per_video"]:.2f} |')
  return lines


def _features_path(out_dir: str) -> str:
  return os.path.join(out_dir, 'fvd_features.npz')


def _baseline_name(text: str) -> str:
  return text if text == 'bilinear' else '{}:{}:{}'.format(*_setting(text))


def fvd_spread(results: dict, base: str) -> dict:
  """{setting: {'std': bootstrap std of its FVD, 'diff_std': of its FVD minus the
  baseline's}} for the rows whose I3D features are kept (a row's 'features': its
  evaluation's directory under --output_dir and the scored set's name there): every row
  has the same prompts, seeds and real reference, so the resamples are paired across rows
  and the spread of a difference is smaller than that of either FVD."""
  from stunet import fvd  # pylint: disable=g-import-not-at-top
  sets, reference = {}, None
  for name, r in results.items():
    if 'features' not in r:
      continue
    path = _features_path(os.path.join(_OUT.value, r['features'][0]))
    if os.path.exists(path):
      with np.load(path) as f:
        sets[name], reference = f[r['features'][1]], f['real']
  if not sets:
    return {}
  out = fvd.bootstrap(sets, reference, num=200, seed=0)
  spread = {k: {'std': float(v.std())} for k, v in out.items()}
  if base in out:
    for k, v in out.items():
      if k != base:
        spread[k]['diff_std'] = float((v - out[base]).std())
  return spread


def _row(scores: dict, name: str, stage: str, subdir: str, **extra) -> dict:
  """One table row from an evaluation's scores.json: the scored set `name` ('base',
  'ssr', 'bilinear') and the seconds per video of its sampling `stage` (None: none)."""
  row = scores['rows'][name]
  seconds = scores['times'].get(stage, {}).get('sample_s', 0.) if stage else 0.
  return dict(**extra, **row['scores'], fvd=(row['fvd'] or {}).get('fvd'),
              fvd_floor=(row['fvd'] or {}).get('real_vs_real'),
              s_per_video=seconds / row['scores']['n'],
              **({'features': [subdir, name]} if row['fvd'] else {}))


def evaluated_rows(settings, fvd_settings, results, results_path):
  """One `evaluate.py` run per setting (of the base model, or with --ssr_workdir of the
  cascade's SSR), its row added to results (and results_path) unless there already."""
  cascade = bool(_SSR.value)
  for sampler, steps, spacing in settings:
    name = f'{sampler}:{steps}:{spacing}'
    subdir = f'{sampler}_{steps}_{spacing}'
    if _OVERLAP.value is not None:
      name, subdir = f'{name}/overlap={_OVERLAP.value}', f'{subdir}_overlap{_OVERLAP.value}'
    out_dir = os.path.join(_OUT.value, subdir)
    fvd = (sampler, steps, spacing) in fvd_settings
    if name in results and (not fvd or os.path.exists(_features_path(out_dir))):
      continue
    cmd = [sys.executable, os.path.join(ROOT, 'evaluate.py'), f'--num_samples={_NUM.value}',
           f'--seed={_SEED.value}', f'--output_dir={out_dir}', f'--{"" if fvd else "no"}fvd']
    if cascade:
      cmd += [f'--ssr_workdir={_SSR.value}', f'--ssr_sampler={sampler}',
              f'--ssr_num_steps={steps}', f'--ssr_spacing={spacing}',
              f'--base_videos={os.path.join(_OUT.value, "base_videos.npz")}']
      cmd += [f'--ssr_overlap={_OVERLAP.value}'] if _OVERLAP.value is not None else []
    else:
      cmd += [f'--sampler={sampler}', f'--num_steps={steps}', f'--spacing={spacing}']
    cmd += [f'--fvd_reference={os.path.join(_OUT.value, "fvd_reference.npz")}'] if fvd else []
    cmd += [f'--workdir={_WORKDIR.value}'] if _WORKDIR.value else []
    print(f'{name}: evaluating', flush=True)
    with open(out_dir + '.log', 'w') as log:
      subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    scores = json.load(open(os.path.join(out_dir, 'scores.json')))
    if cascade:
      results[name] = _row(scores, 'ssr', 'super-resolution', subdir, sampler=sampler,
                           steps=steps, spacing=spacing,
                           **({} if _OVERLAP.value is None else {'overlap': _OVERLAP.value}))
      if fvd or 'bilinear' not in results:  # the same clips every time: kept once
        results['bilinear'] = _row(scores, 'bilinear', None, subdir, sampler='bilinear',
                                   steps=0, spacing='-')
    else:
      results[name] = _row(scores, 'base', 'sampling', subdir, sampler=sampler, steps=steps,
                           spacing=spacing)
    json.dump(results, open(results_path, 'w'), indent=2)
    r = results[name]
    print(f'{name}: colour {r["color_acc"]:.3f} shape {r["shape_acc"]:.3f} motion '
          f'{r["motion_acc"]:.3f} all {r["all_acc"]:.3f}, {r["s_per_video"]:.2f} s/video',
          flush=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_library_logs()
  settings = [_setting(s) for s in _SETTINGS.value]
  fvd_settings = {_setting(s) for s in _FVD.value}
  base = _baseline_name(_BASELINE.value)
  unknown = fvd_settings - set(settings)
  if unknown:
    raise app.UsageError(f'--fvd names settings that --settings does not: {sorted(unknown)}.')
  if _OVERLAP.value is not None and not (_SSR.value and _SSR_INPUT.value == 'base'):
    raise app.UsageError('--ssr_overlap sets the cascade\'s SSR windows: use it with '
                         '--ssr_workdir and --ssr_input=base.')
  if _OVERLAP.value is not None and _OVERLAP.value < 0:
    raise app.UsageError(f'--ssr_overlap={_OVERLAP.value}: frames shared by neighbouring '
                         'windows, 0 (independent windows) or more.')
  os.makedirs(_OUT.value, exist_ok=True)
  results_path = os.path.join(_OUT.value, 'results.json')
  results = json.load(open(results_path)) if os.path.exists(results_path) else {}
  if _SSR.value and _SSR_INPUT.value == 'real':
    lines = ssr_rows(settings, results, results_path)
    open(os.path.join(_OUT.value, 'table.md'), 'w').write('\n'.join(lines) + '\n')
    print('\n'.join(lines))
    return
  evaluated_rows(settings, fvd_settings, results, results_path)
  spread = fvd_spread(results, base)
  for name, r in results.items():  # kept beside the scores, as the table shows them
    for k in ('std', 'diff_std'):
      r.pop(f'fvd_{k}', None)
    r.update({f'fvd_{k}': v for k, v in spread.get(name, {}).items()})
  json.dump(results, open(results_path, 'w'), indent=2)
  lines = ['| sampler | steps | spacing | colour | shape | motion | all | FVD ± std (floor) | '
           f'FVD vs {_BASELINE.value} | s/video |', '|---|---|---|---|---|---|---|---|---|---|']
  for name, r in results.items():
    fvd = (f'{r["fvd"]:.0f} ± {spread[name]["std"]:.0f} ({r["fvd_floor"]:.0f})'
           if name in spread else f'{r["fvd"]:.0f} ({r["fvd_floor"]:.0f})'
           if r.get('fvd') is not None else '-')
    diff = (f'{r["fvd"] - results[base]["fvd"]:+.0f} ± {spread[name]["diff_std"]:.0f}'
            if name in spread and 'diff_std' in spread[name] else '-')
    sampler = r['sampler'] + (f' (overlap {r["overlap"]})' if 'overlap' in r else '')
    lines.append(f'| {sampler} | {r["steps"] or "-"} | {r.get("spacing", "uniform")} | '
                 f'{r["color_acc"]:.3f} | '
                 f'{r["shape_acc"]:.3f} | {r["motion_acc"]:.3f} | {r["all_acc"]:.3f} | {fvd} | '
                 f'{diff} | {r["s_per_video"]:.2f} |')
  open(os.path.join(_OUT.value, 'table.md'), 'w').write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  cli.run(main)
