"""Runs one of the paper's claims at small scale and reports it (README "Reproducing the paper").

  python experiments/reproduce.py --config=configs/reproduce.py:experiment=init
  python experiments/reproduce.py --config=configs/reproduce.py:experiment=frozen
  python experiments/reproduce.py --config=configs/reproduce.py:experiment=init_frozen
  python experiments/reproduce.py --config=configs/reproduce.py:experiment=cascade
  python experiments/reproduce.py --config=configs/reproduce.py:experiment=cascade_fair
  python experiments/reproduce.py --config=configs/reproduce.py:experiment=cascade_moving
  python experiments/reproduce.py --config=configs/reproduce.py:experiment=seams

Trains every arm for every seed with train.py (a run whose last checkpoint exists is
reused), scores it with evaluate.py, and writes ``<results_dir>/<experiment>.json``
(every number, per seed, with means and spreads) and its PNG figures (matplotlib:
``pip install -e '.[experiments]'``). Deterministic for a seed: train.py and
evaluate.py are. A comparison whose difference is within the spread between seeds
is reported as inconclusive.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from stunet import cascade  # pylint: disable=g-import-not-at-top
from stunet import cli  # pylint: disable=g-import-not-at-top
from stunet import monitoring  # pylint: disable=g-import-not-at-top

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/reproduce.py:experiment=init',
                                          'The experiment (configs/reproduce.py).')
_ONLY_REPORT = flags.DEFINE_bool('only_report', False, 'Train and score nothing: report the '
                                 'runs that exist.')

METRICS = ('color_acc', 'shape_acc', 'motion_acc', 'all_acc', 'fvd')
LOSSES = ('mean_loss', 'final_loss')  # train v-loss: over the whole run, at its end


def _run(cmd, log) -> float:
  """Runs cmd in the repository root, appending its output to log; wall seconds."""
  t0 = time.time()
  with open(log, 'a') as f:
    f.write('$ ' + ' '.join(cmd) + '\n')
    f.flush()
    r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
  if r.returncode:
    raise RuntimeError(f'{" ".join(cmd[:3])} ... failed (exit {r.returncode}); see {log}.')
  return time.time() - t0


def _latest_step(workdir) -> int:
  d = os.path.join(workdir, 'checkpoints')
  steps = [int(s) for s in os.listdir(d) if s.isdigit()] if os.path.isdir(d) else []
  return max(steps, default=-1)


def train_flops(workdir) -> float:
  """XLA's FLOPs per train step, as train.py logged them when it compiled the step."""
  text = open(os.path.join(workdir, 'train.log')).read()
  found = re.findall(r'([\d.]+) GFLOP/step per device', text)
  if not found:
    raise RuntimeError(f'no "GFLOP/step" line in {workdir}/train.log')
  return float(found[-1]) * 1e9


def ensure_t2i(c) -> None:
  if _latest_step(c.t2i) >= 0:
    return
  os.makedirs(os.path.dirname(c.t2i), exist_ok=True)
  print(f'T2I stage (shared by every arm) -> {c.t2i}', flush=True)
  _run([sys.executable, 'train.py', '--config=configs/tiny.py:stage=t2i',
        f'--workdir={c.t2i}', *c.t2i_flags], c.t2i + '.log')


def _train_command(c, arm, workdir, steps, *extra) -> list:
  """train.py for an arm: its config, its start (the shared T2I run for 't2i') and flags."""
  init_from = c.t2i if arm.init_from == 't2i' else arm.init_from
  return [sys.executable, 'train.py', f'--config={arm.config}', f'--workdir={workdir}',
          f'--config.train.init_from={init_from}', f'--config.train.num_steps={steps}',
          *extra, *arm.flags]


def train(c, arm_name, seed, steps) -> dict:
  """Trains one arm for one seed (unless done); its run record."""
  arm = c.arms[arm_name]
  workdir = os.path.join(c.runs_dir, f'{arm_name}_s{seed}')
  record_path = os.path.join(workdir, 'run.json')
  if _latest_step(workdir) >= steps and os.path.exists(record_path):
    return json.load(open(record_path))
  if _ONLY_REPORT.value:
    raise FileNotFoundError(f'{workdir}: not trained yet (run without --only_report).')
  os.makedirs(workdir, exist_ok=True)
  cmd = _train_command(c, arm, workdir, steps, f'--config.seed={seed}',
                       f'--config.train.ckpt_every={steps}',
                       f'--config.train.log_every={c.log_every}')
  print(f'{arm_name} seed {seed}: training {steps} steps', flush=True)
  wall = _run(cmd, os.path.join(workdir, 'train.log'))
  record = dict(arm=arm_name, seed=seed, steps=steps, command=' '.join(cmd[1:]),
                train_wall_s=wall, flops_per_step=train_flops(workdir))
  json.dump(record, open(record_path, 'w'), indent=2)
  return record


