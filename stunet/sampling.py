"""Samplers: DDPM ancestral and DDIM, classifier-free guidance, dynamic thresholding.

The whole denoising loop over the full clip (text encoding, every step, the final
clip to [-1, 1]) is one ``jax.jit``-compiled function built by ``make_sampler``; the
loop is a ``lax.scan`` and the RNG is folded in per step, so the same seed gives
the same video and repeated calls with the same shapes never recompile.
"""

import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn
from jax.sharding import NamedSharding, PartitionSpec as P

from stunet import cascade
from stunet import diffusion as D
from stunet import layers as L
from stunet import multidiffusion
from stunet import sharding
from stunet import ssr

SAMPLERS = ('ddim', 'ddpm')


def dynamic_threshold(x, percentile: float = 0.995):
  """Imagen's dynamic thresholding: s = quantile(|x|, p) per example, clip to [-s, s], / s.

  x: [b, ...]. With s <= 1 this is a plain clip to [-1, 1]; percentile 0 is always
  the plain (static) clip. Dynamic thresholding rescales the whole clip when a few
  pixels overshoot, which hurts data that sits at the range's ends (the shapes
  dataset's black background): the SSR config uses the static clip.
  """
  if not percentile:
    return jnp.clip(x, -1., 1.)
  flat = jnp.abs(x.reshape(x.shape[0], -1)).astype(jnp.float32)
  s = jnp.maximum(jnp.quantile(flat, percentile, axis=1), 1.)
  s = D._bcast(s, x)
  return jnp.clip(x, -s, s) / s


def guided_v(v_cond, v_uncond, guidance):
  """Classifier-free guidance: (1 + w) v(z, c) - w v(z, null)."""
  return (1. + guidance) * v_cond - guidance * v_uncond


def ddim_step(z, x_hat, t, s):
  """Deterministic DDIM update z_t -> z_s (eta = 0), t > s."""
  a_t, sig_t = D.alpha_sigma(D.logsnr_schedule_cosine(t))
  a_s, sig_s = D.alpha_sigma(D.logsnr_schedule_cosine(s))
  eps = (z - a_t * x_hat) / sig_t
  return a_s * x_hat + sig_s * eps


def ddpm_step(rng, z, x_hat, t, s):
  """Ancestral step: a draw from q(z_s | z_t, x = x_hat), t > s."""
  lt, ls = D.logsnr_schedule_cosine(t), D.logsnr_schedule_cosine(s)
  a_t, _ = D.alpha_sigma(lt)
  a_s, sig_s = D.alpha_sigma(ls)
  c = -jnp.expm1(lt - ls)  # sigma_{t|s}^2 / sigma_t^2
  mean = a_s * (z * (1. - c) / a_t + c * x_hat)
  return mean + jnp.sqrt(c) * sig_s * jax.random.normal(rng, z.shape, z.dtype)


