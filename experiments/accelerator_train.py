"""train.py for an accelerator machine that has JAX but no TensorFlow.

    python experiments/accelerator_train.py --config=configs/tiny.py:stage=stunet \
        --workdir=W --config.train.num_steps=6400 --config.train.ckpt_every=800 \
        --config.train.keep=8

The same training loop (stunet/train_loop.py), config and checkpoints as train.py; only
the input differs. train.py reads the embedded shapes data through tf.data
(data/pipeline.py); a borrowed GPU machine here has JAX but no TensorFlow, and nothing
can be installed on it. So this script renders the same training examples in-process
(`data.shapes.example(dataset_seed, i)` for i < num_train: what the tfds builder
stores) and shuffles them with numpy, one permutation per epoch seeded by config.seed.
The clips and captions are the tfds dataset's; the order of batches is not tf.data's,
so a run here is a second seed of the same recipe, not a replay of train.py's.
Only the plain shapes data on one process: records, the stationary and styled variants
and crops are refused. evaluate.py --nofvd needs no TensorFlow either, so a whole
train-and-score run fits such a machine; experiments/accelerator_session.sh is one,
with what to carry there (docs/scale.md).
"""

import multiprocessing
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
from absl import app
from absl import flags
from ml_collections import config_flags

from data import shapes
from stunet import cli


def _render(args):
  seed, index, frames, size = args
  ex = shapes.example(seed, index, frames, size)
  return ex['video'], ex['caption']


def render_train_split(data_config, workers: int = 0):
  """The tfds train split's clips (uint8 [n, t, h, w, 3]) and captions, rendered."""
  d = data_config
  if d.name != 'shapes' or d.records or d.stationary_frames or d.style or d.crop_size:
    raise ValueError('accelerator_train.py renders only the plain shapes data (no '
                     'records, stationary_frames, style or crop_size); use train.py.')
  jobs = [(d.dataset_seed, i, d.num_frames, d.size) for i in range(d.num_train)]
  workers = workers or min(8, os.cpu_count() or 1)
  if workers > 1:  # fork before any JAX backend starts
    with multiprocessing.get_context('fork').Pool(workers) as pool:
      out = pool.map(_render, jobs, chunksize=64)
  else:
    out = [_render(j) for j in jobs]
  return np.stack([v for v, _ in out]), [c for _, c in out]


class RenderedInputs:
  """What stunet/train_loop.py reads (as data.pipeline.TrainInputs gives it), from
  clips rendered in memory: batches from a step on and the empty caption's tokens."""

  def __init__(self, config, videos, captions):
    from stunet import sharding  # pylint: disable=g-import-not-at-top
    from stunet.text import Tokenizer  # pylint: disable=g-import-not-at-top

    self.clips = sharding.clips_per_step(config.train)
    self.seed = config.seed
    self.videos, self.captions = videos, captions
    self.tokenizer = Tokenizer.from_config(config.data)

  def _indices(self):
    rng = np.random.default_rng(self.seed)
    while True:
      perm = rng.permutation(len(self.videos))
      for i in range(0, len(perm) - self.clips + 1, self.clips):
        yield perm[i:i + self.clips]

  def batches(self, start_step: int = 0):
    for step, idx in enumerate(self._indices()):
      if step < start_step:
        continue
      captions = [self.captions[i] for i in idx]
      tokens, mask = self.tokenizer.encode(captions)
      yield dict(video=self.videos[idx].astype(np.float32) / 127.5 - 1.0,
                 tokens=np.asarray(tokens, np.int32), mask=np.asarray(mask, bool),
                 caption=captions)

  def text_warnings(self):
    return []  # the embedded captions with the shipped tokenizer

  def null_text(self):
    tokens, mask = self.tokenizer.null(1)
    return tokens[0], mask[0]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  try:
    videos, captions = render_train_split(config.data)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  import jax  # pylint: disable=g-import-not-at-top
  from stunet import monitoring  # pylint: disable=g-import-not-at-top
  from stunet import train_loop  # pylint: disable=g-import-not-at-top
  if jax.process_count() != 1:
    raise app.UsageError('accelerator_train.py runs one process; use train.py.')
  cli.quiet_library_logs()
  try:
    train_loop.prepare(config, _WORKDIR.value)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from e
  monitoring.report('rendered %d training clips %s on %s', len(videos),
                    'x'.join(map(str, videos.shape[1:])), jax.devices()[0].device_kind)
  train_loop.train(config, _WORKDIR.value, RenderedInputs(config, videos, captions))


if __name__ == '__main__':
  # Defined here, not on import: the tests import this file beside train.py's flags.
  _CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).',
                                            lock_config=True)
  _WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints and config.json go.')
  flags.mark_flags_as_required(['config', 'workdir'])
  cli.run(main, config_flags=[_CONFIG])