def evaluate(c, workdir, extra=(), out_dir=None) -> dict:
  out = os.path.join(out_dir or workdir, 'eval')
  path = os.path.join(out, 'scores.json')
  if not os.path.exists(path):
    if _ONLY_REPORT.value:
      raise FileNotFoundError(f'{path}: not scored yet (run without --only_report).')
    print(f'  scoring {workdir}', flush=True)
    _run([sys.executable, 'evaluate.py', f'--workdir={workdir}',
          f'--num_samples={c.eval.num_samples}', f'--seed={c.eval.seed}',
          f'--output_dir={out}', f'--fvd={c.eval.fvd}', *extra],
         os.path.join(out_dir or workdir, 'eval.log'))
  return json.load(open(path))


def summary(scores: dict) -> dict:
  s = scores['scores']
  out = {k: s[k] for k in METRICS if k in s}
  out['fvd'] = (scores.get('fvd') or {}).get('fvd')
  out['fvd_floor'] = (scores.get('fvd') or {}).get('real_vs_real')
  out['by_motion'] = {m: row['acc'] for m, row in s['by_motion'].items()}
  out['frame_change'] = scores['frame_change']
  return out


def loss_curve(workdir):
  loss = monitoring.read_metrics(workdir)['loss']
  steps = sorted(loss)
  return steps, [loss[s] for s in steps]


def mean_spread(values) -> dict:
  v = np.asarray([x for x in values if x is not None], np.float64)
  if not len(v):
    return {}
  return dict(mean=float(v.mean()), std=float(v.std(ddof=1)) if len(v) > 1 else 0.,
              min=float(v.min()), max=float(v.max()), n=len(v))


def compare(a: dict, b: dict) -> str:
  """'a < b' / 'a > b' when the means differ by more than the two seeds' spreads
  (min-max ranges do not overlap), else 'inconclusive'."""
  if not a or not b:
    return 'n/a'
  if a['max'] < b['min']:
    return 'a < b'
  if a['min'] > b['max']:
    return 'a > b'
  return 'inconclusive'


def _pyplot():
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SystemExit("the figures need matplotlib: pip install -e '.[experiments]'") from e
  return plt


def plot_losses(path, curves: dict, title: str, smooth: int = 5) -> None:
  """Loss against step, one colour per arm: each seed thin, the seeds' mean bold."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
  for i, (arm, runs) in enumerate(curves.items()):
    colour = f'C{i}'
    ys = []
    for steps, loss in runs:
      y = np.array([np.mean(loss[max(0, i - smooth + 1):i + 1]) for i in range(len(loss))])
      x = np.asarray(steps)
      ax.plot(x, y, color=colour, lw=0.6, alpha=0.5)
      ys.append(y)
    n = min(map(len, ys))
    ax.plot(x[:n], np.mean([y[:n] for y in ys], 0), color=colour, lw=2,
            label=f'{arm} (mean of {len(ys)} seeds)')
  ax.set_xlabel('STUNet step')
  ax.set_ylabel(f'train v-loss (mean of the last {smooth} logs)')
  ax.set_yscale('log')
  ax.set_title(title)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def ablation(c) -> dict:
  """init / frozen: every arm for every seed, loss curves and scores at equal steps."""
  ensure_t2i(c)
  arms, curves = {}, {}
  for arm in c.arms:
    runs = []
    for seed in c.seeds:
      record = train(c, arm, seed, c.steps)
      workdir = os.path.join(c.runs_dir, f'{arm}_s{seed}')
      steps, loss = loss_curve(workdir)
      runs.append(dict(record, mean_loss=float(np.mean(loss)),     # the whole run
                       final_loss=float(np.mean(loss[-5:])),       # its last 5 logs
                       **summary(evaluate(c, workdir))))
      curves.setdefault(arm, []).append((steps, loss))
    stats = {k: mean_spread([r[k] for r in runs]) for k in LOSSES + METRICS}
    stats['flops_per_step'] = runs[0]['flops_per_step']
    stats['train_wall_s'] = mean_spread([r['train_wall_s'] for r in runs])
    arms[arm] = dict(runs=runs, stats=stats)
  a, b = list(arms)
  comparisons = {k: compare(arms[a]['stats'][k], arms[b]['stats'][k])
                 for k in LOSSES + METRICS}
  # The same seed draws the same data, times and noise in both arms: paired differences.
  paired = {k: [rb[k] - ra[k] for ra, rb in zip(arms[a]['runs'], arms[b]['runs'])
                if ra[k] is not None and rb[k] is not None] for k in LOSSES + METRICS}
  titles = {'init': 'temporal resampling init: identity vs He',
            'init_frozen': 'temporal resampling init, spatial weights frozen',
            'frozen': 'spatial weights: trained vs frozen'}
  figure = os.path.join(c.results_dir, f'{c.experiment}_loss.png')
  plot_losses(figure, curves, titles[c.experiment])
  return dict(arms=arms, comparisons={f'{a} vs {b}': comparisons},
              paired_differences={f'{b} - {a}': paired}, figures=[figure])


def probe_flops(c, arm_name) -> float:
  """XLA's FLOPs per train step of an arm: one step in a scratch workdir, deleted."""
  arm = c.arms[arm_name]
  workdir = os.path.join(c.runs_dir, f'_probe_{arm_name}')
  shutil.rmtree(workdir, ignore_errors=True)
  os.makedirs(workdir)
  _run(_train_command(c, arm, workdir, 1), os.path.join(workdir, 'train.log'))
  flops = train_flops(workdir)
  shutil.rmtree(workdir)
  return flops