def make_sampler(model, shape, *, num_steps: int, sampler: str, threshold: float,
                 t_start: float = 1.0,
                 windows: Optional[multidiffusion.Windows] = None,
                 mesh: Optional[jax.sharding.Mesh] = None, rules=()) -> Callable:
  """Returns ``sample(params, tokens, mask, null_tokens, null_mask, rng, guidance,
  z_init=None, lowres=None, lowres_aug=0., cond_video=None, cond_mask=None)``.

  shape: (b, t, h, w, c) of the video. tokens, mask: [b, L]; null_*: [b, L] (the
  empty prompt). guidance: scalar weight w (traced: changing it does not recompile).
  z_init: optional starting point [b, t, h, w, c] at time t_start (SDEdit); by
  default pure noise at t = 1. lowres: the SSR's low-res video [b, t, h', w', c],
  noise-augmented to level lowres_aug (traced). cond_video, cond_mask: the conditional
  STUNet's conditioning video [b, t, h, w, c] and mask [b, t, h, w, 1]
  (``stunet.conditioning``), given to both guidance branches. windows: denoise overlapping
  temporal windows fused by MultiDiffusion at every step (``stunet.multidiffusion``)
  instead of the whole clip at once; any sampler works, since what is fused is the
  denoiser's prediction and the step is then taken on the whole clip. Returns
  videos in [-1, 1], float32.

  mesh, rules: run on this device mesh under these logical axis rules (config.mesh's):
  the network's activations are split as in training (stunet.layers: the batch, and
  the MultiDiffusion windows stacked along it, over data x fsdp; each clip over the
  context axis), the parameters stay in the shardings they come in (those of training,
  ``train_lib.load_params``), and the videos come out split over data x fsdp.
  """
  if sampler not in SAMPLERS:
    raise ValueError(f'unknown sampler {sampler!r}; choose one of {SAMPLERS}.')
  if num_steps < 1:
    raise ValueError(f'num_steps must be >= 1, got {num_steps}.')
  if not 0. < t_start <= 1.:
    raise ValueError(f't_start must be in (0, 1], got {t_start}.')
  if windows is not None and windows.num_frames != shape[1]:
    raise ValueError(f'windows for {windows.num_frames} frames, clip of {shape[1]}.')
  b = shape[0]

  def guided_x(params, z, t, text, mask, null_text, null_mask, guidance, extra, *cond):
    """Guided x-prediction of z [n, ...] before thresholding. n = b x (windows per call),
    windows-major; the conditional and unconditional predictions run in one batch."""
    n = z.shape[0]
    tile = lambda a: jnp.tile(a, (n // b,) + (1,) * (a.ndim - 1))
    both = lambda cond, uncond: jnp.concatenate([cond, uncond])
    v = model.apply(params, both(z, z), jnp.full((2 * n,), t),
                    both(tile(text), tile(null_text)), both(tile(mask), tile(null_mask)),
                    *(both(c, c) for c in cond), *(both(tile(e), tile(e)) for e in extra),
                    method='denoise')
    return D.x_from_v(z, jnp.full((n,), t), guided_v(v[:n], v[n:], guidance))

  def sample(params, tokens, mask, null_tokens, null_mask, rng, guidance,
             z_init: Optional[jax.Array] = None, lowres: Optional[jax.Array] = None,
             lowres_aug=0., cond_video: Optional[jax.Array] = None,
             cond_mask: Optional[jax.Array] = None):
    text = model.apply(params, tokens, mask, method='encode_text')
    null_text = model.apply(params, null_tokens, null_mask, method='encode_text')
    noise_rng, step_rng = jax.random.split(rng)
    z = L.constrain(jax.random.normal(noise_rng, shape, jnp.float32), L.ACTIVATION)
    if z_init is not None:
      z = D.q_sample(z_init, jnp.full((b,), t_start), z)
    # Inputs cut with the clip into MultiDiffusion windows, and per-example ones.
    cond = (cond_video, cond_mask) if cond_video is not None else ()
    extra = ()
    if lowres is not None:  # SSR: the low-res video, noised once to a fixed level
      aug_t = jnp.full((b,), lowres_aug, jnp.float32)
      cond = (ssr.augment(jax.random.fold_in(noise_rng, 1), lowres, aug_t),)
      extra = (aug_t,)
    times = t_start * (1. - jnp.arange(num_steps + 1, dtype=jnp.float32) / num_steps)

    def predict(z, t):
      fn = lambda zw, *cw: guided_x(params, zw, t, text, mask, null_text, null_mask,
                                    guidance, extra, *cw)
      x = fn(z, *cond) if windows is None else multidiffusion.apply(fn, z, windows, cond)
      return dynamic_threshold(x, threshold)

    def body(carry, i):
      z, _ = carry
      t, s = times[i], times[i + 1]
      x_hat = predict(z, t)
      if sampler == 'ddim':
        z = ddim_step(z, x_hat, t, s)
      else:
        z = ddpm_step(jax.random.fold_in(step_rng, i), z, x_hat, t, s)
      return (z, x_hat), None

    (_, x_hat), _ = jax.lax.scan(body, (z, jnp.zeros(shape, jnp.float32)),
                                 jnp.arange(num_steps))
    # The last prediction, at the lowest noise level, is the sample.
    return jnp.clip(x_hat, -1., 1.)

  if mesh is None:
    return jax.jit(sample)

  def sample_on_mesh(*args, **kwargs):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
      return sample(*args, **kwargs)

  data = tuple(a for a in sharding.BATCH_AXES if mesh.shape.get(a, 1) > 1)
  split = int(np.prod([mesh.shape[a] for a in data]))
  out = NamedSharding(mesh, P(data if data and b % split == 0 else None))
  return jax.jit(sample_on_mesh, out_shardings=out)


class Generator:
  """Prompts -> videos for one model and sampler setting; compiles once per batch size
  and clip length.

  Clips longer than ``window`` frames (default: the trained length) are denoised in
  overlapping windows fused by MultiDiffusion. An SSR model (``stunet.ssr``) also
  takes the low-res videos. Reports compile and sampling time (``last_times``).
  """

  def __init__(self, model, params, tokenizer, video_shape, *, num_steps: int,
               sampler: str, threshold: float, window: int, overlap: int, weighting: str,
               window_batch: int, lowres_aug: float,
               mesh: Optional[jax.sharding.Mesh] = None, rules=()):
    """The sampler settings are config.sample's (``from_config``, ``from_workdir``);
    mesh and rules: where and how to run (``make_sampler``; None: plain jit)."""
    self.model, self.params, self.tokenizer = model, params, tokenizer
    self.mesh, self.rules = mesh, rules
    self.video_shape = tuple(video_shape)  # (t, h, w, c); t: the trained clip length
    self.kw = dict(num_steps=num_steps, sampler=sampler, threshold=threshold)
    self.window = window or self.video_shape[0]
    self.window_kw = dict(overlap=overlap, weighting=weighting, batch=window_batch)
    self.lowres_aug = lowres_aug
    self.ssr = bool(getattr(model, 'lowres_size', 0))
    self.conditional = bool(getattr(model, 'conditional', False))
    self._compiled = {}
    self.last_times = {}

  @classmethod
  def from_workdir(cls, workdir: str, step: Optional[int] = None, *,
                   num_steps: Optional[int] = None, sampler: Optional[str] = None,
                   window: Optional[int] = None, overlap: Optional[int] = None,
                   threshold: Optional[float] = None,
                   defaults: Optional[ml_collections.ConfigDict] = None,
                   mesh_shape: Optional[tuple] = None):
    """A Generator for a train.py workdir's checkpoint (EMA weights); unset sampler
    settings come from the run's config, merged over ``defaults`` (entry points pass
    ``configs.common.base_config()``). It runs on the mesh of the run's config.mesh
    (``mesh_shape`` overrides its shape; a shape made for another number of devices
    becomes data parallelism over these), the parameters restored into their training
    shardings. Returns (generator, config)."""
    from stunet import checkpoints  # pylint: disable=g-import-not-at-top
    from stunet import train_lib  # pylint: disable=g-import-not-at-top
    from stunet.text import Tokenizer  # pylint: disable=g-import-not-at-top
    from stunet.models import build_model  # pylint: disable=g-import-not-at-top
    mesh_config = checkpoints.load_config(workdir, defaults).mesh
    if mesh_shape:
      mesh_config.shape = tuple(mesh_shape)
    else:
      try:
        sharding.mesh_shape(mesh_config.shape, jax.device_count(), len(mesh_config.axes))
      except ValueError:  # trained on another number of devices: data-parallel here
        mesh_config.shape = (-1,)
    mesh = sharding.make_mesh(mesh_config)
    config, params = train_lib.load_params(workdir, mesh=mesh, step=step, defaults=defaults)
    config.mesh = mesh_config
    if 'text_encoder' not in params:  # trained on precomputed embeddings
      if not config.model.text.pretrained:
        raise ValueError(f'{workdir} was trained on precomputed text embeddings but its '
                         f'config names no text encoder (config.model.text.pretrained).')
      params = train_lib.with_pretrained_text(config.model, params)
    gen = cls.from_config(build_model(config.model), {'params': params},
                          Tokenizer.from_config(config.data), config, num_steps=num_steps,
                          sampler=sampler, window=window, overlap=overlap,
                          threshold=threshold, mesh=mesh)
    return gen, config

  @classmethod
  def from_config(cls, model, params, tokenizer, config, *,
                  num_steps: Optional[int] = None, sampler: Optional[str] = None,
                  window: Optional[int] = None, overlap: Optional[int] = None,
                  threshold: Optional[float] = None,
                  mesh: Optional[jax.sharding.Mesh] = None):
    """A Generator of ``model`` with the clip shape of config.data and the sampler
    settings of config.sample (the arguments that are not None override them); on
    ``mesh`` (if given) under config.mesh's logical axis rules."""
    d, sc = config.data, config.sample
    frames = cascade.model_frames(config)  # the clip, or a cascade stage's part of it
    return cls(model, params, tokenizer, (frames, d.size, d.size, 3),
               num_steps=sc.num_steps if num_steps is None else num_steps,
               sampler=sampler or sc.sampler,
               threshold=sc.threshold if threshold is None else threshold,
               window=sc.window if window is None else window,
               overlap=sc.overlap if overlap is None else overlap,
               weighting=sc.weighting, window_batch=sc.window_batch,
               lowres_aug=sc.lowres_aug, mesh=mesh,
               rules=sharding.rules(config.mesh) if mesh is not None else ())

  def windows(self, num_frames: int, b: int = 1) -> Optional[multidiffusion.Windows]:
    """None (one pass over the clip) when it fits one window, else the windows. On a
    mesh, enough windows per call that the b x windows examples of a call fill the
    data-parallel devices (data x fsdp): the windows then run in parallel."""
    if num_frames <= self.window:
      return None
    kw = dict(self.window_kw)
    if self.mesh is not None:
      split = int(np.prod([self.mesh.shape.get(a, 1) for a in sharding.BATCH_AXES]))
      kw['batch'] = max(kw['batch'], split // np.gcd(b, split))
    return multidiffusion.Windows(num_frames, self.window, **kw)

  def __call__(self, prompts, *, guidance: float, seed: int = 0,
               num_frames: Optional[int] = None, lowres=None, init=None,
               t_start: float = 1., num_steps: Optional[int] = None, cond=None):
    """prompts: list of b str -> videos float32 [b, t, h, w, 3] in [-1, 1].

    num_frames: clip length (default: the trained one). lowres: an SSR model's input,
    [b, t, h', w', 3] in [-1, 1] (t is then the clip length). init: videos [b, t, h, w,
    3] to noise to time t_start and denoise from there (SDEdit, ``stunet.editing``);
    num_steps overrides the configured number of denoising steps. cond: a conditional
    model's (conditioning videos [b, t, h, w, 3], masks [b, t, h, w, 1]) from the mask
    makers of ``stunet.conditioning`` (t is then the clip length); a conditional model
    without them makes plain text-to-video samples (an all-zero mask).
    """
    if not prompts or any(not p.strip() for p in prompts):
      raise ValueError('every prompt must be non-empty text (the empty prompt is the '
                       'unconditional one used for guidance).')
    b = len(prompts)
    if self.ssr != (lowres is not None):
      raise ValueError('an SSR model needs the low-res videos (lowres=...)' if self.ssr else
                       'lowres videos were given to a model that is not an SSR model.')
    if lowres is not None:
      lowres = jnp.asarray(lowres, jnp.float32)
      if lowres.ndim != 5 or lowres.shape[0] != b:
        raise ValueError(f'lowres videos of shape {lowres.shape}: need [{b}, t, h, w, 3], '
                         f'one per prompt.')
      num_frames = lowres.shape[1]
    if cond is not None:
      if not self.conditional:
        raise ValueError('conditioning videos and masks were given to a text-to-video '
                         'model: use a conditional checkpoint (configs/tiny.py:'
                         'stage=conditional, pretrained/stunet_tiny_conditional).')
      cond = tuple(jnp.asarray(c, jnp.float32) for c in cond)
      num_frames = cond[0].shape[1] if cond[0].ndim == 5 else None
      want = (b, num_frames) + self.video_shape[1:]
      if cond[0].shape != want or cond[1].shape != want[:-1] + (1,):
        raise ValueError(f'conditioning videos {cond[0].shape} and masks {cond[1].shape}: '
                         f'need [{b}, t, {", ".join(map(str, want[2:]))}] and [{b}, t, '
                         f'{", ".join(map(str, want[2:-1]))}, 1], one per prompt.')
    num_frames = num_frames or self.video_shape[0]
    if self.conditional and cond is None:  # nothing known: text-to-video
      full = (b, num_frames) + self.video_shape[1:]
      cond = (jnp.zeros(full, jnp.float32), jnp.zeros(full[:-1] + (1,), jnp.float32))
    windows = self.windows(num_frames, b)
    factor = self.model.unet.temporal_factor
    if (windows.length if windows else num_frames) % factor:
      raise ValueError(f'this model halves time {factor.bit_length() - 1} times, so it '
                       f'denoises multiples of {factor} frames: a '
                       f'{"window" if windows else "clip"} of '
                       f'{windows.length if windows else num_frames} frames does not work; '
                       f'change --frames or --window.')
    tokens, mask = self.tokenizer.encode(prompts)
    null_tokens, null_mask = self.tokenizer.null(b)
    shape = (b, num_frames) + self.video_shape[1:]
    if init is not None:
      init = jnp.asarray(init, jnp.float32)
      if init.shape != shape:
        raise ValueError(f'init videos of shape {init.shape}: need {list(shape)}.')
    kw = dict(self.kw, t_start=t_start)
    kw['num_steps'] = num_steps or kw['num_steps']
    args = (self.params, tokens, mask, null_tokens, null_mask, jax.random.key(seed),
            jnp.float32(guidance), init, lowres, jnp.float32(self.lowres_aug), *(cond or ()))
    t0 = time.time()
    key = (b, num_frames, init is not None, t_start, kw['num_steps'])
    if key not in self._compiled:
      fn = make_sampler(self.model, shape, windows=windows, mesh=self.mesh, rules=self.rules,
                        **kw)
      self._compiled[key] = fn.lower(*args).compile()
    t1 = time.time()
    videos = np.asarray(jax.block_until_ready(self._compiled[key](*args)))
    self.last_times = {'compile_s': t1 - t0, 'sample_s': time.time() - t1,
                       'per_step_s': (time.time() - t1) / kw['num_steps'],
                       'windows': len(windows.starts) if windows else 1}
    return videos
