r"""Runs a frozen T5 encoder once over a records directory's captions and stores the
embeddings in the records, so training reads them instead of encoding every step:

  python -m data.embed_captions --records=/data/records --t5=/models/t5-v1_1-xxl \
      --max_text_len=64
  python train.py --config=configs/tiny.py --config.data.records=/data/records \
      --config.data.precomputed_text=True --config.model.text.pretrained=/models/t5-v1_1-xxl \
      --config.data.max_text_len=64

Each shard is rewritten to a temporary file and renamed over the old one when
complete (an interrupted run leaves every shard whole, embedded or not); the empty
caption's embedding (the null prompt of classifier-free guidance) goes to
text_null.npz, and info.json records the encoder. Embeddings are stored as float16.
"""

import os
import time

from absl import app
from absl import flags
import numpy as np

from stunet import cli


def embed_records(directory: str, t5_path: str, max_text_len: int, tokenizer_path: str = '',
                  batch_size: int = 32) -> dict:
  """Adds text_embedding/text_len to every record; returns the updated info."""
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from data import records  # pylint: disable=g-import-not-at-top
  from stunet import t5  # pylint: disable=g-import-not-at-top
  from stunet.text import Tokenizer, TextEncoder  # pylint: disable=g-import-not-at-top
  info = records.read_info(directory)
  arch, params = t5.load_t5(t5_path)
  spm = tokenizer_path or os.path.join(t5_path, 'spiece.model')
  tokenizer = Tokenizer(spm, max_text_len)
  if tokenizer.vocab_size > arch['vocab_size']:
    raise ValueError(f'{spm} has {tokenizer.vocab_size} pieces, more than the T5 '
                     f'vocabulary ({arch["vocab_size"]}): pass its own --tokenizer.')
  encoder = TextEncoder(**arch)
  encode = jax.jit(lambda p, t, m: encoder.apply({'params': p}, t, m))

  def embed(captions):
    n = len(captions)
    padded = list(captions) + [''] * (-n % batch_size)  # one compiled shape
    out = []
    for i in range(0, len(padded), batch_size):
      tokens, mask = tokenizer.encode(padded[i:i + batch_size])
      out.append((np.asarray(encode(params, tokens, mask)), mask.sum(-1)))
    return np.concatenate([e for e, _ in out])[:n], np.concatenate([l for _, l in out])[:n]

  t0, total = time.time(), 0
  for path in records.shard_files(directory):
    examples = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    captions = [e.features.feature['caption'].bytes_list.value[0].decode('utf-8')
                for e in examples]
    emb, lengths = embed(captions)
    with tf.io.TFRecordWriter(path + '.tmp') as w:
      for e, x, n in zip(examples, emb, lengths):
        records.add_text(e, x, n)
        w.write(e.SerializeToString(deterministic=True))
    os.replace(path + '.tmp', path)
    total += len(examples)
  tokens, mask = tokenizer.null(1)
  null = np.asarray(encode(params, tokens, mask))[0]
  np.savez(os.path.join(directory, records.NULL_TEXT), embedding=null.astype(np.float16),
           mask=mask[0])
  info['text'] = dict(encoder=os.path.abspath(t5_path), tokenizer=os.path.abspath(spm),
                      max_text_len=max_text_len, width=arch['width'], num_captions=total,
                      seconds=round(time.time() - t0, 1))
  records.write_info(directory, info)
  return info


FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  try:
    info = embed_records(FLAGS.records, FLAGS.t5, FLAGS.max_text_len, FLAGS.tokenizer,
                         FLAGS.batch_size)
  except (ValueError, FileNotFoundError) as e:
    raise app.UsageError(str(e)) from e
  t = info['text']
  print(f'embedded {t["num_captions"]} captions ({t["max_text_len"]} tokens x {t["width"]}) '
        f'with {t["encoder"]} in {t["seconds"]}s')


if __name__ == '__main__':
  flags.DEFINE_string('records', None, 'records directory (data/ingest.py)', required=True)
  flags.DEFINE_string('t5', None, 'local HF T5 v1.1 checkpoint directory', required=True)
  flags.DEFINE_string('tokenizer', '', "sentencepiece model ('' = spiece.model in --t5)")
  flags.DEFINE_integer('max_text_len', 64, 'tokens per caption, EOS included')
  flags.DEFINE_integer('batch_size', 32, 'captions per encoder call')
  cli.run(main)
