"""Trains the shipped sentencepiece model on every caption of the shapes dataset.

  python -m data.make_tokenizer   # writes data/captions_spm.model (deterministic)
"""

import os

from data import shapes
from stunet import text


def main():
  prefix = os.path.splitext(text.DEFAULT_SPM)[0]
  # A few repeats so the unigram model sees word counts, not one of each caption.
  text.train_tokenizer(shapes.all_captions() * 4, prefix, vocab_size=32)
  os.remove(prefix + '.vocab')
  print('wrote', prefix + '.model')


if __name__ == '__main__':
  main()
