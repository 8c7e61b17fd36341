"""Why does the tiny STUNet not learn motion, and what learns it in minutes? Variants
trained and scored side by side.

A variant is a pair of train.py runs: its T2I stage (trained once per distinct set of
T2I flags and shared by the variants that have it; ``--t2i_workdir`` stands in for the
default one, e.g. the shipped ``pretrained/t2i_tiny``) and its STUNet stage, inflated
from it. Each STUNet run is scored at ``--eval_steps`` with `evaluate.py` (colour /
shape / motion accuracy of the analytic detector on ``--num_samples`` prompts, and FVD
against held-out real clips unless ``--nofvd``). Wall time of every training run is
recorded, so variants are compared at equal CPU time: a row's minutes are its T2I
run's (0 for a given workdir) plus its STUNet run's up to that step.

  python experiments/motion_study.py --output_dir=study --variants=recipe,trained_text \
      --steps=800 --eval_steps=400,800
  python experiments/motion_study.py --output_dir=study --seeds=0,1   # several seeds

Writes ``<output_dir>/results.json`` and a Markdown table ``<output_dir>/table.md``;
each run's workdir, log and evaluations stay in ``<output_dir>/<variant>_s<seed>``.
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The quick start's recipe before the motion study: a text encoder trained by the T2I
# stage, no coordinates, no layout bias, uniform noise levels, one learning rate.
_OLD_T2I = ['--config.train.freeze_text=False', '--config.model.coord_channels=False',
            '--config.train.num_steps=600', '--config.train.schedule=constant']
_OLD = _OLD_T2I + ['--config.model.layout_basis=0', '--config.train.t_power=1',
                   '--config.train.spatial_lr_scale=1']

# name -> (T2I flags, STUNet flags, evaluate flags, checkpoint of another variant or
# None). Flags change configs/tiny.py's defaults ('STAGE=scratch': no T2I stage).
VARIANTS = {
    # configs/tiny.py as it is, and one change at a time from it
    'recipe': ([], [], [], None),
    'trained_text': ([], ['--config.train.freeze_text=False'], [], None),
    'no_layout': ([], ['--config.model.layout_basis=0'], [], None),
    'uniform_t': ([], ['--config.train.t_power=1'], [], None),
    'constant': ([], ['--config.train.schedule=constant'], [], None),
    'no_coords': (['--config.model.coord_channels=False'],
                  ['--config.model.coord_channels=False'], [], None),
    'old': (_OLD_T2I, _OLD, [], None),
    # older questions, asked of the same defaults: conditioning of the temporal
    # layers, dynamic thresholding, frozen spatial weights, the learning rate, scratch
    'nocond_dyn': ([], ['--config.model.temporal_cond=none'], ['--threshold=0.995'], 'nocond'),
    'nocond': ([], ['--config.model.temporal_cond=none'], [], None),
    'film_dyn': ([], [], ['--threshold=0.995'], 'recipe'),
    'film_ddim': ([], [], ['--sampler=ddim'], 'recipe'),
    'film_g1': ([], [], ['--guidance=1'], 'recipe'),
    'film_g5': ([], [], ['--guidance=5'], 'recipe'),
    'frozen_spatial': ([], ['--config.train.freeze_spatial=True'], [], None),
    'lr3e-3': ([], ['--config.train.lr=3e-3'], [], None),
    # learning rate per parameter group: the default gives the inflated image network's
    # weights 0.1x; here one rate for every weight (lr3e-3 above: 3e-3 for the temporal
    # layers, 3e-4 for the image network)
    'one_lr': ([], ['--config.train.spatial_lr_scale=1'], [], None),
    # frames sharing half of the noise's variance (PYoCo's mixed noise prior)
    'shared_noise': ([], ['--config.model.shared_noise=0.5'], [], None),
    # guidance weight at sampling only
    'recipe_g6': ([], [], ['--guidance=6'], 'recipe'),
    'recipe_g10': ([], [], ['--guidance=10'], 'recipe'),
    # the T2I stage's time spent on video instead (about the same CPU time in all)
    'scratch': ([], ['STAGE=scratch', '--config.train.num_steps=700'], [], None),
}

_OUT = flags.DEFINE_string('output_dir', 'study', 'Where runs and results go.')
_VARIANTS = flags.DEFINE_list('variants', list(VARIANTS), f'Of {list(VARIANTS)}.')
_SEEDS = flags.DEFINE_list('seeds', ['0'], 'Training seeds (config.seed).')
_T2I = flags.DEFINE_string('t2i_workdir', None, 'A trained T2I workdir for the variants '
                           'with the default T2I flags (default: train one in '
                           '<output_dir>/t2i with configs/tiny.py:stage=t2i).')
_T2I_STEPS = flags.DEFINE_integer('t2i_steps', None, 'T2I steps (default: the config\'s).')
_STEPS = flags.DEFINE_integer('steps', None, 'STUNet steps (default: the config\'s).')
_EVAL_STEPS = flags.DEFINE_list('eval_steps', [], 'STUNet checkpoints to score (default: '
                                'the last); each a multiple of the smallest.')
_NUM = flags.DEFINE_integer('num_samples', 32, 'Prompts scored per variant.')
_EVAL_SEED = flags.DEFINE_integer('eval_seed', 1234, 'Prompt and sampling seed.')
_FVD = flags.DEFINE_bool('fvd', True, 'Also score FVD (evaluate.py --fvd).')
_EXTRA = flags.DEFINE_multi_string('train_flag', [], 'Extra train.py flags for every run.')


def _run(cmd, log):
  t0 = time.time()
  with open(log, 'a') as f:
    f.write(' '.join(cmd) + '\n')
    f.flush()
    subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
  return time.time() - t0


def _t2i(flags_: list, times: dict) -> tuple[str, float]:
  """The T2I workdir for these flags (trained once) and its training seconds."""
  if not flags_ and _T2I.value:
    return _T2I.value, 0.
  name = 't2i' if not flags_ else 't2i_' + '_'.join(
      f.split('.')[-1].replace('=', '-') for f in flags_)
  workdir = os.path.join(_OUT.value, name)
  if name not in times:
    steps = [f'--config.train.num_steps={_T2I_STEPS.value}'] if _T2I_STEPS.value else []
    print(f'T2I stage {flags_} -> {workdir}', flush=True)
    times[name] = _run([sys.executable, 'train.py', '--config=configs/tiny.py:stage=t2i',
                        f'--workdir={workdir}', *flags_, *steps],
                       os.path.join(_OUT.value, f'{name}.log'))
  return workdir, times[name]


def main(argv):
  del argv
  os.makedirs(_OUT.value, exist_ok=True)
  py = sys.executable
  results_path = os.path.join(_OUT.value, 'results.json')
  results = json.load(open(results_path)) if os.path.exists(results_path) else {}
  t2i_times = results.setdefault('t2i_train_s', {})
  steps = _STEPS.value
  eval_steps = [int(x) for x in _EVAL_STEPS.value] or [steps]
  if _EVAL_STEPS.value and (not steps or any(s % min(eval_steps) or s > steps
                                             for s in eval_steps)):
    raise app.UsageError(f'--eval_steps={",".join(_EVAL_STEPS.value)}: give --steps and checkpoints '
                         f'that are multiples of the smallest, up to --steps.')
  for seed in _SEEDS.value:
    for name in _VARIANTS.value:
      if name not in VARIANTS:
        raise app.UsageError(f'unknown variant {name!r}; known: {list(VARIANTS)}.')
      t2i_flags, train_over, eval_flags, reuse = VARIANTS[name]
      stage = next((o.split('=')[1] for o in train_over if o.startswith('STAGE=')), 'stunet')
      train_over = [o for o in train_over if not o.startswith('STAGE=')]
      key = f'{name}_s{seed}'
      run_dir = os.path.join(_OUT.value, key)
      workdir = os.path.join(_OUT.value, f'{reuse}_s{seed}' if reuse else key, 'workdir')
      os.makedirs(run_dir, exist_ok=True)
      log = os.path.join(run_dir, 'log.txt')
      t2i, t2i_s = (None, 0.) if stage == 'scratch' else _t2i(t2i_flags, t2i_times)
      run = results.setdefault('runs', {}).setdefault(key, {})
      if not reuse and 'train_s' not in run:
        cmd = [py, 'train.py', f'--config=configs/tiny.py:stage={stage}',
               f'--workdir={workdir}', f'--config.seed={seed}', *train_over, *_EXTRA.value]
        if t2i:
          cmd.append(f'--config.train.init_from={t2i}')
        if steps:
          every = min(eval_steps)  # every checkpoint kept until it is scored
          cmd += [f'--config.train.num_steps={steps}', f'--config.train.ckpt_every={every}',
                  f'--config.train.keep={-(-steps // every)}']
        print(f'{key}: training', flush=True)
        run.update(train_s=_run(cmd, log), train_flags=train_over, t2i=t2i, t2i_s=t2i_s)
      trained = run.get('train_s')
      if reuse:
        trained = results['runs'].get(f'{reuse}_s{seed}', {}).get('train_s')
      for step in eval_steps:
        row = f'{key}@{step}' if step else key
        if row in results.setdefault('rows', {}):
          continue
        eval_dir = os.path.join(run_dir, f'eval_{step}' if step else 'eval')
        print(f'{row}: evaluating', flush=True)
        # The study's sampler (DDPM, 24 steps), whatever the configs' default; a variant's
        # own evaluate flags come after and win.
        _run([py, 'evaluate.py', f'--workdir={workdir}', f'--num_samples={_NUM.value}',
              f'--seed={_EVAL_SEED.value}', f'--output_dir={eval_dir}',
              f'--{"" if _FVD.value else "no"}fvd', '--sampler=ddpm', '--num_steps=24',
              *eval_flags]
             + ([f'--step={step}'] if step else []), log)
        scores = json.load(open(os.path.join(eval_dir, 'scores.json')))
        minutes = None
        if trained is not None:  # the STUNet run's time, pro rata to this step
          minutes = (t2i_s + trained * (step / steps if step and steps else 1.)) / 60
        results['rows'][row] = dict(
            variant=name, seed=int(seed), step=step, minutes=minutes, eval_flags=eval_flags,
            **scores['scores'], fvd=(scores.get('fvd') or {}).get('fvd'),
            fvd_floor=(scores.get('fvd') or {}).get('real_vs_real'))
        json.dump(results, open(results_path, 'w'), indent=2)
        print(f'{row}: {results["rows"][row]}', flush=True)
  lines = ['| variant | seed | STUNet step | minutes (T2I + STUNet) | colour | shape | motion '
           '| all | FVD (floor) |', '|---|---|---|---|---|---|---|---|---|']
  for r in results.get('rows', {}).values():
    fvd = (f'{r["fvd"]:.0f} ({r["fvd_floor"]:.0f})' if r.get('fvd') is not None else '-')
    minutes = f'{r["minutes"]:.1f}' if r.get('minutes') is not None else '(reused)'
    lines.append(f'| {r["variant"]} | {r["seed"]} | {r["step"] or "last"} | {minutes} | '
                 f'{r["color_acc"]:.3f} | {r["shape_acc"]:.3f} | {r["motion_acc"]:.3f} | '
                 f'{r["all_acc"]:.3f} | {fvd} |')
  open(os.path.join(_OUT.value, 'table.md'), 'w').write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
