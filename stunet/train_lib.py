"""Train state, optimizer, the pure train step and the training loop.

Data flows one way: ``data.pipeline`` yields host-local numpy batches ->
``sharding.global_batch`` makes global arrays -> ``train_step(state, batch, rng)`` ->
``checkpoints.Checkpointer``. Only the trainable part of the parameters (all of them,
or only the temporal layers when the spatial ones are frozen) is differentiated and
has optimizer state: frozen weights are constants of the step, so they cannot move
and cost no weight-gradient FLOPs.
"""

import functools
import time
from typing import Any, Callable, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import linen as nn
from flax import traverse_util

from stunet import checkpoints
from stunet import diffusion as D
from stunet import inflate
from stunet import sharding
from stunet.unet import build_model


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any      # the full parameter tree (frozen and trainable)
  ema_params: Any  # exponential moving average of params (what the sampler uses)
  opt_state: Any   # optimizer state of the trainable parameters only


def lr_schedule(tc) -> optax.Schedule:
  warmup = optax.linear_schedule(0., tc.lr, max(tc.warmup_steps, 1))
  if tc.schedule == 'constant':
    after = optax.constant_schedule(tc.lr)
  elif tc.schedule == 'cosine':
    after = optax.cosine_decay_schedule(tc.lr, max(tc.num_steps - tc.warmup_steps, 1))
  else:
    raise ValueError(f'config.train.schedule={tc.schedule!r}: use constant or cosine.')
  return optax.join_schedules([warmup, after], [tc.warmup_steps])


def make_optimizer(tc) -> optax.GradientTransformation:
  parts = [optax.clip_by_global_norm(tc.grad_clip)] if tc.grad_clip > 0 else []
  parts.append(optax.adamw(lr_schedule(tc), b1=0.9, b2=0.99,
                           weight_decay=tc.weight_decay))
  return optax.chain(*parts)


def _flat(tree):
  return traverse_util.flatten_dict(tree, sep='/')


def _unflat(flat):
  return traverse_util.unflatten_dict(flat, sep='/')


def split_params(params, freeze_spatial: bool):
  """(trainable, frozen) flat dicts keyed by 'a/b/c' paths."""
  flat = _flat(params)
  train = {k: v for k, v in flat.items()
           if not freeze_spatial or inflate.is_temporal(tuple(k.split('/')))}
  return train, {k: v for k, v in flat.items() if k not in train}


def example_inputs(config, batch: int = 1):
  """Zero inputs of the model's shapes (for init and abstract evaluation)."""
  frames = config.data.num_frames if config.model.temporal else 1
  s = config.data.size
  return (jnp.zeros((batch, frames, s, s, 3)), jnp.zeros((batch,)),
          jnp.zeros((batch, config.data.max_text_len), jnp.int32),
          jnp.ones((batch, config.data.max_text_len), bool))


class Setup:
  """Model, optimizer and the sharded (abstract) train state of a config."""

  def __init__(self, config: ml_collections.ConfigDict, mesh):
    self.config, self.mesh = config, mesh
    self.model = build_model(config.model)
    self.tx = make_optimizer(config.train)
    self.freeze = bool(config.train.freeze_spatial)

  def init_boxed(self, rng) -> TrainState:
    params = self.model.init(rng, *example_inputs(self.config))['params']
    train, _ = split_params(params, self.freeze)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                      opt_state=self.tx.init(train))

  @functools.cached_property
  def shardings(self) -> TrainState:
    abstract = jax.eval_shape(self.init_boxed, jax.random.key(0))
    return sharding.logical_shardings(abstract, self.mesh, self.config.mesh)

  @functools.cached_property
  def abstract_state(self) -> TrainState:
    abstract = nn.meta.unbox(jax.eval_shape(self.init_boxed, jax.random.key(0)))
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, self.shardings)

  def init(self, rng) -> TrainState:
    """Creates the state directly in its shardings (never whole on one device)."""
    return jax.jit(lambda r: nn.meta.unbox(self.init_boxed(r)),
                   out_shardings=self.shardings)(rng)


