"""Video-caption TFRecords: the format data/ingest.py writes and the clip pipeline.

A records directory holds ``train-KKKKK-of-NNNNN.tfrecord`` shards of tf.train.Example
and ``info.json`` (frame rate, frame size, counts, what was skipped and why; written
last, so a directory without it is an unfinished ingest). Each Example:

    frames          bytes list   one JPEG per frame, size x size, at info['fps']
    caption         bytes        UTF-8
    num_frames      int64
    source          bytes        the file it came from
    text_embedding  bytes        optional (data/embed_captions.py): float16 [L, d]
    text_len        int64        optional: valid tokens of text_embedding

``clip_dataset`` reads one logical shard of the files (per-host file sharding),
interleaving files and decoding JPEGs in parallel, and cuts a random clip of
``num_frames`` frames from each video: a random start and a stride drawn from
``strides`` (among those that fit), all from a stateless seed, so the stream is the
same on every run.
"""

from __future__ import annotations

import glob
import json
import os

from etils import epy
import numpy as np

# TensorFlow (several seconds to import) loads on first use: the format's names and
# info.json are read without it, so ingest.py refuses an existing output at once.
with epy.lazy_imports():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

INFO = 'info.json'
NULL_TEXT = 'text_null.npz'
TOKENIZER = 'tokenizer.model'  # sentencepiece model of the captions (data/ingest.py)
FORMAT = 'stunet-video-records/1'


def shard_name(k: int, n: int) -> str:
  return f'train-{k:05d}-of-{n:05d}.tfrecord'


def read_info(directory: str) -> dict:
  path = os.path.join(directory, INFO)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'records directory {directory!r} not found; write it with '
                            f'python -m data.ingest.')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{directory!r} has no {INFO}: it is not a finished '
                            f'data/ingest.py output (re-run the ingest).')
  with open(path) as f:
    info = json.load(f)
  if info.get('format') != FORMAT:
    raise ValueError(f'{path}: format {info.get("format")!r}, expected {FORMAT!r}.')
  return info


def write_info(directory: str, info: dict) -> None:
  """Atomically (re)writes info.json."""
  tmp = os.path.join(directory, INFO + '.tmp')
  with open(tmp, 'w') as f:
    json.dump(info, f, indent=1)
  os.replace(tmp, os.path.join(directory, INFO))


def shard_files(directory: str) -> list:
  return sorted(glob.glob(os.path.join(directory, 'train-*-of-*.tfrecord')))