def projections(videos, axis: str) -> np.ndarray:
  """[n, t, h, w, 3] in [-1, 1] -> [t, n * (w + 1), 3] uint8: each clip's brightest pixel
  over y (axis 'x': an X-T image) or over x ('y': a Y-T image), time running down, so
  an object's track shows wherever it is in the frame."""
  v = np.clip((np.asarray(videos) + 1.) * 127.5, 0, 255)
  proj = v.max(axis=2 if axis == 'x' else 3)                 # [n, t, w, 3]
  pad = np.full(proj.shape[:2] + (1, 3), 255.)
  return np.concatenate([np.concatenate([p, q], 1) for p, q in zip(proj, pad)], 1
                        ).astype(np.uint8)


def coherence_figures(c, stunet_dir, keyframe_dir, tsr_dir, scores, stride) -> list:
  """Frame-to-frame change per frame pair (real, STUNet, cascade) and Y-T / X-T images
  of the same prompts and seeds side by side."""
  plt = _pyplot()
  from data import shapes  # pylint: disable=g-import-not-at-top
  from stunet.generator import Generator  # pylint: disable=g-import-not-at-top

  fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
  pairs = np.arange(len(scores['stunet']['frame_change']['profile'])) + 0.5
  ax.plot(pairs, scores['stunet']['real_frame_change']['profile'], 'k--', label='real clips')
  for name, colour in (('stunet', 'C0'), ('cascade', 'C3')):
    ax.plot(pairs, scores[name]['frame_change']['profile'], color=colour, marker='o', ms=3,
            label={'stunet': 'STUNet (every frame at once)',
                   'cascade': 'keyframes + TSR'}[name])
  for k in range(0, len(pairs) + 1, stride):
    ax.axvline(k, color='0.85', lw=0.8, zorder=0)
  ax.set_xlabel('frame (grey: keyframes of the cascade)')
  ax.set_ylabel('mean |x[f+1] - x[f]|')
  ax.set_title(f'frame-to-frame change, {c.eval.num_samples} prompts (seed {c.eval.seed})')
  ax.legend(fontsize=8)
  fig.tight_layout()
  change_png = os.path.join(c.results_dir, f'{c.experiment}_frame_change.png')
  fig.savefig(change_png)
  plt.close(fig)

  prompts = ['a red square bounces up and down', 'a blue triangle bounces up and down',
             'a green circle bounces up and down', 'a yellow square moves right',
             'a magenta triangle moves left', 'a cyan square rotates']
  stunet, _ = Generator.from_workdir(stunet_dir)
  keys, config = Generator.from_workdir(keyframe_dir)
  cas = cascade.Cascade.from_stages(keys, config, *Generator.from_workdir(tsr_dir),
                                    (keyframe_dir, tsr_dir))
  g = config.sample.guidance
  rng = np.random.default_rng(c.eval.seed)
  d = config.data
  videos = {'real': np.stack([shapes.render(shapes.parse_caption(p), d.num_frames, d.size, rng)
                              for p in prompts]) / 127.5 - 1.,
            'STUNet': stunet(prompts, guidance=g, seed=c.eval.seed),
            'keyframes + TSR': cas(prompts, guidance=g, seed=c.eval.seed)}
  fig, axes = plt.subplots(3, 1, figsize=(9, 4.4), dpi=110)
  for a, (name, v) in zip(axes, videos.items()):
    img = np.concatenate([projections(v[:3], 'y'), projections(v[3:], 'x')], 1)
    a.imshow(img, interpolation='nearest')
    a.set_ylabel(f'{name}\ntime (frames)', fontsize=8)
    a.set_xticks([])
  axes[0].set_title('Y-T (3 bounces) and X-T (right, left, rotates) projections, time '
                    'down', fontsize=9)
  fig.tight_layout()
  xt_png = os.path.join(c.results_dir, f'{c.experiment}_xt.png')
  fig.savefig(xt_png)
  plt.close(fig)
  return [change_png, xt_png]


