"""How often a T2I model's frames carry the prompted colour and shape.

A STUNet inflated from a T2I model starts from its frames, so their shapes bound the
quick start's. ``evaluate.py`` scores clips; this samples each T2I workdir once per
prompt (a single frame, the run's sampler settings unless given), holds the frame still
for 4 frames and reads back its colour and shape with the same analytic detector, on
the benchmark's prompts (``shapes.benchmark_prompts``, as ``evaluate.py`` draws them).

  python experiments/t2i_shapes.py --workdir=pretrained/t2i_tiny \
      --workdir=pretrained/t2i_tiny_7200 --num_samples=48 --seed=1234

Prints one row per workdir (accuracies and the shape confusion); writes nothing.
"""

import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
from absl import app
from absl import flags

from data import shapes
from data import shapes_metrics as metrics
from stunet import cli
from stunet.generator import Generator

_WORKDIRS = flags.DEFINE_multi_string('workdir', None, 'T2I run(s) to score.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: each run\'s latest).')
_NUM = flags.DEFINE_integer('num_samples', 48, 'Prompts (one frame each).')
_SEED = flags.DEFINE_integer('seed', 1234, 'Seed of the prompts and of the sampler.')
_SAMPLER = flags.DEFINE_string('sampler', None, 'Sampler (default: the run\'s).')
_STEPS = flags.DEFINE_integer('num_steps', None, 'Denoising steps (default: the run\'s).')


def score(frames, prompts) -> dict:
  """frames [b, h, w, 3] in [-1, 1] -> colour and shape accuracy (``metrics.score`` of
  the frames held still) and the shape confusion {(prompted, detected): count}."""
  clips = np.repeat(np.asarray(frames)[:, None], 4, axis=1)
  scores = metrics.score(clips, prompts)
  confusion = collections.Counter(
      (shapes.parse_caption(p)['shape'], metrics.detect(c)['shape'])
      for c, p in zip(clips, prompts))
  return dict(color=scores['color_acc'], shape=scores['shape_acc'],
              confusion=dict(sorted(confusion.items())))


def main(argv):
  del argv
  cli.quiet_library_logs()
  if not _WORKDIRS.value:
    raise app.UsageError('pass --workdir=<a T2I run>, e.g. pretrained/t2i_tiny_7200.')
  prompts = shapes.benchmark_prompts(_NUM.value, _SEED.value)
  for workdir in _WORKDIRS.value:
    gen, config = Generator.from_workdir(workdir, _STEP.value, num_steps=_STEPS.value,
                                         sampler=_SAMPLER.value)
    if config.model.temporal:
      raise app.UsageError(f'{workdir} is a STUNet run; score it with evaluate.py.')
    frames = np.asarray(gen(prompts, guidance=config.sample.guidance, seed=_SEED.value))
    row = score(frames[:, 0], prompts)
    confusion = ', '.join(f'{w}->{g} {n}' for (w, g), n in row['confusion'].items())
    print(f'{workdir}: colour {row["color"]:.3f}  shape {row["shape"]:.3f} '
          f'(chance 0.348; {len(prompts)} prompts)  [{confusion}]')


if __name__ == '__main__':
  cli.run(main)
