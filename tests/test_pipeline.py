"""The tfds builder (data/shapes_tfds.py) and the tf.data pipeline (data/pipeline.py)."""

import hashlib
import os
import socket

import numpy as np
import pytest
from conftest import small_config

from data import pipeline
from data import shapes
from data import shapes_tfds


FRAMES, SIZE, NUM_TRAIN, NUM_TEST = 8, 16, 32, 16


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def builder(data_dir):
  # Any attempt to reach the network during generation fails the test.
  def no_network(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args}")

  mp = pytest.MonkeyPatch()
  mp.setattr(socket.socket, "connect", no_network)
  mp.setattr(socket, "create_connection", no_network)
  try:
    yield shapes_tfds.build(data_dir, FRAMES, SIZE, NUM_TRAIN, NUM_TEST, seed=0)
  finally:
    mp.undo()


def _digest(video):
  return hashlib.sha1(np.ascontiguousarray(video).tobytes()).hexdigest()


def _fake_tokenize(calls):
  def tokenize(captions):
    calls.append(list(captions))
    lengths = np.array([len(c.split()) for c in captions])
    mask = np.arange(8)[None, :] < lengths[:, None]
    tokens = np.where(mask, 7, 0)
    return tokens, mask

  return tokenize


def _read_all(builder, split, process_index=0, process_count=1):
  ds = pipeline.make_dataset(
      builder, split, 1, seed=0, process_index=process_index,
      process_count=process_count, shuffle=False, repeat=False,
  )
  return [_digest(b["video"][0]) for b in ds.as_numpy_iterator()]


def test_builder_features_and_splits(builder):
  assert builder.builder_config.name == f"f{FRAMES}_r{SIZE}_n{NUM_TRAIN}_t{NUM_TEST}_s0"
  assert builder.info.splits["train"].num_examples == NUM_TRAIN
  assert builder.info.splits["test"].num_examples == NUM_TEST
  feats = builder.info.features
  assert feats["video"].shape == (FRAMES, SIZE, SIZE, 3)
  assert feats["shape"].names == list(shapes.SHAPES)
  ex = next(builder.as_dataset(split="train").as_numpy_iterator())
  assert ex["video"].shape == (FRAMES, SIZE, SIZE, 3) and ex["video"].dtype == np.uint8
  labels = shapes.parse_caption(ex["caption"].decode())
  assert labels["color"] == feats["color"].int2str(ex["color"])
  assert labels["motion"] == feats["motion"].int2str(ex["motion"])


def test_stored_examples_equal_the_generator(builder):
  ex = {}
  for e in builder.as_dataset(split="train").as_numpy_iterator():
    ex[e["caption"].decode(), _digest(e["video"])] = True
  for i in range(NUM_TRAIN):
    g = shapes.example(0, i, FRAMES, SIZE)
    assert (g["caption"], _digest(g["video"])) in ex


def test_second_build_reuses_the_data(builder, data_dir, monkeypatch):
  files = sorted(os.listdir(builder.data_dir))
  mtimes = [os.path.getmtime(os.path.join(builder.data_dir, f)) for f in files]

  def fail(*args, **kwargs):
    raise AssertionError("dataset regenerated")

  monkeypatch.setattr(shapes, "example", fail)
  again = shapes_tfds.build(data_dir, FRAMES, SIZE, NUM_TRAIN, NUM_TEST, seed=0)
  assert again.data_dir == builder.data_dir
  assert sorted(os.listdir(builder.data_dir)) == files
  assert [os.path.getmtime(os.path.join(builder.data_dir, f)) for f in files] == mtimes


def test_other_settings_get_their_own_directory(builder, data_dir):
  other = shapes_tfds.build(data_dir, FRAMES, SIZE, 4, 4, seed=1)
  assert other.builder_config.name == f"f{FRAMES}_r{SIZE}_n4_t4_s1"
  assert other.data_dir != builder.data_dir
  assert other.info.splits["train"].num_examples == 4
  assert builder.info.splits["train"].num_examples == NUM_TRAIN


