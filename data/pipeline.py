"""tf.data input pipeline: tfds builder (or data/records.py shards) -> host-local
numpy batches.

Each process (host) reads its own, disjoint slice of a split; `sharding.py` then turns
the host-local batches into global arrays. Works with any tfds builder whose features
include `video` (uint8 [t, h, w, 3]) and `caption` (text), e.g. data.shapes_tfds or a
builder for real footage with the same features.

    ds = make_dataset(builder, 'train', batch_size=8, seed=0,
                      process_index=jax.process_index(), process_count=jax.process_count())
    for batch in numpy_batches(ds, tokenizer):
      batch['video']   # float32 [8, t, h, w, 3] in [-1, 1]
      batch['tokens']  # int32 [8, L];  batch['mask']: bool [8, L]
      batch['caption'] # list of 8 str

TensorFlow is used only on the CPU here: the accelerators belong to JAX.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

# Keep TF off the GPUs so it neither grabs their memory nor competes with JAX.
try:
  tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # devices already initialised / no GPU support
  pass

# Ground-truth label fields passed through when the builder has them (shapes dataset):
# evaluation can compare them with what a detector reads from generated videos.
LABEL_KEYS = ("color", "shape", "motion")

Tokenize = Callable[[Sequence[str]], "tuple[np.ndarray, np.ndarray]"]


def make_dataset(
    builder: tfds.core.DatasetBuilder,
    split: str,
    batch_size: int,
    *,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
    repeat: bool = True,
    shuffle_buffer: int = 1024,
) -> tf.data.Dataset:
  """Batched, host-local tf.data pipeline over one process's shard of `split`.

  Elements: dict(video=float32 [batch_size, t, h, w, 3] in [-1, 1], caption=tf.string
  [batch_size], and color/shape/motion int32 [batch_size] when the builder has them).
  Deterministic for a given seed: every fresh iterator yields the same batches.
  Partial batches are dropped (every host must step with the same batch shape).

  Args:
    builder: a prepared tfds builder with `video` and `caption` features.
    split: e.g. 'train', 'test', 'train[:90%]'.
    batch_size: per-process batch size.
    seed: shuffling seed (file order and example buffer).
    process_index, process_count: this process's slice, as jax.process_index()/count().
    shuffle: shuffle files and examples (turn off for evaluation).
    repeat: repeat forever (turn off for one pass, e.g. evaluation).
    shuffle_buffer: examples held in the shuffle buffer (decoded uint8 videos).
  """
  if not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index must be in [0, process_count={process_count}), got {process_index}."
    )
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  features = builder.info.features
  missing = [k for k in ("video", "caption") if k not in features]
  if missing:
    raise ValueError(
        f"Dataset {builder.info.full_name} lacks feature(s) {missing}; the pipeline "
        f"needs 'video' (uint8 [t, h, w, 3]) and 'caption' (text). It has {list(features)}."
    )
  labels = [k for k in LABEL_KEYS if k in features]

  # Equal, disjoint slices per process (sizes differ by at most one example).
  shard = tfds.split_for_jax_process(
      split, process_index=process_index, process_count=process_count
  )
  read_config = tfds.ReadConfig(
      shuffle_seed=seed,
      # No in-memory cache of a small dataset (tfds's default): a run that stops within
      # the first epoch made TensorFlow warn at exit that the partial cache was dropped,
      # and reading the local records again is far faster than any train step.
      try_autocache=False,
      # Same file order on every pass and every iterator: two iterators over one
      # dataset must agree (e.g. a restarted loop). Epochs still differ because the
      # example buffer below runs across epoch boundaries.
      shuffle_reshuffle_each_iteration=False,
  )
  ds = builder.as_dataset(split=shard, shuffle_files=shuffle, read_config=read_config)
  # Drop unused features early (small buffers); keep uint8 until after shuffling.
  ds = ds.map(
      lambda ex: {k: ex[k] for k in ("video", "caption", *labels)},
      num_parallel_calls=tf.data.AUTOTUNE,
  )
  # Repeat *before* shuffling, with a fixed (not per-iteration) shuffle seed: every
  # iterator then replays the same infinite stream, yet successive epochs come out
  # in different orders because the buffer carries examples across epochs.
  if repeat:
    ds = ds.repeat()
  if shuffle:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)

  def convert(ex):
    out = {
        "video": tf.cast(ex["video"], tf.float32) / 127.5 - 1.0,
        "caption": ex["caption"],
    }
    for k in labels:
      out[k] = tf.cast(ex[k], tf.int32)
    return out

  ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def random_crops(ds: tf.data.Dataset, crop: int, step: int, seed: int) -> tf.data.Dataset:
  """Crops every clip of each batch of `ds` to `crop` x `crop` pixels, the same window
  in all its frames, at an offset drawn per clip from the multiples of `step` (the
  SSR's upsampling factor: a crop then covers whole low-res pixels, so the low-res
  conditioning made from it lines up with the low-res frame the SSR sees at sampling).

  The offsets are a function of (seed, batch index, clip) alone: the same on every
  host and in a resumed run (crop before skipping batches).
  """
  def crop_batch(index, batch):
    video = batch["video"]
    b, size = tf.shape(video)[0], video.shape[2]
    if video.shape[3] != size or (size - crop) % step:
      raise ValueError(f"random_crops: frames of {video.shape[2:4]} cannot be cropped to "
                       f"{crop} at offsets that are multiples of {step}.")
    positions = (size - crop) // step + 1
    key = tf.stack([tf.constant(seed, tf.int64), index])
    offsets = step * tf.random.stateless_uniform([b, 2], key, 0, positions, tf.int32)

    def one(args):
      clip, offset = args
      return clip[:, offset[0]:offset[0] + crop, offset[1]:offset[1] + crop]

    spec = tf.TensorSpec([video.shape[1], crop, crop, video.shape[4]], video.dtype)
    return {**batch, "video": tf.map_fn(one, (video, offsets), fn_output_signature=spec)}

  return ds.enumerate().map(crop_batch, num_parallel_calls=tf.data.AUTOTUNE)


def random_windows(ds: tf.data.Dataset, length: int, seed: int) -> tf.data.Dataset:
  """Cuts every clip of each batch of `ds` to `length` frames, from a first frame drawn
  per clip (uniform over those that fit): training on random windows of long clips.

  The offsets are a function of (seed, batch index, clip) alone: the same on every
  host and in a resumed run (cut before skipping batches).
  """
  def cut_batch(index, batch):
    video = batch["video"]
    b, frames = tf.shape(video)[0], video.shape[1]
    if frames < length:
      raise ValueError(f"random_windows: clips of {frames} frames are shorter than the "
                       f"window of {length}.")
    # A key of its own (negative index): apart from random_crops' on the same seed.
    key = tf.stack([tf.constant(seed, tf.int64), -1 - index])
    starts = tf.random.stateless_uniform([b], key, 0, frames - length + 1, tf.int32)
    spec = tf.TensorSpec([length] + video.shape[2:].as_list(), video.dtype)
    return {**batch, "video": tf.map_fn(lambda a: a[0][a[1]:a[1] + length], (video, starts),
                                        fn_output_signature=spec)}

  return ds.enumerate().map(cut_batch, num_parallel_calls=tf.data.AUTOTUNE)


def numpy_batches(ds: tf.data.Dataset, tokenize: Tokenize) -> Iterator[dict]:
  """Iterates `ds` as numpy batches with tokenized captions.

  Args:
    ds: a dataset from `make_dataset`.
    tokenize: list of b str -> (tokens int [b, L], mask bool [b, L]).
  Yields:
    dict(video=float32 [b, t, h, w, 3], tokens=int32 [b, L], mask=bool [b, L],
    caption=list of b str), plus color/shape/motion int32 [b] when present. Batches
    that already carry text embeddings (``text``, ``mask``: precomputed records) pass
    them through instead of tokenizing.
  """
  for batch in ds.as_numpy_iterator():
    captions = [c.decode("utf-8") for c in batch["caption"]]
    if "text" in batch:
      yield dict(video=batch["video"], text=batch["text"], mask=batch["mask"],
                 caption=captions)
      continue
    tokens, mask = tokenize(captions)
    tokens = np.asarray(tokens, dtype=np.int32)
    mask = np.asarray(mask, dtype=bool)
    if tokens.ndim != 2 or tokens.shape[0] != len(captions) or mask.shape != tokens.shape:
      raise ValueError(
          f"tokenize must return tokens and mask of shape [{len(captions)}, L]; got "
          f"{tokens.shape} and {mask.shape}."
      )
    out = dict(video=batch["video"], tokens=tokens, mask=mask, caption=captions)
    for k in LABEL_KEYS:
      if k in batch:
        out[k] = batch[k]
    yield out


def dataset_builder(data_config) -> tfds.core.DatasetBuilder:
  """The prepared builder named by `config.data` (never downloads).

  'shapes' is generated on first use (deterministic from data_config.dataset_seed);
  any other name must already be prepared under data_config.data_dir.
  """
  if data_config.name == "shapes":
    from data import shapes_tfds  # pylint: disable=g-import-not-at-top

    stationary = data_config.stationary_frames
    return shapes_tfds.build(
        data_config.data_dir, stationary or data_config.num_frames, data_config.size,
        data_config.num_train, data_config.num_test, seed=data_config.dataset_seed,
        style=data_config.style, stationary=bool(stationary),
    )
  builder = tfds.builder(data_config.name, data_dir=data_config.data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"dataset {data_config.name!r} is not prepared under {data_config.data_dir!r}; "
        f"build it there first (nothing is downloaded at run time)."
    )
  return builder


def train_batches(config, tokenize: Tokenize, start_step: int = 0) -> Iterator[dict]:
  """This host's slice of every global training batch for `config`, from `start_step`.

  The data are cut into `config.data.num_shards` logical shards (default: one per
  process). Shard k is its own shuffled stream that fills rows
  [k * B / S, (k + 1) * B / S) of every global batch of B clips; a process reads only
  the shards whose rows it owns. So the global batch at step s is a function of
  (config.seed, num_shards, s) alone: the same on 1 or 4 hosts, and a resumed run
  skips the batches its checkpoint already consumed. For the t2i stage a batch holds
  batch_size // frames_per_clip clips.
  """
  import jax  # pylint: disable=g-import-not-at-top

  from stunet import sharding  # pylint: disable=g-import-not-at-top

  clips = sharding.clips_per_step(config.train)
  processes, index = jax.process_count(), jax.process_index()
  shards = config.data.num_shards or processes
  if shards % processes or clips % shards:
    raise ValueError(
        f"config.data.num_shards={shards} must be a multiple of the {processes} "
        f"process(es) and divide the {clips} clips of a batch; change "
        f"config.data.num_shards or config.train.batch_size."
    )
  mine = range(index * shards // processes, (index + 1) * shards // processes)
  d = config.data
  if d.records:  # data/ingest.py output: this host reads its shards' files
    from data import records  # pylint: disable=g-import-not-at-top

    if d.precomputed_text:
      records.check_text(records.read_info(d.records), config)
    parts = [
        records.clip_dataset(
            d.records, clips // shards, d.num_frames, d.size, seed=config.seed + k,
            strides=d.frame_strides, shard_index=k, num_shards=shards,
            text=bool(d.precomputed_text))
        for k in mine
    ]
  else:
    builder = dataset_builder(d)
    parts = [
        make_dataset(builder, "train", clips // shards, seed=config.seed + k,
                     process_index=k, process_count=shards)
        for k in mine
    ]
  if d.stationary_frames:  # random windows of the long clips, per shard (as crops)
    parts = [random_windows(p, d.num_frames, seed=config.seed + k)
             for p, k in zip(parts, mine)]
  if d.crop_size:  # SSR on crops: per shard, so the crops do not depend on the hosts
    step = d.size // config.model.lowres_size
    parts = [random_crops(p, d.crop_size, step, seed=config.seed + k)
             for p, k in zip(parts, mine)]
  ds = parts[0] if len(parts) == 1 else tf.data.Dataset.zip(tuple(parts)).map(
      lambda *b: {key: tf.concat([x[key] for x in b], 0) for key in b[0]})
  if start_step:
    ds = ds.skip(start_step)
  return numpy_batches(ds, tokenize)


def training_captions(data_config, limit: int = 2000) -> list:
  """Up to `limit` captions of the training data (records or a tfds train split), in
  file order, without decoding the videos."""
  if data_config.records:
    from data import records  # pylint: disable=g-import-not-at-top

    return records.captions(data_config.records, limit)
  ds = dataset_builder(data_config).as_dataset(
      split="train", shuffle_files=False,
      decoders={"video": tfds.decode.SkipDecoding()})
  ds = ds.take(limit).map(lambda ex: ex["caption"])
  return [c.decode("utf-8") for c in ds.as_numpy_iterator()]


class TrainInputs:
  """What the training loop (stunet/train_loop.py) reads, for ``config``: this host's
  batches from a step on, and the text of the empty caption (classifier-free
  guidance's null). The loop gets it from train.py, so the library never imports data/.
  """

  def __init__(self, config):
    from stunet.text import Tokenizer  # pylint: disable=g-import-not-at-top

    self.config = config
    self.tokenizer = Tokenizer.from_config(config.data)

  def batches(self, start_step: int = 0) -> Iterator[dict]:
    return train_batches(self.config, self.tokenizer.encode, start_step=start_step)

  def text_warnings(self) -> list:
    """One line per way the tokenizer fails the training captions (up to 2000 of them):
    many <unk> tokens, captions cut at config.data.max_text_len. Skipped for the
    embedded shapes data with the shipped tokenizer (its own captions) and for
    precomputed embeddings (no tokenizer in training)."""
    d = self.config.data
    if d.precomputed_text or (
        not d.records and d.name == "shapes" and not d.tokenizer):
      return []
    cov = self.tokenizer.coverage(training_captions(d))
    name = d.tokenizer or "the shipped shapes tokenizer"
    out = []
    if cov["unk_fraction"] > 0.02:
      out.append(
          f"{100 * cov['unk_fraction']:.0f}% of the tokens of {cov['n']} training captions "
          f"are <unk> for {name}, so the model gets little of their text. Use a tokenizer "
          f"of these captions (data/ingest.py trains one unless --tokenizer_vocab=0), a "
          f"T5 (config.model.text.pretrained) or config.data.tokenizer.")
    if cov["cut_fraction"] > 0.05:
      out.append(
          f"{100 * cov['cut_fraction']:.0f}% of {cov['n']} training captions are longer "
          f"than config.data.max_text_len - 1 = {self.tokenizer.max_length - 1} tokens "
          f"and are cut; raise config.data.max_text_len.")
    return out

  def null_text(self) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [L], mask [L]), or the stored embedding [L, d] and its mask."""
    d = self.config.data
    if d.precomputed_text:
      from data import records  # pylint: disable=g-import-not-at-top

      return records.null_text(d.records, self.config)
    tokens, mask = self.tokenizer.null(1)
    return tokens[0], mask[0]