def _bytes(values):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _ints(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def make_example(frames: list, caption: str, source: str) -> tf.train.Example:
  """frames: list of JPEG bytes."""
  return tf.train.Example(features=tf.train.Features(feature={
      'frames': _bytes(frames), 'caption': _bytes([caption.encode('utf-8')]),
      'num_frames': _ints([len(frames)]), 'source': _bytes([source.encode('utf-8')])}))


def add_text(example: tf.train.Example, embedding: np.ndarray, length: int) -> None:
  """Stores a caption's text embedding [L, d] (as float16) in the Example."""
  f = example.features.feature
  f['text_embedding'].CopyFrom(_bytes([np.asarray(embedding, np.float16).tobytes()]))
  f['text_len'].CopyFrom(_ints([int(length)]))


def check_text(info: dict, config) -> None:
  """Refuses records whose stored embeddings do not fit the model config."""
  text = info.get('text')
  if not text:
    raise ValueError('config.data.precomputed_text=True but the records hold no text '
                     'embeddings: run python -m data.embed_captions on them first.')
  want = (config.data.max_text_len, config.model.text.width)
  have = (text['max_text_len'], text['width'])
  if want != have:
    raise ValueError(f'the records hold embeddings of {have[0]} tokens x {have[1]} '
                     f'(from {text["encoder"]}); the config wants {want[0]} x {want[1]} '
                     f'(data.max_text_len, model.text.width). Set them to match, or '
                     f're-run data.embed_captions.')


def resolve_tokenizer(config) -> str | None:
  """Training on records with no tokenizer named and no T5: use the sentencepiece
  model that ingest trained on their captions (set in config.data.tokenizer, so it is
  saved with the run's config). Returns its path, or None when nothing changed."""
  d = config.data
  if not d.records or d.tokenizer or config.model.text.pretrained:
    return None
  entry = read_info(d.records).get('tokenizer')
  if not entry:
    return None
  path = os.path.abspath(os.path.join(d.records, entry['file']))
  with config.unlocked():
    d.tokenizer = path
  return path


def captions(directory: str, limit: int = 2000) -> list:
  """Up to ``limit`` captions of the records, in file order (for coverage checks)."""
  ds = tf.data.TFRecordDataset(shard_files(directory)).take(limit).map(
      lambda r: tf.io.parse_single_example(
          r, {'caption': tf.io.FixedLenFeature([], tf.string)})['caption'])
  return [c.decode('utf-8') for c in ds.as_numpy_iterator()]


def null_text(directory: str, config) -> tuple[np.ndarray, np.ndarray]:
  """The stored embedding [L, d] and mask [L] of the empty caption (CFG's null)."""
  check_text(read_info(directory), config)
  with np.load(os.path.join(directory, NULL_TEXT)) as f:
    return f['embedding'].astype(np.float32), f['mask'].astype(bool)


def clip_dataset(directory: str, batch_size: int, num_frames: int, size: int, *,
                 seed: int, strides=(1,), shard_index: int = 0, num_shards: int = 1,
                 shuffle: bool = True, repeat: bool = True, shuffle_buffer: int = 256,
                 text: bool = False, cycle_length: int = 4) -> tf.data.Dataset:
  """Batches of random clips from shard ``shard_index`` of ``num_shards`` of the files.

  Elements: video float32 [b, num_frames, size, size, 3] in [-1, 1], caption string
  [b]; with ``text``: text float32 [b, L, d] and mask bool [b, L] (the stored
  embeddings). Partial batches are dropped.
  """
  info = read_info(directory)
  files = shard_files(directory)
  strides = sorted({int(s) for s in strides})
  if not strides or strides[0] < 1:
    raise ValueError(f'frame strides must be >= 1, got {strides}.')
  if len(files) < num_shards:
    raise ValueError(f'{directory} has {len(files)} record file(s), fewer than the '
                     f'{num_shards} data shards (config.data.num_shards, or one per '
                     f'process): re-run data/ingest.py with --num_shards >= {num_shards}.')
  if info['min_frames'] < num_frames:
    raise ValueError(f'{directory} holds videos of {info["min_frames"]} frames, shorter '
                     f'than a clip of {num_frames}: lower config.data.num_frames or '
                     f're-ingest with --min_frames {num_frames}.')
  files = files[shard_index::num_shards]
  stored = info['size']
  features = {'frames': tf.io.VarLenFeature(tf.string),
              'caption': tf.io.FixedLenFeature([], tf.string),
              'num_frames': tf.io.FixedLenFeature([], tf.int64)}
  if text:
    features['text_embedding'] = tf.io.FixedLenFeature([], tf.string)
    features['text_len'] = tf.io.FixedLenFeature([], tf.int64)
    length, width = info['text']['max_text_len'], info['text']['width']

  ds = tf.data.Dataset.from_tensor_slices(files)
  if shuffle:
    ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=False)
  if repeat:
    ds = ds.repeat()
  ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(cycle_length, len(files)),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if shuffle:  # serialized records: the buffer holds compressed frames
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
  stride_table = tf.constant(strides, tf.int64)

  def clip(index, record):
    ex = tf.io.parse_single_example(record, features)
    n = ex['num_frames']
    u = tf.random.stateless_uniform([2], seed=tf.stack([tf.cast(seed, tf.int64), index]))
    fits = tf.boolean_mask(stride_table, (num_frames - 1) * stride_table + 1 <= n)
    choice = tf.minimum(tf.cast(u[0] * tf.cast(tf.size(fits), tf.float32), tf.int32),
                        tf.size(fits) - 1)
    stride = fits[choice]
    room = n - (num_frames - 1) * stride  # possible start frames
    start = tf.minimum(tf.cast(u[1] * tf.cast(room, tf.float32), tf.int64), room - 1)
    jpegs = tf.gather(tf.sparse.to_dense(ex['frames']),
                      start + stride * tf.range(num_frames, dtype=tf.int64))
    video = tf.map_fn(lambda b: tf.io.decode_jpeg(b, channels=3), jpegs,
                      fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    video = tf.cast(video, tf.float32)
    if stored != size:
      video = tf.image.resize(video, [size, size], antialias=True)
    out = {'video': tf.ensure_shape(video / 127.5 - 1., [num_frames, size, size, 3]),
           'caption': ex['caption']}
    if text:
      emb = tf.io.decode_raw(ex['text_embedding'], tf.float16)
      out['text'] = tf.cast(tf.reshape(emb, [length, width]), tf.float32)
      out['mask'] = tf.range(length, dtype=tf.int64) < ex['text_len']
    return out

  # Every record is long enough: ingest stored none below info['min_frames'] (checked
  # above against num_frames), so no record is parsed twice to filter.
  ds = ds.enumerate().map(clip, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
