"""Train state, optimizer and the pure, sharded train step.

Data flows one way: ``data.pipeline`` yields host-local numpy batches ->
``sharding.global_batch`` makes global arrays -> ``train_step(state, batch, rng)`` ->
``checkpoints.Checkpointer`` (the loop around it is ``stunet.train_loop``). Only the
trainable part of the parameters (all of them, or only the temporal layers when the
spatial ones are frozen) is differentiated and has optimizer state and an EMA: frozen
weights are constants of the step, so they cannot move and cost no weight-gradient
FLOPs.
"""

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec as P

from stunet import cascade
from stunet import conditioning
from stunet import diffusion as D
from stunet import inflate
from stunet import sharding
from stunet import ssr
from stunet.models import build_model


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any      # the full parameter tree (frozen and trainable)
  ema_params: Any  # moving average of the trainable parameters (what the sampler uses)
  opt_state: Any   # optimizer state of the trainable parameters only
  skipped: jax.Array  # steps whose update was dropped for a non-finite loss or gradient

  def sampling_params(self):
    """The full tree with the EMA in place of the trainable weights."""
    return unflatten({**flatten(self.params), **flatten(self.ema_params)})


# config.train.stage: the image U-Net on frames, the STUNet inflated from a T2I (or
# STUNet) run, the STUNet from scratch, the conditional STUNet from a text-to-video run.
STAGES = ('t2i', 'stunet', 'scratch', 'conditional')
SCHEDULES = ('constant', 'cosine')  # config.train.schedule: after the linear warmup


def lr_schedule(tc) -> optax.Schedule:
  warmup = optax.linear_schedule(0., tc.lr, max(tc.warmup_steps, 1))
  if tc.schedule == 'constant':
    after = optax.constant_schedule(tc.lr)
  else:
    after = optax.cosine_decay_schedule(tc.lr, max(tc.num_steps - tc.warmup_steps, 1))
  return optax.join_schedules([warmup, after], [tc.warmup_steps])


def make_optimizer(tc) -> optax.GradientTransformation:
  parts = [optax.clip_by_global_norm(tc.grad_clip)] if tc.grad_clip > 0 else []
  parts.append(optax.adamw(lr_schedule(tc), b1=0.9, b2=0.99,
                           weight_decay=tc.weight_decay))
  if tc.spatial_lr_scale != 1:
    # The weights the inflated image network already had take smaller steps than the
    # layers the inflation added (parameters are flat dicts keyed 'a/b/c').
    spatial = lambda params: {k: not inflate.is_temporal(tuple(k.split('/')))
                              for k in params}
    parts.append(optax.masked(optax.scale(tc.spatial_lr_scale), spatial))
  return optax.chain(*parts)


def flatten(tree) -> dict:
  """A parameter tree as a flat dict keyed by 'a/b/c' paths."""
  return traverse_util.flatten_dict(tree, sep='/')


def unflatten(flat: dict):
  """Inverse of ``flatten``."""
  return traverse_util.unflatten_dict(flat, sep='/')


def split_params(params, freeze_spatial: bool, freeze_text: bool = False,
                 freeze_temporal: bool = False):
  """(trainable, frozen) flat dicts keyed by 'a/b/c' paths.

  freeze_spatial: only temporal layers train. freeze_temporal: only the spatial layers
  of the U-Net train (the stylized-generation fine-tune: the temporal layers and the
  text encoder stay). freeze_text: the text encoder (a pretrained T5) is frozen.
  """
  flat = flatten(params)
  temporal = lambda k: inflate.is_temporal(tuple(k.split('/')))
  text = lambda k: k.startswith('text_encoder/')
  train = {k: v for k, v in flat.items()
           if (not freeze_spatial or temporal(k))
           and not (freeze_temporal and (temporal(k) or text(k)))
           and not (freeze_text and text(k))}
  return train, {k: v for k, v in flat.items() if k not in train}


def example_inputs(config, batch: int = 1):
  """Zero inputs of the model's shapes (for init and abstract evaluation): tokens, or
  text embeddings [batch, L, width] with ``data.precomputed_text``."""
  frames = cascade.model_frames(config)
  s, low = config.data.size, config.model.lowres_size
  n = config.data.max_text_len
  text = (jnp.zeros((batch, n, config.model.text.width)) if config.data.precomputed_text
          else jnp.zeros((batch, n), jnp.int32))
  inputs = (jnp.zeros((batch, frames, s, s, 3)), jnp.zeros((batch,)), text,
            jnp.ones((batch, n), bool))
  if low:  # SSR: the low-res video (augmented, clean) and its augmentation level
    inputs += (jnp.zeros((batch, frames, low, low, 3)),) * 2 + (jnp.zeros((batch,)),)
  if config.model.conditional:  # the conditioning video and its mask
    inputs += (jnp.zeros((batch, frames, s, s, 3)), jnp.zeros((batch, frames, s, s, 1)))
  return inputs


