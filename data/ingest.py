r"""Video files + captions -> sharded TFRecords for training (format: data/records.py).

Captions come from a sidecar text file per video (``clip.mp4`` + ``clip.txt``) or
from a CSV/TSV with a header (WebVid-style):

  python -m data.ingest --videos=/data/clips --output=/data/records --fps=8 --size=64
  python -m data.ingest --csv=results_10M_train.csv --video_root=/data/webvid \
      --path_format='{page_dir}/{videoid}.mp4' --caption_column=name \
      --output=/data/records --num_shards=256 --workers=16

Each video is decoded by ffmpeg (imageio-ffmpeg's own binary), resampled to --fps,
resized and center-cropped to --size, cut to at most --max_frames frames and stored
as JPEG frames with its caption, in several processes. Files that are missing,
zero-length, undecodable or shorter than --min_frames, and captions that are missing,
empty or not UTF-8, are skipped, logged by name and counted in info.json; no record
is ever written half. Shards are written under temporary names and renamed when
complete, and info.json last: a directory with info.json is a finished ingest. The
output does not depend on --workers (videos are assigned to shards in input order).
"""

import csv
import io
import multiprocessing
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from stunet import cli

VIDEO_EXTENSIONS = ('.mp4', '.m4v', '.mov', '.mkv', '.webm', '.avi', '.gif', '.mpg',
                    '.mpeg', '.ts', '.flv', '.wmv')
REASONS = ('missing_file', 'empty_file', 'undecodable', 'too_short', 'bad_caption')


def sidecar_jobs(folder: str) -> list:
  """(video path, caption file) for every video under folder (recursively), sorted."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'--videos={folder!r} is not a directory.')
  jobs = []
  for root, _, files in os.walk(folder):
    for f in files:
      if f.lower().endswith(VIDEO_EXTENSIONS):
        path = os.path.join(root, f)
        jobs.append((path, ('file', os.path.splitext(path)[0] + '.txt')))
  return sorted(jobs)


def csv_jobs(path: str, video_root: str = '', path_column: str = 'path',
             path_format: str = '', caption_column: str = 'caption') -> list:
  """(video path, caption) per row of a CSV (or .tsv) with a header row."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'--csv={path!r} not found.')
  root = video_root or os.path.dirname(os.path.abspath(path))
  delimiter = '\t' if path.lower().endswith('.tsv') else ','
  with open(path, newline='', encoding='utf-8', errors='replace') as f:
    reader = csv.DictReader(f, delimiter=delimiter)
    need = [caption_column] + ([] if path_format else [path_column])
    missing = [c for c in need if c not in (reader.fieldnames or [])]
    if missing:
      raise ValueError(f'{path}: no column(s) {missing} in the header {reader.fieldnames}; '
                       f'set --path_column/--path_format and --caption_column.')
    jobs = []
    for row in reader:
      rel = path_format.format(**row) if path_format else row[path_column]
      jobs.append((os.path.join(root, rel), ('text', row[caption_column])))
  return jobs


def _caption(source) -> str:
  kind, value = source
  if kind == 'file':
    if not os.path.exists(value):
      raise ValueError(f'caption file {value} is missing')
    with open(value, 'rb') as f:
      raw = f.read()
    try:
      value = raw.decode('utf-8')
    except UnicodeDecodeError as e:
      raise ValueError(f'caption file {value} is not UTF-8 ({e})') from e
  value = ' '.join((value or '').split())
  if not value or '\ufffd' in value:
    raise ValueError('the caption is empty or not valid text')
  return value


