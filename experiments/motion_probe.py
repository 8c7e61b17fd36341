"""How much a trained STUNet uses the motion words of its prompt, without sampling.

For real clips of the shapes data, noised to a few fixed levels t, prints the
v-prediction loss given the true caption, the same caption with another motion
('a red square moves left' -> '... grows') and the empty caption. The gap
wrong - true is what the model has learnt about motion from the text at that noise
level (0: it ignores the motion word); true - null covers colour and shape too.
The last column swaps only the direction, on the clips whose motion has an opposite
('moves left' <-> 'moves right', up <-> down, grows <-> shrinks): what the model has
learnt about the direction word alone.
Same clips, noise and levels for every checkpoint, so runs compare directly:

  python experiments/motion_probe.py                       # the shipped model
  python experiments/motion_probe.py --workdir=workdir/stunet --step=3000 --noema
  python experiments/motion_probe.py --workdir=workdir/stationary --levels=0.95,0.97,0.98,0.99

A model trained on the stationary data (data.stationary_frames) is probed on its clips
(--stationary / --nostationary choose).
"""

import numpy as np
from absl import flags

from data import shapes
from stunet import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'STUNet workdir (default: the shipped model).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_EMA = flags.DEFINE_bool('ema', True, 'Use the EMA weights (--noema: the raw ones).')
_NUM = flags.DEFINE_integer('num_clips', 64, 'Real clips (dataset seed 7, not the training set).')
_LEVELS = flags.DEFINE_list('levels', ['0.2', '0.4', '0.6', '0.75', '0.85', '0.95', '0.98', '0.995'],
                            'Noise levels t.')
_STATIONARY = flags.DEFINE_bool('stationary', None, 'Clips of the stationary data (default: '
                                'the data the model was trained on).')
OPPOSITE = {'moves left': 'moves right', 'moves right': 'moves left', 'moves up': 'moves down',
            'moves down': 'moves up', 'grows': 'shrinks', 'shrinks': 'grows'}


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
  model, tok = build_model(config.model), Tokenizer.from_config(config.data)
  d = config.data
  stationary = bool(d.stationary_frames) if _STATIONARY.value is None else _STATIONARY.value
  ex = [shapes.example(7, i, d.num_frames, d.size, stationary=stationary)
        for i in range(_NUM.value)]
  video = jnp.asarray(np.stack([e['video'] for e in ex]).astype(np.float32) / 127.5 - 1.)
  rng = np.random.default_rng(0)

  def other_motion(e):
    others = [m for m in shapes.MOTIONS
              if m != e['motion'] and shapes.valid_combination(e['shape'], m)]
    return shapes.caption(e['color'], e['shape'], others[rng.integers(len(others))])

  captions = {'true': [e['caption'] for e in ex], 'wrong_motion': [other_motion(e) for e in ex],
              'null': [''] * len(ex)}
  encoded = {k: tuple(map(jnp.asarray, tok.encode(v))) for k, v in captions.items()}
  directed = np.array([i for i, e in enumerate(ex) if e['motion'] in OPPOSITE])
  direction = {  # the clips with an opposite motion: true vs opposite captions
      'true': tok.encode([ex[i]['caption'] for i in directed]),
      'opposite': tok.encode([shapes.caption(ex[i]['color'], ex[i]['shape'],
                                             OPPOSITE[ex[i]['motion']]) for i in directed])}
  direction = {k: tuple(map(jnp.asarray, v)) for k, v in direction.items()}
  video_dir = video[directed]

  @jax.jit
  def loss(x, z, t, tokens, mask, eps):
    v = model.apply({'params': params}, z, t, tokens, mask)
    return ((v - D.v_target(x, t, eps)) ** 2).mean()

  print(f'{workdir} step {_STEP.value or "latest"} ({"EMA" if _EMA.value else "raw"}), '
        f'{len(ex)} {"stationary " if stationary else ""}clips ({len(directed)} with an '
        f'opposite motion)')
  print('t     logsnr   true      wrong     null      wrong-true  opposite-true')
  for level in map(float, _LEVELS.value):
    t = jnp.full((len(ex),), level)
    eps = jax.random.normal(jax.random.key(int(level * 100)), video.shape)
    z = D.q_sample(video, t, eps)
    r = {k: float(loss(video, z, t, *encoded[k], eps)) for k in captions}
    d = {k: float(loss(video_dir, z[directed], t[directed], *direction[k], eps[directed]))
         for k in direction}
    print(f'{level:<5}  {float(D.logsnr_schedule_cosine(level)):+6.2f}  {r["true"]:.5f}  '
          f'{r["wrong_motion"]:.5f}  {r["null"]:.5f}  {r["wrong_motion"] - r["true"]:+.5f}'
          f'    {d["opposite"] - d["true"]:+.5f}', flush=True)


if __name__ == '__main__':
  cli.run(main)