def test_the_outline_style_is_its_own_config_with_the_same_labels(builder, data_dir):
  styled = shapes_tfds.build(data_dir, FRAMES, SIZE, 4, 4, seed=0, style="outline")
  assert styled.builder_config.name == f"f{FRAMES}_r{SIZE}_n4_t4_s0_outline"
  ex = next(iter(styled.as_dataset(split="train").take(1)))
  solid = shapes.example(0, 0, FRAMES, SIZE)
  assert ex["caption"].numpy().decode() == solid["caption"]
  lit = lambda v: int((np.asarray(v).max(-1) > 128).sum())
  assert 0 < lit(ex["video"].numpy()) < lit(solid["video"])  # the outline of the same shape


def test_train_and_test_are_disjoint(builder):
  train, test = set(_read_all(builder, "train")), set(_read_all(builder, "test"))
  assert len(train) == NUM_TRAIN and len(test) == NUM_TEST
  assert not train & test


def test_batches_shapes_dtypes_and_range(builder):
  calls = []
  ds = pipeline.make_dataset(builder, "train", 4, seed=0)
  batches = pipeline.numpy_batches(ds, _fake_tokenize(calls))
  for _ in range(10):  # more than one epoch: repeats
    b = next(batches)
    assert b["video"].shape == (4, FRAMES, SIZE, SIZE, 3)
    assert b["video"].dtype == np.float32
    assert b["video"].min() >= -1.0 and b["video"].max() <= 1.0
    assert b["video"].min() == -1.0  # black background
    assert b["tokens"].shape == b["mask"].shape == (4, 8)
    assert b["tokens"].dtype == np.int32 and b["mask"].dtype == bool
    assert len(b["caption"]) == 4 and all(isinstance(c, str) for c in b["caption"])
    for k in ("color", "shape", "motion"):
      assert b[k].shape == (4,) and b[k].dtype == np.int32
  assert len(calls) == 10 and calls[-1] == b["caption"]
  names = builder.info.features["motion"].names
  assert [shapes.parse_caption(c)["motion"] for c in b["caption"]] == [
      names[i] for i in b["motion"]
  ]


def test_video_values_match_uint8_source(builder):
  ds = pipeline.make_dataset(builder, "test", 1, seed=0, shuffle=False, repeat=False)
  src = {_digest(e["video"]): e["video"] for e in builder.as_dataset(split="test").as_numpy_iterator()}
  for b in ds.as_numpy_iterator():
    u8 = np.round((b["video"][0] + 1.0) * 127.5).astype(np.uint8)
    assert _digest(u8) in src


def _first(ds, n=3):
  it = pipeline.numpy_batches(ds, _fake_tokenize([]))
  return [next(it) for _ in range(n)]


def test_deterministic_given_seed(builder):
  ds = pipeline.make_dataset(builder, "train", 4, seed=5)
  a = _first(ds, 12)  # 48 examples: crosses an epoch boundary
  b = _first(ds, 12)  # a second iterator over the same dataset
  c = _first(pipeline.make_dataset(builder, "train", 4, seed=5), 12)  # a fresh dataset
  d = _first(pipeline.make_dataset(builder, "train", 4, seed=6), 12)
  for x, y, z in zip(a, b, c):
    assert np.array_equal(x["video"], y["video"]) and np.array_equal(x["video"], z["video"])
    assert x["caption"] == y["caption"] == z["caption"]
  assert any(not np.array_equal(x["video"], w["video"]) for x, w in zip(a, d))
  # Shuffled: not the stored order.
  stored = _read_all(builder, "train")[:4]
  assert [_digest(v) for v in a[0]["video"]] != stored
  # Epochs are reshuffled: the second epoch (examples 32..63) is not a replay of the first.
  seq = [_digest(v) for x in a for v in x["video"]]
  assert seq[:16] != seq[NUM_TRAIN:NUM_TRAIN + 16]