def load_params(workdir: str, mesh=None, step: Optional[int] = None, ema: bool = True
                ) -> tuple[ml_collections.ConfigDict, Any]:
  """(config, params) of a checkpoint (default: the latest) of a train.py workdir.

  ema: the moving average of the weights (what samples should use) or the raw ones.
  """
  config = checkpoints.load_config(workdir)
  mesh = mesh or sharding.make_mesh(config.mesh)
  setup = Setup(config, mesh)
  ckpt = checkpoints.Checkpointer(workdir, read_only=True)
  state = ckpt.restore(setup.abstract_state, step)
  ckpt.close()
  return config, state.ema_params if ema else state.params


def make_train_step(setup: Setup, null_tokens: np.ndarray, null_mask: np.ndarray) -> Callable:
  """The pure step ``(state, batch, rng) -> (state, metrics)``, jitted with shardings."""
  config, model, tx = setup.config, setup.model, setup.tx
  tc = config.train
  schedule = lr_schedule(tc)
  t2i = not config.model.temporal
  frames_per_clip = tc.frames_per_clip

  def step_fn(state: TrainState, batch, rng):
    rng = jax.random.fold_in(rng, state.step)
    r_drop, r_t, r_eps, r_frames = jax.random.split(rng, 4)
    video, tokens, mask = batch['video'], batch['tokens'], batch['mask']
    tokens, mask = D.drop_text(r_drop, tokens, mask, null_tokens, null_mask, tc.cfg_drop)
    if t2i:  # Images: a few random frames of each clip, each its own example.
      b, f = video.shape[:2]
      idx = jax.random.randint(r_frames, (b, frames_per_clip), 0, f)
      video = jnp.take_along_axis(video, idx[:, :, None, None, None], axis=1)
      video = video.reshape((b * frames_per_clip, 1) + video.shape[2:])
      tokens = jnp.repeat(tokens, frames_per_clip, axis=0)
      mask = jnp.repeat(mask, frames_per_clip, axis=0)
    video = jax.lax.with_sharding_constraint(video, sharding.batch_sharding(setup.mesh))
    t = D.sample_times(r_t, video.shape[0])
    eps = jax.random.normal(r_eps, video.shape, jnp.float32)
    z = D.q_sample(video, t, eps)
    train, frozen = split_params(state.params, setup.freeze)

    def loss(train):
      params = _unflat({**train, **frozen})
      v = model.apply({'params': params}, z, t, tokens, mask)
      return D.loss_fn(v, video, t, eps)

    value, grads = jax.value_and_grad(loss)(train)
    updates, opt_state = tx.update(grads, state.opt_state, train)
    train = optax.apply_updates(train, updates)
    params = _unflat({**train, **frozen})
    # EMA with the usual warm-up, so early averages are not dominated by the init.
    step = state.step.astype(jnp.float32)
    decay = jnp.minimum(tc.ema_decay, (1. + step) / (10. + step))
    ema_train, _ = split_params(state.ema_params, setup.freeze)
    ema_train = jax.tree.map(lambda e, p: decay * e + (1. - decay) * p, ema_train, train)
    ema = _unflat({**ema_train, **frozen})  # frozen weights stay bit-identical
    new = TrainState(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state)
    metrics = {'loss': value, 'grad_norm': optax.global_norm(grads),
               'lr': schedule(state.step)}
    return new, metrics

  replicated = jax.sharding.NamedSharding(setup.mesh, jax.sharding.PartitionSpec())
  return jax.jit(step_fn, in_shardings=(setup.shardings, sharding.batch_sharding(setup.mesh),
                                        replicated),
                 out_shardings=(setup.shardings, replicated), donate_argnums=0)


def initial_state(setup: Setup, ckpt: checkpoints.Checkpointer, rng) -> TrainState:
  """Resume from the latest checkpoint, else init (inflating from a T2I run if asked)."""
  if ckpt.latest_step() is not None:
    report('resuming from %s/%d', ckpt.directory, ckpt.latest_step())
    return ckpt.restore(setup.abstract_state)
  state = setup.init(rng)
  if setup.config.train.init_from:
    src = setup.config.train.init_from
    t2i_config, t2i_params = load_params(src, setup.mesh)
    if t2i_config.model.temporal:
      raise ValueError(f'config.train.init_from={src!r} is a STUNet run; point it at a '
                       f'T2I run (stage=t2i).')
    params = inflate.inflate(t2i_params, state.params)
    params = jax.device_put(params, setup.shardings.params)
    # Separate buffers: the step donates both trees.
    state = state.replace(params=params, ema_params=jax.tree.map(jnp.copy, params))
    report('initialised spatial weights from %s', src)
  return state


