"""What a negative prompt does on the shapes data, measured.

Prompts whose motion has an opposite (left/right, up/down, grows/shrinks), drawn from
--seed. Each prompt is sampled three ways with the same seed: the empty unconditional
prompt (plain classifier-free guidance), the same caption with the opposite motion as
the negative prompt ("a red square moves left" against "a red square moves right"),
and the opposite motion alone as the negative prompt ("moves right"). The analytic
detector reads colour, shape and motion back from every video.

  python experiments/negative_prompt.py --num_samples=64 --output_dir=negative

Writes ``<output_dir>/results.json``.
"""

import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top
from absl import app
from absl import flags

from data import shapes  # pylint: disable=g-import-not-at-top
from data import shapes_metrics as metrics  # pylint: disable=g-import-not-at-top
from stunet import checkpoints  # pylint: disable=g-import-not-at-top
from stunet import cli  # pylint: disable=g-import-not-at-top
from stunet import sampling  # pylint: disable=g-import-not-at-top
from stunet.generator import Generator  # pylint: disable=g-import-not-at-top

OPPOSITE = {'moves left': 'moves right', 'moves right': 'moves left', 'moves up':
            'moves down', 'moves down': 'moves up', 'grows': 'shrinks', 'shrinks': 'grows'}

_WORKDIR = flags.DEFINE_string('workdir', None, 'The model (default: the shipped one).')
_NUM = flags.DEFINE_integer('num_samples', 64, 'Prompts.')
_SEED = flags.DEFINE_integer('seed', 4321, 'Prompt and sampling seed.')
_BATCH = flags.DEFINE_integer('batch_size', 8, 'Videos per sampler call.')
_GUIDANCE = flags.DEFINE_float('guidance', None, 'CFG weight (default: config).')
_SAMPLER = flags.DEFINE_enum('sampler', None, list(sampling.SAMPLERS), 'Default: the '
                             'model\'s config.')
_NUM_STEPS = flags.DEFINE_integer('num_steps', None, 'Denoising steps (default: config).')
_OUT = flags.DEFINE_string('output_dir', 'negative_prompt', 'Where results.json goes.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_library_logs()
  rng = np.random.default_rng(_SEED.value)
  combos = [c for c in shapes.COMBINATIONS if c[2] in OPPOSITE]
  labels = [combos[i] for i in rng.integers(len(combos), size=_NUM.value)]
  prompts = [shapes.caption(*c) for c in labels]
  arms = {'empty (plain guidance)': None,
          'caption with the opposite motion': [shapes.caption(c, s, OPPOSITE[m])
                                               for c, s, m in labels],
          'the opposite motion alone': [OPPOSITE[m] for _, _, m in labels]}
  gen, config = Generator.from_workdir(_WORKDIR.value or checkpoints.default_workdir(),
                                       sampler=_SAMPLER.value, num_steps=_NUM_STEPS.value)
  guidance = config.sample.guidance if _GUIDANCE.value is None else _GUIDANCE.value
  results = {'n': len(prompts), 'guidance': guidance, 'sampler': gen.kw['sampler'],
             'num_steps': gen.kw['num_steps'], 'arms': {}}
  n = _BATCH.value
  for arm, negatives in arms.items():
    videos = np.concatenate([
        gen(prompts[i:i + n], guidance=guidance, seed=_SEED.value + i,
            negative_prompt=None if negatives is None else negatives[i:i + n])
        for i in range(0, len(prompts), n)])
    scores = metrics.score(videos, prompts)
    detected = [metrics.detect(v)['motion'] for v in videos]
    into_negative = np.mean([d == OPPOSITE[m] for d, (_, _, m) in zip(detected, labels)])
    results['arms'][arm] = dict(**{k: scores[k] for k in ('color_acc', 'shape_acc',
                                                          'motion_acc', 'all_acc')},
                                opposite_motion_rate=float(into_negative))
    r = results['arms'][arm]
    print(f'{arm:34s} colour {r["color_acc"]:.3f} shape {r["shape_acc"]:.3f} motion '
          f'{r["motion_acc"]:.3f} all {r["all_acc"]:.3f}; the opposite motion '
          f'{r["opposite_motion_rate"]:.3f}', flush=True)
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)
  print(f'wrote {_OUT.value}/results.json')


if __name__ == '__main__':
  cli.run(main)
