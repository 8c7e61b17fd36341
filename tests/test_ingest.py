"""Video folder / CSV -> TFRecords (data/ingest.py), the clip pipeline (data/records.py),
precomputed T5 embeddings (data/embed_captions.py), and training on all of it."""

import json
import os
import shutil
import subprocess
import sys

import imageio_ffmpeg
import jax
import numpy as np
import pytest
import tensorflow as tf

from conftest import light_config
from data import embed_captions
from data import ingest
from data import records
from stunet import video_io
from stunet import text as text_lib


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FPS, SIZE, MIN_FRAMES, MAX_FRAMES = 8, 16, 8, 12
# The CLI runs from any directory; no cwd= lets subprocess spawn instead of fork.
_ENV = {**os.environ,
        'PYTHONPATH': os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')]))}


def _frames(n, w, h):
  """Frame i is grey level 20 + 7 i (a time code) with a green centre column."""
  f = np.zeros((n, h, w, 3), np.uint8)
  f[...] = (20 + 7 * np.arange(n))[:, None, None, None]
  f[:, :, w // 2 - 2:w // 2 + 2] = (0, 200, 0)
  return f


def _write(path, frames, fps, codec, pix_fmt='yuv420p'):
  """Encodes test videos with the bundled ffmpeg, spawned rather than forked (as
  video_io does): a fork of this process, which has run JAX, can deadlock."""
  h, w = frames.shape[1:3]
  cmd = [os.path.abspath(imageio_ffmpeg.get_ffmpeg_exe()), '-y', '-loglevel', 'error',
         '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', f'{w}x{h}', '-r', str(fps), '-i', '-',
         '-an', '-c:v', codec, '-pix_fmt', pix_fmt, os.path.abspath(path)]
  run = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(),
                       capture_output=True, close_fds=False, check=False)
  assert run.returncode == 0, run.stderr.decode(errors='replace')[-500:]


# name: (source frames, fps, width, height, codec) -- containers and codecs differ.
GOOD = {'a.mp4': (30, 24, 48, 32, 'libx264'), 'b.webm': (20, 12, 40, 40, 'libvpx-vp9'),
        'c.avi': (24, 15, 32, 48, 'mpeg4'), 'd.mkv': (12, 8, 64, 48, 'mjpeg')}


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """Good videos (4 codecs/containers, a gif and an mp4 as sample.py writes them), a
  corrupt, a zero-length, a too-short one and one with an unreadable caption."""
  d = tmp_path_factory.mktemp('videos')
  expect = {}
  for name, (n, fps, w, h, codec) in GOOD.items():
    _write(str(d / name), _frames(n, w, h), fps, codec,
           'yuvj420p' if codec == 'mjpeg' else 'yuv420p')
    expect[name] = n / fps * FPS
  # What sample.py writes (video_io.write_video), in both formats it offers.
  sample = _frames(16, 24, 24) / 127.5 - 1.
  video_io.write_video(str(d / 'sub' / 'sample.mp4'), sample, fps=8)
  video_io.write_video(str(d / 'sub' / 'sample2.gif'), sample, fps=8)
  expect.update({'sample.mp4': 16, 'sample2.gif': 16})
  _write(str(d / 'short.mp4'), _frames(6, 32, 32), 8, 'libx264')
  _write(str(d / 'badcap.mp4'), _frames(16, 32, 32), 8, 'libx264')
  (d / 'corrupt.mp4').write_bytes((d / 'a.mp4').read_bytes()[:300] + os.urandom(2000))
  (d / 'empty.mp4').write_bytes(b'')
  for p in d.rglob('*'):
    if p.suffix in ('.mp4', '.webm', '.avi', '.mkv', '.gif'):
      p.with_suffix('.txt').write_text(f'a video called {p.name}\n')
  (d / 'badcap.txt').write_bytes(b'\xff\xfe caption \xc3\x28')
  return d, expect


@pytest.fixture(scope='module')
def ingested(folder, tmp_path_factory):
  d, _ = folder
  out = str(tmp_path_factory.mktemp('records'))
  info = ingest.ingest(ingest.sidecar_jobs(str(d)), out, fps=FPS, size=SIZE,
                       min_frames=MIN_FRAMES, max_frames=MAX_FRAMES, num_shards=2,
                       workers=2, progress=False)
  return out, info


def _read(out):
  exs = []
  for path in records.shard_files(out):
    for r in tf.data.TFRecordDataset(path):
      e = tf.train.Example.FromString(r.numpy()).features.feature
      exs.append(dict(source=os.path.basename(e['source'].bytes_list.value[0].decode()),
                      caption=e['caption'].bytes_list.value[0].decode(),
                      frames=np.stack([tf.io.decode_jpeg(b).numpy()
                                       for b in e['frames'].bytes_list.value]),
                      num_frames=e['num_frames'].int64_list.value[0]))
  return {e['source']: e for e in exs}


def test_good_videos_are_stored_at_the_target_shape_and_rate(folder, ingested):
  _, expect = folder
  out, info = ingested
  exs = _read(out)
  assert sorted(exs) == sorted(expect)
  assert info['num_examples'] == len(expect) and sum(info['shards'].values()) == len(expect)
  for name, e in exs.items():
    want = min(MAX_FRAMES, expect[name])
    assert abs(e['num_frames'] - want) <= 1, (name, e['num_frames'], want)
    assert e['frames'].shape == (e['num_frames'], SIZE, SIZE, 3)
    assert e['caption'] == f'a video called {name}'
    # Centre-cropped, not squashed: the green column stays in the middle.
    mid = e['frames'][0, SIZE // 2]
    assert mid[SIZE // 2, 1] > 120 and mid[0, 1] < 100, name
  # Resampled 24 -> 8 fps: every third source frame, so the time code steps by ~21.
  steps = np.diff(exs['a.mp4']['frames'][:, 0, 0, 0].astype(int))
  assert np.all(np.abs(steps - 21) <= 6), steps


def test_bad_files_are_counted_and_named(ingested):
  _, info = ingested
  names = {k: [os.path.basename(p) for p in v] for k, v in info['skipped'].items()}
  assert names == {'missing_file': [], 'empty_file': ['empty.mp4'],
                   'undecodable': ['corrupt.mp4'], 'too_short': ['short.mp4'],
                   'bad_caption': ['badcap.mp4']}
  assert info['num_skipped'] == 4
  assert not [f for f in os.listdir(ingested[0]) if f.endswith('.tmp')]


def test_csv_cli_writes_the_same_records(folder, ingested, tmp_path):
  d, _ = folder
  rows = ['path\tcaption'] + [
      f'{os.path.relpath(p, d)}\ta video called {os.path.basename(p)}'
      for p, _ in ingest.sidecar_jobs(str(d)) if 'badcap' not in p]
  rows.append('missing.mp4\ta video that is not there')
  (tmp_path / 'list.tsv').write_text('\n'.join(rows) + '\n')
  out = tmp_path / 'rec'
  cmd = [sys.executable, '-m', 'data.ingest', f'--csv={tmp_path / "list.tsv"}',
         f'--video_root={d}', f'--output={out}', f'--fps={FPS}', f'--size={SIZE}',
         f'--min_frames={MIN_FRAMES}', f'--max_frames={MAX_FRAMES}', '--num_shards=2',
         '--workers=1']
  run = subprocess.run(cmd, env=_ENV, capture_output=True, text=True, timeout=300,
                       close_fds=False)
  assert run.returncode == 0, run.stderr[-2000:]
  assert 'wrote 6 videos' in run.stdout and '1 missing_file' in run.stdout, run.stdout
  # Same videos, same order: the same shard bytes (workers and input mode do not matter).
  for a, b in zip(records.shard_files(str(out)), records.shard_files(ingested[0])):
    assert open(a, 'rb').read() == open(b, 'rb').read()
  # Again into the same output: refused before TensorFlow is imported (it reports
  # whether it was, on the way out).
  probe = ('import runpy, sys\nsys.argv = ["ingest"] + sys.argv[1:]\ntry:\n'
           '  runpy.run_module("data.ingest", run_name="__main__")\nfinally:\n'
           '  print("tensorflow imported:", "tensorflow" in sys.modules)')
  again = subprocess.run([sys.executable, '-c', probe] + cmd[3:], env=_ENV,
                         capture_output=True, text=True, timeout=300, close_fds=False)
  assert again.returncode != 0 and '--overwrite' in again.stderr, again.stderr[-2000:]
  assert 'tensorflow imported: False' in again.stdout, again.stdout


def test_clip_pipeline_is_deterministic_and_shards_files(ingested):
  out, _ = ingested
  kw = dict(seed=3, strides=(1, 2), shuffle_buffer=8)
  take = lambda ds: [b for _, b in zip(range(3), ds.as_numpy_iterator())]
  a = take(records.clip_dataset(out, 2, MIN_FRAMES, SIZE, **kw))
  b = take(records.clip_dataset(out, 2, MIN_FRAMES, SIZE, **kw))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['video'], y['video'])
  assert a[0]['video'].shape == (2, MIN_FRAMES, SIZE, SIZE, 3)
  assert a[0]['video'].min() >= -1 and a[0]['video'].max() <= 1
  seen = lambda k: {c for batch in records.clip_dataset(
      out, 1, MIN_FRAMES, SIZE, seed=0, shard_index=k, num_shards=2, shuffle=False,
      repeat=False).as_numpy_iterator() for c in batch['caption']}
  assert not seen(0) & seen(1) and len(seen(0) | seen(1)) == 6
  with pytest.raises(ValueError, match='--num_shards >= 3'):
    records.clip_dataset(out, 1, MIN_FRAMES, SIZE, seed=0, num_shards=3)
  with pytest.raises(ValueError, match='lower config.data.num_frames'):
    records.clip_dataset(out, 1, MIN_FRAMES + 1, SIZE, seed=0)


def _records_config(out, steps=2):
  c = light_config('scratch')  # the records and the embeddings are tested, not the layers
  c.data.records = out
  c.data.frame_strides = (1, 2)
  c.train.num_steps, c.train.log_every, c.train.ckpt_every = steps, 1, steps
  return c


@pytest.mark.slow  # an optional path: not in the CI run (setup.cfg)
def test_precomputed_t5_embeddings_train_and_sample(ingested, t5_checkpoint, tmp_path, capsys):
  """Training on the records (random clips, stored embeddings) and sampling after."""
  from data import pipeline  # pylint: disable=g-import-not-at-top
  from stunet.generator import Generator  # pylint: disable=g-import-not-at-top
  from stunet import train_loop  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'rec')
  shutil.copytree(ingested[0], out)
  info = embed_captions.embed_records(out, t5_checkpoint, max_text_len=8, batch_size=4)
  assert info['text']['num_captions'] == 6 and info['text']['width'] == 48
  c = _records_config(out)
  c.data.precomputed_text = True
  c.model.text.pretrained = t5_checkpoint
  text_lib.resolve(c)
  assert c.model.text.width == 48 and c.data.tokenizer.endswith('spiece.model')
  workdir = str(tmp_path / 'run')
  metrics = train_loop.train(c, workdir, pipeline.TrainInputs(c))
  assert np.isfinite(float(metrics['loss']))
  assert 'examples/s' in capsys.readouterr().out
  # The checkpoint holds no encoder; sampling reads the T5 from its path.
  gen, _ = Generator.from_workdir(workdir, num_steps=2)
  video = gen(['a video called a.mp4'], guidance=2.0)
  assert video.shape == (1, 8, SIZE, SIZE, 3) and np.isfinite(video).all()
  c.data.max_text_len = 16
  with pytest.raises(ValueError, match='re-run data.embed_captions'):
    records.check_text(records.read_info(out), c)
  assert json.load(open(os.path.join(out, 'info.json')))['num_examples'] == 6


def test_a_pretrained_t5_is_loaded_and_frozen(ingested, t5_checkpoint, tmp_path):
  from stunet import checkpoints  # pylint: disable=g-import-not-at-top
  from stunet import sharding  # pylint: disable=g-import-not-at-top
  from stunet import t5  # pylint: disable=g-import-not-at-top
  from stunet import train_step  # pylint: disable=g-import-not-at-top
  from stunet import train_loop  # pylint: disable=g-import-not-at-top
  c = _records_config(ingested[0])
  c.model.text.vocab_size = 0
  c.model.text.pretrained = t5_checkpoint
  text_lib.resolve(c)
  spec = train_step.TrainSpec(c, sharding.make_mesh(c.mesh))
  ckpt = checkpoints.Checkpointer(str(tmp_path / 'run'))
  state = train_loop.initial_state(spec, ckpt, jax.random.key(0))
  ckpt.close()
  _, want = t5.load_t5(t5_checkpoint)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params['text_encoder']),
               want)
  train, frozen = spec.split(state.params)
  assert frozen and all(k.startswith('text_encoder/') for k in frozen)
  assert not any(k.startswith('text_encoder/') for k in train_step.flatten(state.ema_params))
  c.model.text.width = 32
  with pytest.raises(ValueError, match='does not describe the checkpoint'):
    t5.with_t5_encoder(c.model, state.params)