def quiet_library_logs() -> None:
  """Entry points: library INFO logs (orbax, tfds) drown the progress lines, so show
  warnings only unless the user passed --verbosity (e.g. --verbosity=0 for INFO)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def report(fmt: str, *args) -> None:
  """A progress line: printed by process 0 (the user's view) and logged by all."""
  logging.info(fmt, *args)
  if jax.process_index() == 0:
    print(fmt % args, flush=True)


def count_params(params, freeze_spatial: bool) -> tuple[int, int]:
  train, frozen = split_params(params, freeze_spatial)
  n = lambda d: int(sum(np.prod(v.shape) for v in d.values()))
  return n(train), n(frozen)


def _check_finite(metrics: dict, step: int) -> None:
  loss = float(metrics['loss'])
  if not np.isfinite(loss):
    raise FloatingPointError(f'loss is {loss} at step {step}; the last checkpoint is intact. '
                             f'Lower config.train.lr or raise config.train.warmup_steps.')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """The training loop over the config's data pipeline. Returns the last metrics."""
  from data import pipeline  # pylint: disable=g-import-not-at-top
  from stunet.text import Tokenizer  # pylint: disable=g-import-not-at-top

  tc = config.train
  mesh = sharding.make_mesh(config.mesh)
  tokenizer = Tokenizer.from_config(config.data)
  setup = Setup(config, mesh)
  checkpoints.save_config(workdir, config)
  ckpt = checkpoints.Checkpointer(workdir, save_every=tc.ckpt_every, keep=tc.keep)
  rng = jax.random.key(config.seed)
  state = initial_state(setup, ckpt, jax.random.fold_in(rng, 0))
  start = int(state.step)
  n_train, n_frozen = count_params(state.params, setup.freeze)
  report('parameters: %.2fM trained, %.2fM frozen', n_train / 1e6, n_frozen / 1e6)

  null_tokens, null_mask = tokenizer.null(1)
  step_fn = make_train_step(setup, null_tokens[0], null_mask[0])
  batches = pipeline.train_batches(config, tokenizer.encode, start_step=start)

  step_rng = jax.random.fold_in(rng, 1)
  t0, t_start, metrics, losses = time.time(), time.time(), {}, []
  compiled = None
  for step in range(start, tc.num_steps):
    batch = sharding.global_batch({k: v for k, v in next(batches).items()
                                   if k in ('video', 'tokens', 'mask')}, mesh)
    if compiled is None:
      tc0 = time.time()
      compiled = step_fn.lower(state, batch, step_rng).compile()
      cost = compiled.cost_analysis() or {}
      report('compiled the train step in %.1fs: %.2f GFLOP/step', time.time() - tc0,
             float(cost.get('flops', 0.)) / 1e9)
      t0 = time.time()
    state, metrics = compiled(state, batch, step_rng)
    losses.append(metrics['loss'])
    done = step + 1
    if done % tc.log_every == 0 or done == tc.num_steps:
      loss = float(np.mean(jax.device_get(losses)))
      _check_finite({'loss': loss}, done)
      rate = len(losses) / (time.time() - t0)
      eta = (tc.num_steps - done) / max(rate, 1e-9)
      report('step %d/%d loss %.4f grad_norm %.3f lr %.2e %.2f steps/s ETA %dm%02ds',
             done, tc.num_steps, loss, float(metrics['grad_norm']),
             float(metrics['lr']), rate, eta // 60, eta % 60)
      t0, losses = time.time(), []
    if ckpt.manager.should_save(done):
      _check_finite(metrics, done)  # never write a poisoned checkpoint
    ckpt.save(done, state)
  _check_finite(metrics, int(state.step))
  if ckpt.latest_step() != int(state.step):
    ckpt.save(int(state.step), state, force=True)
  ckpt.close()
  report('trained to step %d in %.1fs; checkpoints in %s', int(state.step),
         time.time() - t_start, ckpt.directory)
  return jax.device_get(metrics)
