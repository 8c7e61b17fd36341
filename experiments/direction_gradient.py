"""Why a trained STUNet does not learn the direction word: what the loss rewards.

Two measurements on real clips of the shapes data (README "Motion", point 7):

1. What the motion and its direction are worth near t = 1, where z carries no
   information and the best prediction is the mean clip of what the caption says: the
   v-loss of that prediction (compare motion_probe.py's columns at the same level).
2. Whether the model's loss rewards telling the direction words apart: for clips that
   move left or right, noised at fixed levels, the gradient of the v-loss with respect
   to the text encoder's output at the direction token. If the two groups' mean
   gradients pushed the "left" and "right" embeddings apart, training would separate
   them; printed are the difference of the group means (against its standard error)
   and its component along the current left - right difference (> 0: apart).

  python experiments/direction_gradient.py                     # the shipped model
  python experiments/direction_gradient.py --workdir=workdir/stunet --noema
"""

import numpy as np
from absl import flags

from data import shapes
from stunet import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'STUNet workdir (default: the shipped model).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_EMA = flags.DEFINE_bool('ema', True, 'Use the EMA weights (--noema: the raw ones).')
_NUM = flags.DEFINE_integer('num_clips', 64, 'Clips moving left or right (dataset seed 11).')
LEVELS = (0.6, 0.85, 0.95)
OPPOSITE = {'moves right': 'moves left', 'moves down': 'moves up', 'shrinks': 'grows'}


def ideal_gain(num_frames: int, size: int, level: float, n: int = 6000) -> None:
  """The v-loss at noise level ``level`` of predicting x by the mean clip of what the
  caption says (the best prediction when z carries no information), for 64 clips."""
  from stunet import diffusion as D  # pylint: disable=g-import-not-at-top
  kind = lambda m: OPPOSITE.get(m, m)  # the motion without its direction: right -> left
  cover = {}
  for i in range(n):  # the object's coverage in [0, 1], by what the caption says
    e = shapes.example(3, i, num_frames, size)
    c = e['video'].max(-1).astype(np.float32) / 255.
    for key in ((e['shape'], e['motion']), (e['shape'], kind(e['motion'])), (e['shape'],)):
      cover.setdefault(key, []).append(c)
  cover = {k: np.mean(v, 0) for k, v in cover.items()}
  alpha, sigma = (float(x) for x in D.alpha_sigma(D.logsnr_schedule_cosine(level)))
  rows = {'colour, shape and motion': lambda e: (e['shape'], e['motion']),
          'colour, shape, motion without direction': lambda e: (e['shape'], kind(e['motion'])),
          'colour and shape': lambda e: (e['shape'],)}
  print(f'ideal prediction at t = {level} (logsnr {float(D.logsnr_schedule_cosine(level)):+.1f}):'
        f' v-loss of the mean clip of')
  for name, key in rows.items():
    losses = []
    for j in range(64):
      e = shapes.example(7, j, num_frames, size)
      x = e['video'].astype(np.float32) / 127.5 - 1.
      x_hat = -1. + cover[key(e)][..., None] * (shapes.COLORS[e['color']] / 127.5)
      eps = np.random.default_rng(j).standard_normal(x.shape).astype(np.float32)
      z = alpha * x + sigma * eps
      v_hat = alpha * (z - alpha * x_hat) / sigma - sigma * x_hat
      losses.append(((v_hat - (alpha * eps - sigma * x)) ** 2).mean())
    print(f'  {name:42s} {np.mean(losses):.4f}')


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from stunet import checkpoints  # pylint: disable=g-import-not-at-top
  from stunet import diffusion as D  # pylint: disable=g-import-not-at-top
  from stunet.models import build_model  # pylint: disable=g-import-not-at-top
  from stunet.text import Tokenizer  # pylint: disable=g-import-not-at-top
  cli.quiet_library_logs()
  workdir = _WORKDIR.value or checkpoints.default_workdir()
  config, params = checkpoints.load_params(workdir, step=_STEP.value, ema=_EMA.value)
  d = config.data
  ideal_gain(d.num_frames, d.size, 0.995)

  model, tok = build_model(config.model), Tokenizer.from_config(config.data)
  ex = [e for e in (shapes.example(11, i, d.num_frames, d.size) for i in range(20 * _NUM.value))
        if e['motion'] in ('moves left', 'moves right')][:_NUM.value]
  video = jnp.asarray(np.stack([e['video'] for e in ex]).astype(np.float32) / 127.5 - 1.)
  tokens, mask = map(jnp.asarray, tok.encode([e['caption'] for e in ex]))
  left = np.array([e['motion'] == 'moves left' for e in ex])
  position = len(tok.encode(['a red square moves'])[0].nonzero()[0]) - 1  # before EOS
  text = model.apply({'params': params}, tokens, mask, method='encode_text')
  apart = np.asarray(text[left][0, position] - text[~left][0, position])

  def loss(text1, mask1, z, t, eps, x):
    v = model.apply({'params': params}, z[None], t[None], text1[None], mask1[None],
                    method='denoise')
    return ((v[0] - D.v_target(x[None], t[None], eps[None])[0]) ** 2).mean()

  grad = jax.jit(jax.vmap(jax.grad(loss)))
  print(f'\n{workdir} step {_STEP.value or "latest"} ({"EMA" if _EMA.value else "raw"}): '
        f'|left - right| at the direction token {np.linalg.norm(apart):.2f}; '
        f'{left.sum()} left, {(~left).sum()} right clips x 4 noise draws')
  print('t     mean |g|    |mean g_left - mean g_right|  (std. error)  along left-right')
  for level in LEVELS:
    t = jnp.full((len(ex),), level)
    g = []
    for r in range(4):
      eps = jax.random.normal(jax.random.key(r), video.shape)
      g.append(np.asarray(grad(text, mask, D.q_sample(video, t, eps), t, eps, video))[:, position])
    g, lab = np.concatenate(g), np.tile(left, 4)
    diff = g[lab].mean(0) - g[~lab].mean(0)
    se = np.sqrt(g[lab].var(0) / lab.sum() + g[~lab].var(0) / (~lab).sum())
    # Gradient descent moves each embedding against its gradient, so the pair moves
    # apart along `apart` at the rate -(g_left - g_right) . apart / |apart|.
    along = -float(diff @ apart) / np.linalg.norm(apart)
    print(f'{level:.2f}  {np.linalg.norm(g, axis=1).mean():.2e}  {np.linalg.norm(diff):.2e}'
          f'                    ({np.linalg.norm(se):.2e})     {along:+.2e}', flush=True)


if __name__ == '__main__':
  cli.run(main)