def test_ingest_trains_a_tokenizer_of_the_captions_and_training_warns_without_one(ingested):
  """Real captions need a real tokenizer: ingest writes one, train.py picks it up, and a
  tokenizer that maps the captions to <unk> (or cuts them) is reported at start-up."""
  from data import pipeline  # pylint: disable=g-import-not-at-top
  out, info = ingested
  assert info['tokenizer']['file'] == records.TOKENIZER
  assert info['tokenizer']['model_type'] == 'word'  # 9 distinct words fit the vocabulary
  c = _records_config(out)
  assert records.resolve_tokenizer(c) == os.path.join(out, records.TOKENIZER)
  tok = text_lib.Tokenizer.from_config(c.data)
  assert tok.coverage(records.captions(out)) == dict(unk_fraction=0., cut_fraction=0., n=6)
  assert pipeline.TrainInputs(c).text_warnings() == []
  c.data.max_text_len = 4  # 'a video called x.mp4' is more than 3 tokens
  (cut,) = pipeline.TrainInputs(c).text_warnings()
  assert cut.startswith('100% of 6 training captions are longer than') and 'raise' in cut
  shipped = _records_config(out)
  shipped.data.tokenizer = text_lib.DEFAULT_SPM  # named: the ingested one is not used
  assert records.resolve_tokenizer(shipped) is None
  warnings = pipeline.TrainInputs(shipped).text_warnings()
  assert any('% of the tokens of 6 training captions are <unk> for' in w for w in warnings)
