"""Input pipeline throughput (clips/s) next to the train step's consumption rate.

  python benchmarks/pipeline_throughput.py                       # tiny config
  python benchmarks/pipeline_throughput.py --videos=64 --batches=100
  python benchmarks/pipeline_throughput.py --source=shapes       # the embedded dataset

Writes --videos synthetic mp4s (the shapes dataset, 64x64 at 12 fps, 4 s), ingests them
with data/ingest.py (timed: videos/s), then times the training input path
(data.pipeline.train_batches over the records: interleaved reads, random start and
stride, parallel JPEG decoding, tokenization) and the config's jitted train step on
this machine. The pipeline keeps up when its clips/s exceeds the step's. With
--source=shapes it times the embedded dataset's tfds pipeline instead (no ingestion).
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # pylint: disable=g-import-not-at-top
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from data import ingest
from data import pipeline
from data import shapes
from stunet import config as config_lib
from stunet import sharding
from stunet import train_step
from stunet import video_io
from stunet.text import Tokenizer
from stunet import text as text_lib

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/tiny.py:stage=scratch',
                                          'Config file.')
_VIDEOS = flags.DEFINE_integer('videos', 32, 'synthetic videos to ingest')
_BATCHES = flags.DEFINE_integer('batches', 50, 'pipeline batches timed (after 5 warm-up)')
_STEPS = flags.DEFINE_integer('steps', 5, 'train steps timed (after one warm-up)')
_WORKERS = flags.DEFINE_integer('workers', 2, 'ingest processes')
_SOURCE = flags.DEFINE_enum('source', 'records', ['records', 'shapes'],
                            'records: ingested synthetic mp4s; shapes: the embedded dataset.')


def main(argv):
  del argv
  config = _CONFIG.value
  d, tc = config.data, config.train
  info = None
  if _SOURCE.value == 'records':
    tmp = tempfile.mkdtemp(prefix='stunet-pipeline-')
    src = os.path.join(tmp, 'videos')
    for i in range(_VIDEOS.value):
      ex = shapes.example(0, i, 48, 64)
      video_io.write_video(os.path.join(src, f'{i:04d}.mp4'), ex['video'], fps=12)
      with open(os.path.join(src, f'{i:04d}.txt'), 'w') as f:
        f.write(ex['caption'])
    out = os.path.join(tmp, 'records')
    t0 = time.perf_counter()
    info = ingest.ingest(ingest.sidecar_jobs(src), out, fps=8, size=d.size,
                         min_frames=d.num_frames, max_frames=64, num_shards=4,
                         workers=_WORKERS.value, progress=False)
    ingest_s = time.perf_counter() - t0
    with config.unlocked():
      d.records, d.frame_strides = out, (1, 2)
  text_lib.resolve(config)
  config_lib.validate(config)
  clips = sharding.clips_per_step(tc)
  batches = pipeline.train_batches(config, Tokenizer.from_config(d).encode)
  for _ in range(5):
    next(batches)
  t0 = time.perf_counter()
  for _ in range(_BATCHES.value):
    batch = next(batches)
  pipe_s = (time.perf_counter() - t0) / _BATCHES.value

  mesh = sharding.make_mesh(config.mesh)
  spec = train_step.TrainSpec(config, mesh)
  state = spec.init(jax.random.key(0))
  null = np.zeros(d.max_text_len, np.int32)
  null[0] = 1
  step = train_step.make_train_step(spec, null, null > 0)
  gbatch = sharding.global_batch({k: batch[k] for k in ('video', 'tokens', 'mask')}, mesh)
  rng = jax.random.key(1)
  compiled = step.lower(state, gbatch, rng).compile()
  state, m = compiled(state, gbatch, rng)
  jax.block_until_ready(m)
  times = []
  for _ in range(_STEPS.value):
    t0 = time.perf_counter()
    state, m = compiled(state, gbatch, rng)
    jax.block_until_ready(m['loss'])
    times.append(time.perf_counter() - t0)
  step_s = float(np.median(times))

  if info is not None:
    print(f'ingest: {info["num_examples"]} videos (64x64, 12 fps, 4 s) -> {d.size}x{d.size} '
          f'at 8 fps in {ingest_s:.1f} s with {_WORKERS.value} processes: '
          f'{info["num_examples"] / ingest_s:.1f} videos/s')
  what = 'strides (1, 2)' if info is not None else f'the {d.name} dataset under {d.data_dir}'
  print(f'pipeline: {clips} clips of {d.num_frames}x{d.size}x{d.size} per batch, {what}: '
        f'{pipe_s * 1000:.1f} ms/batch = {clips / pipe_s:.1f} clips/s '
        f'(mean of {_BATCHES.value} batches)')
  print(f'train step ({tc.stage}, {jax.device_count()} {jax.devices()[0].platform} '
        f'device(s)): {step_s * 1000:.1f} ms = {clips / step_s:.1f} clips/s '
        f'(median of {_STEPS.value})')
  print(f'pipeline / train step: {step_s / pipe_s:.1f}x the rate the step consumes')


if __name__ == '__main__':
  app.run(main)