@pytest.mark.parametrize("count", [2, 3])
def test_process_shards_are_disjoint_and_cover_the_split(builder, count):
  shards = [_read_all(builder, "train", i, count) for i in range(count)]
  sizes = [len(s) for s in shards]
  assert sum(sizes) == NUM_TRAIN and max(sizes) - min(sizes) <= 1
  union = set().union(*map(set, shards))
  assert len(union) == NUM_TRAIN
  assert union == set(_read_all(builder, "train"))


def test_drop_remainder_and_bad_arguments(builder):
  ds = pipeline.make_dataset(builder, "test", 5, seed=0, shuffle=False, repeat=False)
  assert sum(1 for _ in ds.as_numpy_iterator()) == NUM_TEST // 5
  with pytest.raises(ValueError, match="process_index"):
    pipeline.make_dataset(builder, "test", 5, seed=0, process_index=2, process_count=2)

  def bad_tokenize(captions):
    return np.zeros((len(captions) + 1, 3)), np.zeros((len(captions) + 1, 3), bool)

  with pytest.raises(ValueError, match="tokenize"):
    next(pipeline.numpy_batches(ds, bad_tokenize))


def test_text_warnings_read_the_captions_of_a_tfds_dataset(builder, data_dir):
  """Not only ingested records: the captions of a tfds dataset are checked against the
  tokenizer too (here the shapes data with its tokenizer named explicitly)."""
  c = small_config()
  c.data.data_dir = data_dir
  c.data.tokenizer = os.path.join(os.path.dirname(pipeline.__file__), "captions_spm.model")
  captions = pipeline.training_captions(c.data)
  assert len(captions) == NUM_TRAIN and all(shapes.parse_caption(x) for x in captions)
  assert pipeline.TrainInputs(c).text_warnings() == []  # its own captions: covered
  c.data.max_text_len = 4  # 3 tokens + EOS: every caption is longer
  (cut,) = pipeline.TrainInputs(c).text_warnings()
  assert cut.startswith(f"100% of {NUM_TRAIN} training captions are longer than")
  c.data.tokenizer = ""  # the shipped tokenizer on the shapes data: nothing to check
  assert pipeline.TrainInputs(c).text_warnings() == []