def param_shapes(config) -> dict:
  """{path tuple: shape} of the parameters a config's model has (abstract: nothing is
  computed or allocated)."""
  model = build_model(config.model)
  method = 'denoise' if config.data.precomputed_text else None
  params = jax.eval_shape(lambda: nn.meta.unbox(
      model.init(jax.random.key(0), *example_inputs(config), method=method)))['params']
  return {k: v.shape for k, v in traverse_util.flatten_dict(params).items()}


class TrainSpec:
  """What a config trains, and how the train state is laid out on a mesh: the model,
  the optimizer, which parameters train (``split``), the state's shardings, its
  abstract form (for restoring and compiling) and its sharded init."""

  def __init__(self, config: ml_collections.ConfigDict, mesh):
    self.config, self.mesh = config, mesh
    self.model = build_model(config.model)
    self.tx = make_optimizer(config.train)
    self.freeze = bool(config.train.freeze_spatial)
    self.freeze_temporal = bool(config.train.freeze_temporal)
    self.freeze_text = bool(config.model.text.pretrained or config.train.freeze_text)
    self.precomputed_text = bool(config.data.precomputed_text)

  def split(self, params):
    """(trainable, frozen) flat dicts of a parameter tree."""
    return split_params(params, self.freeze, self.freeze_text, self.freeze_temporal)

  def count_params(self, params) -> tuple[int, int]:
    """(trained, frozen) parameter counts."""
    n = lambda d: int(sum(np.prod(v.shape) for v in d.values()))
    return tuple(n(d) for d in self.split(params))

  def init_boxed(self, rng) -> TrainState:
    method = 'denoise' if self.precomputed_text else None  # no encoder weights at all
    params = self.model.init(rng, *example_inputs(self.config), method=method)['params']
    train, _ = self.split(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      ema_params=unflatten(train), opt_state=self.tx.init(train),
                      skipped=jnp.zeros((), jnp.int32))

  @functools.cached_property
  def shardings(self) -> TrainState:
    abstract = jax.eval_shape(self.init_boxed, jax.random.key(0))
    return sharding.state_shardings(abstract, self.mesh, self.config.mesh)

  @functools.cached_property
  def abstract_state(self) -> TrainState:
    abstract = nn.meta.unbox(jax.eval_shape(self.init_boxed, jax.random.key(0)))
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, self.shardings)

  def init(self, rng) -> TrainState:
    """Creates the state directly in its shardings (never whole on one device)."""
    return jax.jit(lambda r: nn.meta.unbox(self.init_boxed(r)),
                   out_shardings=self.shardings)(rng)