def cascade_seed(c, seed) -> tuple[dict, dict, dict]:
  """One seed of STUNet vs keyframes + TSR: the STUNet trained for c.steps, the keyframe
  and TSR models for their shares of its training FLOPs; (runs, scores, workdirs)."""
  stunet = train(c, 'stunet', seed, c.steps)
  budget = c.steps * stunet['flops_per_step']
  runs = {'stunet': stunet}
  for arm, share in (('keyframes', c.keyframe_share), ('tsr', 1 - c.keyframe_share)):
    done = os.path.join(c.runs_dir, f'{arm}_s{seed}', 'run.json')
    if os.path.exists(done):  # trained: its steps were set from the FLOPs then
      runs[arm] = json.load(open(done))
    else:
      runs[arm] = train(c, arm, seed, round(share * budget / probe_flops(c, arm)))
  dirs = {arm: os.path.join(c.runs_dir, f'{arm}_s{seed}') for arm in runs}
  casc_dir = os.path.join(c.runs_dir, f'cascade_s{seed}')
  os.makedirs(casc_dir, exist_ok=True)
  scores = {'stunet': evaluate(c, dirs['stunet']),
            'cascade': evaluate(c, dirs['keyframes'], [f'--tsr_workdir={dirs["tsr"]}'],
                                out_dir=casc_dir)}
  return runs, scores, dirs


def cascade_experiment(c) -> dict:
  """STUNet vs keyframes + TSR at the same training FLOPs, for every seed; the figures
  from the first seed. With several seeds, each arm's per-seed scores, their mean and
  spread, and a verdict per measure (``compare``)."""
  ensure_t2i(c)
  per_seed = {seed: cascade_seed(c, seed) for seed in c.seeds}
  runs, scores, dirs = per_seed[c.seeds[0]]
  train_flops_total = {'stunet': c.steps * runs['stunet']['flops_per_step'],
                       'cascade': sum(runs[a]['steps'] * runs[a]['flops_per_step']
                                      for a in ('keyframes', 'tsr'))}
  cas = json.load(open(os.path.join(dirs['tsr'], 'config.json')))
  frames, stride, window = (cas['data']['num_frames'], cas['cascade']['stride'],
                            cas['cascade']['window'])
  per_clip = {'stunet': frames, 'cascade': frames // stride +
              len(cascade.window_starts(frames, stride, window)) * window}
  figures = coherence_figures(c, dirs['stunet'], dirs['keyframes'], dirs['tsr'], scores,
                              stride)
  result = dict(train_flops=train_flops_total,
                frames_denoised_per_clip_per_step=per_clip, figures=figures)
  if len(c.seeds) == 1:
    return dict(result, runs=runs,
                arms={k: dict(stats=summary(v)) for k, v in scores.items()})
  measures = METRICS + ('frame_change_max_over_median',)
  arms = {}
  for arm in ('stunet', 'cascade'):
    seeds = []
    for seed, (seed_runs, seed_scores, _) in per_seed.items():
      row = dict(seed=seed, **summary(seed_scores[arm]))
      row['frame_change_max_over_median'] = row['frame_change']['max_over_median']
      row['train_wall_s'] = sum(r['train_wall_s'] for a, r in seed_runs.items()
                                if (a == 'stunet') == (arm == 'stunet'))
      seeds.append(row)
    arms[arm] = dict(runs=seeds, stats={k: mean_spread([r[k] for r in seeds])
                                        for k in measures})
  result['runs'] = {seed: r for seed, (r, _, _) in per_seed.items()}
  result['arms'] = arms
  result['comparisons'] = {'stunet vs cascade': {
      k: compare(arms['stunet']['stats'][k], arms['cascade']['stats'][k]) for k in measures}}
  return result


