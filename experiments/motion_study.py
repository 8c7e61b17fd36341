"""Why does the tiny STUNet not learn motion? Variants trained and scored side by side.

Every variant starts from the same T2I run (trained once, ``--t2i_workdir``), trains
its STUNet stage with `train.py` for the same number of steps, then samples
``--num_samples`` prompts with `evaluate.py` (colour / shape / motion accuracy of the
analytic detector, and FVD against held-out real clips when FVD is available).
Sampler variants reuse the checkpoint of the variant they name. Wall time of every
training run is recorded: the variants are compared at the same CPU time.

  python experiments/motion_study.py --output_dir=study --variants=film,nocond
  python experiments/motion_study.py --output_dir=study --seeds=0,1   # several seeds

Writes ``<output_dir>/results.json`` and a Markdown table ``<output_dir>/table.md``;
each run's workdir, log and evaluation stay in ``<output_dir>/<variant>_s<seed>``.
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (train overrides, evaluate flags, checkpoint of another variant or None).
# 'nocond' is the old recipe (temporal layers see neither time nor text, dynamic
# thresholding), the others change one thing at a time from it or from 'film'.
VARIANTS = {
    'nocond_dyn': (['--config.model.temporal_cond=none'], ['--threshold=0.995'], 'nocond'),
    'nocond': (['--config.model.temporal_cond=none'], [], None),
    'film_dyn': ([], ['--threshold=0.995'], 'film'),
    'film': ([], [], None),
    'film_ddim': ([], ['--sampler=ddim'], 'film'),
    'film_g1': ([], ['--guidance=1'], 'film'),
    'film_g5': ([], ['--guidance=5'], 'film'),
    'film_lr3e-3': (['--config.train.lr=3e-3'], [], None),
    'unfrozen': (['--config.train.freeze_spatial=False'], [], None),
    'unfrozen_linear': (['--config.train.freeze_spatial=False',
                         '--config.model.temporal_resample_init=linear'], [], None),
    # the T2I stage's time spent on video instead (about the same CPU time in all)
    'scratch': (['STAGE=scratch', '--config.train.num_steps=700'], [], None),
}

_OUT = flags.DEFINE_string('output_dir', 'study', 'Where runs and results go.')
_VARIANTS = flags.DEFINE_list('variants', list(VARIANTS), f'Of {list(VARIANTS)}.')
_SEEDS = flags.DEFINE_list('seeds', ['0'], 'Training seeds (config.seed).')
_T2I = flags.DEFINE_string('t2i_workdir', None, 'A trained T2I workdir (default: train one '
                           'in <output_dir>/t2i with configs/tiny.py:stage=t2i).')
_STEPS = flags.DEFINE_integer('steps', None, 'STUNet steps (default: the config\'s).')
_NUM = flags.DEFINE_integer('num_samples', 32, 'Prompts scored per variant.')
_EVAL_SEED = flags.DEFINE_integer('eval_seed', 1234, 'Prompt and sampling seed.')
_EXTRA = flags.DEFINE_multi_string('train_flag', [], 'Extra train.py flags for every run.')


def _run(cmd, log):
  t0 = time.time()
  with open(log, 'a') as f:
    f.write(' '.join(cmd) + '\n')
    f.flush()
    subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
  return time.time() - t0


def main(argv):
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  py = sys.executable
  t2i = _T2I.value or os.path.join(_OUT.value, 't2i')
  if not _T2I.value:
    print(f'T2I stage -> {t2i}', flush=True)
    _run([py, 'train.py', '--config=configs/tiny.py:stage=t2i', f'--workdir={t2i}'],
         os.path.join(_OUT.value, 't2i.log'))
  results_path = os.path.join(_OUT.value, 'results.json')
  results = json.load(open(results_path)) if os.path.exists(results_path) else {}
  for seed in _SEEDS.value:
    for name in _VARIANTS.value:
      if name not in VARIANTS:
        raise app.UsageError(f'unknown variant {name!r}; known: {list(VARIANTS)}.')
      key = f'{name}_s{seed}'
      if key in results:
        continue
      train_over, eval_flags, reuse = VARIANTS[name]
      stage = next((o.split('=')[1] for o in train_over if o.startswith('STAGE=')), 'stunet')
      train_over = [o for o in train_over if not o.startswith('STAGE=')]
      run_dir = os.path.join(_OUT.value, key)
      workdir = os.path.join(_OUT.value, f'{reuse}_s{seed}' if reuse else key, 'workdir')
      os.makedirs(run_dir, exist_ok=True)
      log = os.path.join(run_dir, 'log.txt')
      train_s = None
      if not reuse:
        cmd = [py, 'train.py', f'--config=configs/tiny.py:stage={stage}',
               f'--workdir={workdir}', f'--config.seed={seed}', *train_over, *_EXTRA.value]
        if stage == 'stunet':
          cmd.append(f'--config.train.init_from={t2i}')
        if _STEPS.value:
          cmd.append(f'--config.train.num_steps={_STEPS.value}')
        print(f'{key}: training', flush=True)
        train_s = _run(cmd, log)
      eval_dir = os.path.join(run_dir, 'eval')
      print(f'{key}: evaluating', flush=True)
      _run([py, 'evaluate.py', f'--workdir={workdir}', f'--num_samples={_NUM.value}',
            f'--seed={_EVAL_SEED.value}', f'--output_dir={eval_dir}', *eval_flags], log)
      scores = json.load(open(os.path.join(eval_dir, 'scores.json')))
      results[key] = dict(variant=name, seed=int(seed), train_s=train_s,
                          train_flags=train_over, eval_flags=eval_flags, **scores['scores'],
                          fvd=(scores.get('fvd') or {}).get('fvd'),
                          fvd_floor=(scores.get('fvd') or {}).get('real_vs_real'))
      json.dump(results, open(results_path, 'w'), indent=2)
      print(f'{key}: {results[key]}', flush=True)
  lines = ['| variant | seed | train s | colour | shape | motion | all | FVD (floor) |',
           '|---|---|---|---|---|---|---|---|']
  for r in results.values():
    fvd = (f'{r["fvd"]:.0f} ({r["fvd_floor"]:.0f})' if r.get('fvd') is not None else '-')
    ts = f'{r["train_s"]:.0f}' if r.get('train_s') else '(reused)'
    lines.append(f'| {r["variant"]} | {r["seed"]} | {ts} | {r["color_acc"]:.3f} | '
                 f'{r["shape_acc"]:.3f} | {r["motion_acc"]:.3f} | {r["all_acc"]:.3f} | {fvd} |')
  open(os.path.join(_OUT.value, 'table.md'), 'w').write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