def make_train_step(spec: TrainSpec, null_text: np.ndarray, null_mask: np.ndarray) -> Callable:
  """The pure step ``(state, batch, rng) -> (state, metrics)``, jitted with shardings.

  Batches hold ``video``, ``mask`` and either ``tokens`` or, with
  ``data.precomputed_text``, the embeddings ``text``; ``null_text`` / ``null_mask``
  are the same for the empty prompt (what CFG dropout substitutes).

  All randomness (CFG text dropout, times, noise, t2i frame choice) is drawn for the
  whole batch from ``fold_in(rng, step)`` before the batch is cut into
  ``config.train.grad_accum`` micro-batches, so accumulating gradients changes memory,
  not the result. A non-finite loss or gradient leaves the state as it was (apart from
  the step and the ``skipped`` counter): nothing poisoned is ever kept or saved.
  """
  config, model, tx, mesh = spec.config, spec.model, spec.tx, spec.mesh
  tc = config.train
  schedule = lr_schedule(tc)
  t2i = not config.model.temporal
  lowres_size = config.model.lowres_size
  conditional = config.model.conditional
  cascade_role = config.cascade.role
  accum = tc.grad_accum
  logical_rules = sharding.rules(config.mesh)
  batch_axes = sharding.BATCH_AXES
  text_key = 'text' if spec.precomputed_text else 'tokens'
  method = 'denoise' if spec.precomputed_text else None

  def prepare(batch, rng):
    """Noised inputs and targets of the whole batch (image stage: random frames)."""
    r_drop, r_t, r_eps, r_frames = jax.random.split(rng, 4)
    video, tokens, mask = batch['video'], batch[text_key], batch['mask']
    tokens, mask = D.drop_text(r_drop, tokens, mask, null_text, null_mask, tc.cfg_drop)
    if t2i:  # Images: a few random frames of each clip, each its own example.
      b, f = video.shape[:2]
      k = tc.frames_per_clip
      idx = jax.random.randint(r_frames, (b, k), 0, f)
      video = jnp.take_along_axis(video, idx[:, :, None, None, None], axis=1)
      video = video.reshape((b * k, 1) + video.shape[2:])
      tokens, mask = jnp.repeat(tokens, k, axis=0), jnp.repeat(mask, k, axis=0)
    if cascade_role:  # a cascade stage: the keyframes, or a TSR window given its keyframes
      video, cond = cascade.training_view(jax.random.fold_in(r_frames, 1), video,
                                          cascade_role, config.cascade.stride,
                                          config.cascade.window)
    t = D.sample_times(r_t, video.shape[0], tc.t_power, tuple(tc.t_band), tc.t_band_share)
    eps = D.video_noise(r_eps, video.shape, config.model.shared_noise)
    ex = dict(video=video, tokens=tokens, mask=mask, t=t, eps=eps)
    if lowres_size:  # SSR: the downsampled clip, noise-augmented to a random level
      r_aug = jax.random.fold_in(r_eps, 1)  # (base-model runs keep their randomness)
      # On crops (data.crop_size) the low-res clip is the crop's, at the same factor.
      low = video.shape[2] * lowres_size // config.data.size
      ex['lowres'], ex['base'], ex['aug_t'] = ssr.training_condition(
          r_aug, video, low, tc.lowres_aug_max)
    if cascade_role == 'tsr':
      ex['cond'], ex['cond_mask'] = cond
    elif conditional:  # a random mask of each application, or none
      ex['cond'], ex['cond_mask'], _ = conditioning.training_condition(
          jax.random.fold_in(r_eps, 2), video, tuple(tc.condition_mix))
    return ex

  def micro_batches(ex):
    """[B, ...] -> [accum, B / accum, ...] taking every accum-th example, so each
    micro-batch draws evenly from every device's shard (no data movement)."""
    def cut(x):
      x = x.reshape((x.shape[0] // accum, accum) + x.shape[1:]).swapaxes(0, 1)
      return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(None, batch_axes)))
    return jax.tree.map(cut, ex)

  def step_fn(state: TrainState, batch, rng):
    ex = prepare(batch, jax.random.fold_in(rng, state.step))
    train, frozen = spec.split(state.params)

    def loss(train, frozen, ex):
      params = unflatten({**train, **frozen})
      with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), \
          nn.logical_axis_rules(logical_rules):
        z = D.q_sample(ex['video'], ex['t'], ex['eps'])
        cond = ((ex['lowres'], ex['base'], ex['aug_t']) if lowres_size else
                (ex['cond'], ex['cond_mask']) if conditional else ())
        v = model.apply({'params': params}, z, ex['t'], ex['tokens'], ex['mask'], *cond,
                        method=method)
      return D.loss_fn(v, ex['video'], ex['t'], ex['eps'], tc.min_snr_gamma)

    grad_fn = jax.value_and_grad(loss)
    if accum == 1:
      value, grads = grad_fn(train, frozen, ex)
    else:
      def body(carry, micro):
        weights = (train, frozen)
        if tc.regather_params:
          # The weights are the same in every micro-batch, so XLA would hoist their
          # all-gathers out of the loop and keep every gathered weight alive for the
          # whole step. Tying the sharded weights to this micro-batch through a barrier
          # keeps the gathers (and their buffers) inside one iteration.
          weights, micro = jax.lax.optimization_barrier((weights, micro))
        value, grads = grad_fn(*weights, micro)
        return jax.tree.map(jnp.add, carry, (value, grads)), None
      zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, train))
      (value, grads), _ = jax.lax.scan(body, zeros, micro_batches(ex))
      value, grads = jax.tree.map(lambda x: x / accum, (value, grads))

    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, train)
    new_train = optax.apply_updates(train, updates)
    # EMA with the usual warm-up, so early averages are not dominated by the init.
    step = state.step.astype(jnp.float32)
    decay = jnp.minimum(tc.ema_decay, (1. + step) / (10. + step))
    ema = jax.tree.map(lambda e, p: decay * e + (1. - decay) * p,
                       flatten(state.ema_params), new_train)
    # One conditional picks the whole new or old state (a select per leaf compiles to
    # one XLA fusion per leaf and tree: ~3x the parameter count of tiny kernels).
    kept_train, kept_ema, kept_opt = jax.lax.cond(
        finite, lambda: (new_train, ema, opt_state),
        lambda: (train, flatten(state.ema_params), state.opt_state))
    new = TrainState(
        step=state.step + 1,
        params=unflatten({**kept_train, **frozen}),
        ema_params=unflatten(kept_ema),
        opt_state=kept_opt,
        skipped=state.skipped + (~finite).astype(jnp.int32))
    metrics = {'loss': value, 'grad_norm': grad_norm, 'lr': schedule(state.step),
               'finite': finite, 'skipped': new.skipped}
    return new, metrics

  replicated = NamedSharding(mesh, P())
  return jax.jit(step_fn, in_shardings=(spec.shardings, sharding.batch_sharding(mesh),
                                        replicated),
                 out_shardings=(spec.shardings, replicated), donate_argnums=0)