def seams_experiment(c) -> dict:
  """experiments/window_seams.py on the shipped base model: its JSON and X-T image."""
  s = c.seams
  out = os.path.join(c.runs_dir, 'seams')
  if not os.path.exists(os.path.join(out, 'seams.json')):
    _run([sys.executable, 'experiments/window_seams.py', f'--workdir={s.workdir}',
          f'--frames={s.frames}', f'--num_clips={s.num_clips}', f'--overlap={s.overlap}',
          f'--output_dir={out}'], os.path.join(c.runs_dir, 'seams.log'))
  result = json.load(open(os.path.join(out, 'seams.json')))
  figures = []
  for name in sorted(os.listdir(out)):
    if name.endswith('.png'):
      figures.append(os.path.join(c.results_dir, f'seams_{name}'))
      shutil.copy(os.path.join(out, name), figures[-1])
  return dict(seams=result, figures=figures)


def print_table(result: dict) -> None:
  if 'seams' in result:
    print(json.dumps(result['seams'], indent=1)[:3000])
    return
  print('| arm | seeds | mean loss | final loss | colour | shape | motion | all | FVD | '
        'GFLOP/step |')
  print('|---|---|---|---|---|---|---|---|---|---|')
  for arm, r in result['arms'].items():
    s = r['stats']
    if 'runs' not in r:  # one seed (cascade): the scores themselves
      print(f'| {arm} | 1 | - | - | {s["color_acc"]:.3f} | {s["shape_acc"]:.3f} | '
            f'{s["motion_acc"]:.3f} | {s["all_acc"]:.3f} | {s["fvd"]:.0f} | - |')
      print('    by motion: ' + ', '.join(f'{m} {a:.2f}' for m, a in s['by_motion'].items()))
      continue
    cell = lambda k, f='.3f': (f'{s[k]["mean"]:{f}} ± {s[k]["std"]:{f}}' if s.get(k) else '-')
    flops = f'{s["flops_per_step"] / 1e9:.2f}' if s.get('flops_per_step') else '-'
    print(f'| {arm} | {len(r["runs"])} | {cell("mean_loss", ".4f")} | '
          f'{cell("final_loss", ".4f")} | {cell("color_acc")} | '
          f'{cell("shape_acc")} | {cell("motion_acc")} | {cell("all_acc")} | '
          f'{cell("fvd", ".0f")} | {flops} |')
    if 'frame_change_max_over_median' in s:
      print('    per seed: ' + '; '.join(
          f'seed {x["seed"]}: colour {x["color_acc"]:.3f} shape {x["shape_acc"]:.3f} '
          f'motion {x["motion_acc"]:.3f} all {x["all_acc"]:.3f} FVD {x["fvd"]:.0f} '
          f'frame change max/median {x["frame_change_max_over_median"]:.2f}'
          for x in r['runs']))
  for pair, comp in result.get('comparisons', {}).items():
    print(f'{pair}: ' + ', '.join(f'{k} {v}' for k, v in comp.items()))
  for pair, diffs in result.get('paired_differences', {}).items():
    print(f'{pair}, per seed: ' + '; '.join(
        f'{k} ' + ' '.join(f'{d:+.4f}' for d in v) for k, v in diffs.items() if v))


def main(argv):
  del argv
  cli.quiet_library_logs()  # the cascade's figures load models in this process
  c = _CONFIG.value
  os.makedirs(c.results_dir, exist_ok=True)
  os.makedirs(c.runs_dir, exist_ok=True)
  t0 = time.time()
  run = {'init': ablation, 'init_frozen': ablation, 'frozen': ablation, 'cascade': cascade_experiment,
         'cascade_fair': cascade_experiment, 'cascade_moving': cascade_experiment,
         'seams': seams_experiment}[c.experiment]
  result = run(c)
  result.update(experiment=c.experiment, config=c.to_dict())
  if not _ONLY_REPORT.value:  # what this command took (a report alone takes seconds)
    result['wall_s'] = time.time() - t0
  path = os.path.join(c.results_dir, f'{c.experiment}.json')
  json.dump(result, open(path, 'w'), indent=1)
  print_table(result)
  print(f'wrote {path} and {", ".join(result["figures"])}')


if __name__ == '__main__':
  app.run(main)