def test_ssr_crops_keep_high_res_and_low_res_aligned(builder):
  """random_crops (data.crop_size, SSR training): the same window in every frame of a
  clip, at offsets on the low-res pixel grid, deterministic per seed; the low-res clip
  the train step makes from a crop (ssr.resize) is then the same region of the low-res
  clip of the whole frames, which is what the SSR sees at sampling (inside a one-pixel
  border, where the antialiasing filter of the crop's downsampling reaches past it)."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from stunet import ssr  # pylint: disable=g-import-not-at-top

  crop, step = 8, 2  # a 16-px frame, upsampled 2x from 8 px
  rng = np.random.default_rng(0)
  full = rng.uniform(-1, 1, size=(6, 4, FRAMES, SIZE, SIZE, 3)).astype(np.float32)
  ds = tf.data.Dataset.from_tensor_slices({"video": full, "caption": np.full((6, 4), "a")})
  cropped = [b["video"] for b in pipeline.random_crops(ds, crop, step, 3).as_numpy_iterator()]
  again = [b["video"] for b in pipeline.random_crops(ds, crop, step, 3).as_numpy_iterator()]
  other = [b["video"] for b in pipeline.random_crops(ds, crop, step, 4).as_numpy_iterator()]
  assert all(np.array_equal(a, b) for a, b in zip(cropped, again))
  assert not all(np.array_equal(a, b) for a, b in zip(cropped, other))
  offsets = set()
  low_full = np.asarray(ssr.resize(jnp.asarray(full.reshape((-1,) + full.shape[2:])),
                                   SIZE // step)).reshape(full.shape[:3] + (8, 8, 3))
  for i, batch in enumerate(cropped):
    assert batch.shape == (4, FRAMES, crop, crop, 3)
    low_crop = np.asarray(ssr.resize(jnp.asarray(batch), crop // step))
    for j, clip in enumerate(batch):
      # Find the window: the same offset in every frame, on the grid of `step`.
      hits = [(y, x) for y in range(SIZE - crop + 1) for x in range(SIZE - crop + 1)
              if np.array_equal(full[i, j, :, y:y + crop, x:x + crop], clip)]
      assert len(hits) == 1, hits
      (y, x), = hits
      assert y % step == 0 and x % step == 0
      offsets.add((y, x))
      region = low_full[i, j, :, y // step:(y + crop) // step, x // step:(x + crop) // step]
      np.testing.assert_allclose(low_crop[j, :, 1:-1, 1:-1], region[:, 1:-1, 1:-1], atol=1e-5)
  assert len(offsets) > 5  # clips get their own crops
  # Off the grid the low-res crop is not a region of the low-res frame.
  off = full[0, :, :, 1:1 + crop, 1:1 + crop]
  region = low_full[0, :, :, 0:crop // step, 0:crop // step]
  assert not np.allclose(np.asarray(ssr.resize(jnp.asarray(off), crop // step))[:, :, 1:-1, 1:-1],
                         region[:, :, 1:-1, 1:-1], atol=1e-2)
  with pytest.raises(ValueError, match="multiples of 3"):
    next(iter(pipeline.random_crops(ds, crop, 3, 0)))


def test_stationary_clips_are_their_own_config_and_train_on_random_windows(data_dir):
  """data.stationary_frames: long clips of the stationary variant, and training reads
  random windows of num_frames from them, each a run of its clip's frames with the
  clip's caption and labels, the same for a seed on every host and rerun."""
  long = shapes_tfds.build(data_dir, 24, SIZE, 8, 4, seed=0, stationary=True)
  assert long.builder_config.name == f"f24_r{SIZE}_n8_t4_s0_stationary"
  ds = pipeline.make_dataset(long, "train", 4, seed=0, shuffle=False, repeat=True)
  stored = [(ex["caption"].numpy(), int(ex["motion"]),
             ex["video"].numpy().astype(np.float32) / 127.5 - 1.)
            for ex in long.as_dataset(split="train")]
  cut = lambda seed: [b for b in pipeline.random_windows(ds, FRAMES, seed).take(6)
                      .as_numpy_iterator()]
  batches, again, other = cut(3), cut(3), cut(4)
  assert all(np.array_equal(a["video"], b["video"]) for a, b in zip(batches, again))
  assert not all(np.array_equal(a["video"], b["video"]) for a, b in zip(batches, other))
  starts = set()
  for batch in batches:
    assert batch["video"].shape == (4, FRAMES, SIZE, SIZE, 3)
    for video, caption, motion in zip(batch["video"], batch["caption"], batch["motion"]):
      hits = [s for c, m, clip in stored if (c, m) == (caption, motion)
              for s in range(24 - FRAMES + 1)
              if np.allclose(clip[s:s + FRAMES], video, atol=1e-6)]
      assert hits, caption  # a window of its own clip: labels and caption carried along
      starts.update(hits)
  assert len(starts) > 5  # offsets drawn over the whole clip
  with pytest.raises(ValueError, match="shorter than the window"):
    next(iter(pipeline.random_windows(ds, 32, 0)))


def test_train_batches_of_a_stationary_config(data_dir):
  c = small_config("scratch")
  c.data.data_dir, c.data.num_train, c.data.num_test = data_dir, 8, 4
  c.data.stationary_frames = 2 * c.data.num_frames
  from stunet import config as config_lib  # pylint: disable=g-import-not-at-top
  config_lib.validate(c)
  batch = next(pipeline.train_batches(c, _fake_tokenize([])))
  assert batch["video"].shape == (c.train.batch_size, c.data.num_frames, 16, 16, 3)