def process(job) -> dict:
  """One video -> {'path', 'frames' (JPEG bytes), 'caption'} or {'path', 'skip', 'why'}.

  Runs in a worker process; never raises for a bad input.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from stunet import video_io  # pylint: disable=g-import-not-at-top
  path, source, opts = job
  out = {'path': path}
  try:
    caption = _caption(source)
  except (ValueError, OSError) as e:
    return {**out, 'skip': 'bad_caption', 'why': str(e)}
  if not os.path.exists(path):
    return {**out, 'skip': 'missing_file', 'why': 'no such file'}
  if os.path.getsize(path) == 0:
    return {**out, 'skip': 'empty_file', 'why': 'zero bytes'}
  try:
    video = video_io.read_video(path, opts['fps'], opts['size'], opts['max_frames'])
  except (ValueError, OSError) as e:
    return {**out, 'skip': 'undecodable', 'why': str(e).splitlines()[-1][-200:]}
  if len(video) < opts['min_frames']:
    return {**out, 'skip': 'too_short',
            'why': f'{len(video)} frames at {opts["fps"]} fps < {opts["min_frames"]}'}
  frames = []
  for frame in video:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format='JPEG', quality=opts['quality'])
    frames.append(buf.getvalue())
  return {**out, 'frames': frames, 'caption': caption}


def ingest(jobs: list, output: str, *, fps: float, size: int, min_frames: int,
           max_frames: int, num_shards: int, workers: int = 1, quality: int = 95,
           overwrite: bool = False, progress: bool = True, tokenizer_vocab: int = 8000
           ) -> dict:
  """Writes the records directory; returns its info (also in output/info.json).

  tokenizer_vocab > 0 also trains a sentencepiece model of the captions
  (``records.TOKENIZER``, see ``caption_tokenizer``), which training on these records
  uses unless config.data.tokenizer or a T5 names another.
  """
  from data import records  # pylint: disable=g-import-not-at-top
  from stunet import config as config_lib  # pylint: disable=g-import-not-at-top
  for flag, value, low, high, what in (
      ('--fps', fps, ('>', 0.), None, 'the frame rate'),
      ('--size', size, 1, None, 'the frame size'),
      ('--num_shards', num_shards, 1, None, 'record files'),
      ('--workers', workers, 1, None, 'decoding processes'),
      ('--quality', quality, 1, 100, 'the JPEG quality'),
      ('--tokenizer_vocab', tokenizer_vocab, 0, None, 'the tokenizer\'s pieces')):
    config_lib.check_range(flag, value, low, high, what)
  if not 1 <= min_frames <= max_frames:
    raise ValueError(f'need 1 <= --min_frames ({min_frames}) <= --max_frames ({max_frames}).')
  if not jobs:
    raise ValueError('no videos to ingest: the folder or CSV lists none.')
  if os.path.exists(os.path.join(output, records.INFO)) and not overwrite:
    raise FileExistsError(f'{output} already holds an ingest; pass --overwrite to replace it.')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  os.makedirs(output, exist_ok=True)
  for stale in records.shard_files(output):
    os.remove(stale)
  names = [records.shard_name(k, num_shards) for k in range(num_shards)]
  writers = [tf.io.TFRecordWriter(os.path.join(output, n + '.tmp')) for n in names]
  counts, lengths, captions = [0] * num_shards, [], []
  skipped = {r: [] for r in REASONS}
  opts = dict(fps=fps, size=size, min_frames=min_frames, max_frames=max_frames,
              quality=quality)
  work = [(path, source, opts) for path, source in jobs]
  t0 = time.time()
  bar = _Progress(len(work), progress)
  if workers > 1:
    pool = multiprocessing.get_context('spawn').Pool(workers)
    results = pool.imap(process, work, chunksize=1)
  else:
    pool, results = None, map(process, work)
  try:
    for res in results:
      if 'skip' in res:
        skipped[res['skip']].append(res['path'])
        logging.warning('skipped %s (%s): %s', res['path'], res['skip'], res['why'])
        bar.update(skipped=1)
        continue
      k = len(lengths) % num_shards
      ex = records.make_example(res['frames'], res['caption'], res['path'])
      writers[k].write(ex.SerializeToString(deterministic=True))
      counts[k] += 1
      lengths.append(len(res['frames']))
      captions.append(res['caption'])
      bar.update()
  finally:
    if pool is not None:
      pool.terminate()
    for w in writers:
      w.close()
    bar.close()
  if not lengths:
    raise ValueError(f'none of the {len(jobs)} videos could be used: {_summary(skipped)}.')
  for n in names:
    os.replace(os.path.join(output, n + '.tmp'), os.path.join(output, n))
  info = dict(format=records.FORMAT, fps=fps, size=size, min_frames=min_frames,
              max_frames=max_frames, num_examples=len(lengths),
              frames=dict(min=min(lengths), max=max(lengths),
                          mean=round(float(np.mean(lengths)), 2)),
              shards=dict(zip(names, counts)), num_skipped=sum(map(len, skipped.values())),
              skipped=skipped, seconds=round(time.time() - t0, 1), text=None,
              tokenizer=(caption_tokenizer(captions, output, tokenizer_vocab)
                         if tokenizer_vocab > 0 else None))
  records.write_info(output, info)
  return info


def caption_tokenizer(captions: list, output: str, vocab_size: int = 8000) -> dict:
  """Trains ``output/tokenizer.model`` on the captions: a word model when every
  distinct word fits in vocab_size, else a unigram (subword) model, so that rare words
  split into pieces instead of becoming <unk>. Returns its info.json entry."""
  from data import records  # pylint: disable=g-import-not-at-top
  from stunet import text  # pylint: disable=g-import-not-at-top
  words = {w for c in captions for w in c.split()}
  kind = 'word' if len(words) + 3 <= vocab_size else 'unigram'
  prefix = os.path.join(output, os.path.splitext(records.TOKENIZER)[0])
  try:
    text.train_tokenizer(captions, prefix, vocab_size=vocab_size, model_type=kind)
  except RuntimeError as e:  # e.g. fewer pieces than the captions' distinct characters
    raise ValueError(f'--tokenizer_vocab={vocab_size} cannot tokenize these captions '
                     f'({str(e).split("] ")[-1]}); raise it, or pass 0 for no '
                     f'tokenizer.') from e
  os.remove(prefix + '.vocab')
  tok = text.Tokenizer(prefix + '.model', max_length=1 << 16)
  return dict(file=records.TOKENIZER, model_type=kind, vocab_size=tok.vocab_size,
              distinct_words=len(words))


def _summary(skipped: dict) -> str:
  return ', '.join(f'{len(v)} {k}' for k, v in skipped.items() if v) or 'none'


class _Progress:
  """A one-line progress bar on stderr (tqdm, which tensorflow-datasets brings)."""

  def __init__(self, total: int, enabled: bool):
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    self.skipped = 0
    self.bar = tqdm(total=total, unit='video', disable=not enabled, file=sys.stderr,
                    dynamic_ncols=True)

  def update(self, skipped: int = 0):
    self.skipped += skipped
    if skipped:
      self.bar.set_postfix(skipped=self.skipped, refresh=False)
    self.bar.update(1)

  def close(self):
    self.bar.close()


FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  if bool(FLAGS.videos) == bool(FLAGS.csv):
    raise app.UsageError('give exactly one of --videos (a folder) or --csv (a CSV/TSV).')
  try:
    jobs = (sidecar_jobs(FLAGS.videos) if FLAGS.videos else
            csv_jobs(FLAGS.csv, FLAGS.video_root, FLAGS.path_column, FLAGS.path_format,
                     FLAGS.caption_column))
    info = ingest(jobs, FLAGS.output, fps=FLAGS.fps, size=FLAGS.size,
                  min_frames=FLAGS.min_frames, max_frames=FLAGS.max_frames,
                  num_shards=FLAGS.num_shards, workers=FLAGS.workers,
                  quality=FLAGS.quality, overwrite=FLAGS.overwrite,
                  tokenizer_vocab=FLAGS.tokenizer_vocab)
  except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
    raise app.UsageError(str(e)) from e
  except OSError as e:  # the output folder cannot be written
    raise app.UsageError(f'cannot write {e.filename or FLAGS.output}: {e.strerror or e}.') from e
  print(f'wrote {info["num_examples"]} videos ({info["frames"]["min"]}-'
        f'{info["frames"]["max"]} frames at {info["fps"]} fps, {info["size"]}x'
        f'{info["size"]}) to {len(info["shards"])} shard(s) in {FLAGS.output} in '
        f'{info["seconds"]}s; skipped {info["num_skipped"]}: {_summary(info["skipped"])}'
        f' (names in info.json)')
  if info['tokenizer']:
    t = info['tokenizer']
    print(f'trained a {t["model_type"]} sentencepiece model of the captions '
          f'({t["vocab_size"]} pieces, {t["distinct_words"]} distinct words): '
          f'{os.path.join(FLAGS.output, t["file"])}, used when training on these records')


if __name__ == '__main__':
  flags.DEFINE_string('videos', '', 'folder of videos with sidecar .txt captions')
  flags.DEFINE_string('csv', '', 'CSV/TSV (with a header) of video paths and captions')
  flags.DEFINE_string('video_root', '', 'CSV paths are relative to this (default: its folder)')
  flags.DEFINE_string('path_column', 'path', 'CSV column holding the video path')
  flags.DEFINE_string('path_format', '', "e.g. '{page_dir}/{videoid}.mp4' (CSV columns)")
  flags.DEFINE_string('caption_column', 'caption', 'CSV column holding the caption')
  flags.DEFINE_string('output', None, 'records directory to write', required=True)
  flags.DEFINE_float('fps', 8., 'frame rate of the stored frames')
  flags.DEFINE_integer('size', 64, 'frames are resized and center-cropped to size x size')
  flags.DEFINE_integer('min_frames', 16, 'shorter videos (after resampling) are skipped')
  flags.DEFINE_integer('max_frames', 128, 'longer videos keep their first max_frames')
  flags.DEFINE_integer('num_shards', 8, 'record files (>= the number of data shards)')
  flags.DEFINE_integer('workers', max(1, (os.cpu_count() or 2) - 1), 'decoding processes')
  flags.DEFINE_integer('quality', 95, 'JPEG quality of the stored frames')
  flags.DEFINE_bool('overwrite', False, 'replace an existing ingest in --output')
  flags.DEFINE_integer('tokenizer_vocab', 8000, 'pieces of the sentencepiece model trained '
                       'on the captions (0: none; train with a T5 or config.data.tokenizer)')
  cli.run(main)
