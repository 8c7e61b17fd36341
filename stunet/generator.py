"""Prompts -> videos: a trained model and its sampler settings, compiled once per shape.

``Generator.from_workdir`` loads a train.py workdir (its config, the EMA weights into
their training shardings, the mesh); calling it runs the jitted sampler of
``stunet.sampling`` on the prompts, in MultiDiffusion windows when the clip is longer
than the model's window.
"""

import functools
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from stunet import cascade
from stunet import checkpoints
from stunet import config as config_lib
from stunet import multidiffusion
from stunet import prompt_schedule
from stunet import sampling
from stunet import sharding
from stunet import t5
from stunet import unet as unet_lib
from stunet.models import build_model
from stunet.text import Tokenizer


class Generator:
  """Prompts -> videos for one model and sampler setting; compiles once per batch size
  and clip length.

  Clips longer than ``window`` frames (default: the trained length) are denoised in
  overlapping windows fused by MultiDiffusion. An SSR model (``stunet.ssr``) also
  takes the low-res videos. Reports compile and sampling time (``last_times``).
  """

  def __init__(self, model, params, tokenizer, video_shape, *, num_steps: int,
               sampler: str, threshold: float, window: int, overlap: int, weighting: str,
               window_batch: int, lowres_aug: float, spacing: str = 'uniform',
               shared_noise: float = 0., mesh: Optional[jax.sharding.Mesh] = None,
               rules=()):
    """The sampler settings are config.sample's (``from_config``, ``from_workdir``);
    mesh and rules: where and how to run (``sampling.make_sampler``; None: plain jit)."""
    self.model, self.params, self.tokenizer = model, params, tokenizer
    self.mesh, self.rules = mesh, rules
    self.video_shape = tuple(video_shape)  # (t, h, w, c); t: the trained clip length
    self.kw = dict(num_steps=num_steps, sampler=sampler, threshold=threshold,
                   spacing=spacing, shared_noise=shared_noise)
    self.window = window or self.video_shape[0]
    self.window_kw = dict(overlap=overlap, weighting=weighting, batch=window_batch)
    self.lowres_aug = lowres_aug
    self.ssr = bool(getattr(model, 'lowres_size', 0))
    self.conditional = bool(getattr(model, 'conditional', False))
    self._compiled = {}
    self._hooks = {}
    self.last_times = {}

  @classmethod
  def from_workdir(cls, workdir: str, step: Optional[int] = None, *,
                   num_steps: Optional[int] = None, sampler: Optional[str] = None,
                   window: Optional[int] = None, overlap: Optional[int] = None,
                   threshold: Optional[float] = None, mesh_shape: Optional[tuple] = None,
                   spacing: Optional[str] = None):
    """A Generator for a train.py workdir's checkpoint (EMA weights); unset sampler
    settings come from the run's config. It runs on the mesh of the run's config.mesh
    (``mesh_shape`` overrides its shape; a shape made for another number of devices
    becomes data parallelism over these), the parameters restored into their training
    shardings. Returns (generator, config)."""
    mesh_config = config_lib.load(workdir).mesh
    if mesh_shape:
      mesh_config.shape = tuple(mesh_shape)
    else:
      try:
        sharding.mesh_shape(mesh_config.shape, jax.device_count(), len(mesh_config.axes))
      except ValueError:  # trained on another number of devices: data-parallel here
        mesh_config.shape = (-1,)
    mesh = sharding.make_mesh(mesh_config)
    config, params = checkpoints.load_params(workdir, mesh=mesh, step=step)
    config.mesh = mesh_config
    if 'text_encoder' not in params:  # trained on precomputed embeddings
      if not config.model.text.pretrained:
        raise ValueError(f'{workdir} was trained on precomputed text embeddings but its '
                         f'config names no text encoder (config.model.text.pretrained).')
      params = t5.with_t5_encoder(config.model, params)
    gen = cls.from_config(build_model(config.model), {'params': params},
                          Tokenizer.from_config(config.data), config, num_steps=num_steps,
                          sampler=sampler, window=window, overlap=overlap,
                          threshold=threshold, mesh=mesh, spacing=spacing)
    return gen, config

  @classmethod
  def from_config(cls, model, params, tokenizer, config, *,
                  num_steps: Optional[int] = None, sampler: Optional[str] = None,
                  window: Optional[int] = None, overlap: Optional[int] = None,
                  threshold: Optional[float] = None,
                  mesh: Optional[jax.sharding.Mesh] = None, spacing: Optional[str] = None):
    """A Generator of ``model`` with the clip shape of config.data and the sampler
    settings of config.sample (the arguments that are not None override them); on
    ``mesh`` (if given) under config.mesh's logical axis rules."""
    d, sc = config.data, config.sample
    frames = cascade.model_frames(config)  # the clip, or a cascade stage's part of it
    return cls(model, params, tokenizer, (frames, d.size, d.size, 3),
               num_steps=sc.num_steps if num_steps is None else num_steps,
               sampler=sampler or sc.sampler, spacing=spacing or sc.spacing,
               threshold=sc.threshold if threshold is None else threshold,
               window=sc.window if window is None else window,
               overlap=sc.overlap if overlap is None else overlap,
               weighting=sc.weighting, window_batch=sc.window_batch,
               lowres_aug=sc.lowres_aug, shared_noise=config.model.shared_noise, mesh=mesh,
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
               t_start: float = 1., num_steps: Optional[int] = None, cond=None,
               negative_prompt=None, progress=None, preview=None, prompt_frames=None):
    """prompts: list of b str -> videos float32 [b, t, h, w, 3] in [-1, 1].

    prompt_frames: a prompt schedule (``stunet.prompt_schedule``), the first frame of
    each of K prompts; every entry of ``prompts`` is then a list of K prompts, one
    video's schedule. A change over time needs a clip longer than the window.

    negative_prompt: the unconditional branch of guidance gets this text (one for every
    video, or a list of one per prompt) instead of the empty prompt, so guidance pushes
    away from it.
    progress(step, num_steps), preview(step, t, x_hat): host hooks called after every
    denoising step (``sampling.make_sampler``): for a progress bar, and to watch the
    prediction of the clean videos form. A sampler is compiled per combination of hooks
    present (not per function: the current call's functions are the ones called).

    num_frames: clip length (default: the trained one). lowres: an SSR model's input,
    [b, t, h', w', 3] in [-1, 1] (t is then the clip length). init: videos [b, t, h, w,
    3] to noise to time t_start and denoise from there (SDEdit, ``stunet.editing``);
    num_steps overrides the configured number of denoising steps. cond: a conditional
    model's (conditioning videos [b, t, h, w, 3], masks [b, t, h, w, 1]) from the mask
    makers of ``stunet.conditioning`` (t is then the clip length); a conditional model
    without them makes plain text-to-video samples (an all-zero mask).
    """
    texts = prompts  # every prompt text, one video after another
    if prompt_frames is not None:
      if any(isinstance(p, str) or len(p) != len(prompt_frames) for p in prompts):
        raise ValueError(f'with a prompt schedule of {len(prompt_frames)} first frames, every '
                         f'video needs a list of {len(prompt_frames)} prompts.')
      texts = [q for p in prompts for q in p]
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in texts):
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
    unet_lib.check_frames(windows.length if windows else num_frames,
                          self.model.unet.temporal_factor,
                          'a window' if windows else 'a clip', 'change --frames or --window')
    tokens, mask = self.tokenizer.encode(texts)
    if prompt_frames is not None:
      prompt_frames = prompt_schedule.check(prompt_frames, len(prompt_frames), num_frames)
      tokens, mask = (a.reshape(b, len(prompt_frames), -1) for a in (tokens, mask))
    if negative_prompt is None:
      null_tokens, null_mask = self.tokenizer.null(b)
    else:
      negatives = ([negative_prompt] * b if isinstance(negative_prompt, str)
                   else list(negative_prompt))
      if len(negatives) != b or any(not n.strip() for n in negatives):
        raise ValueError(f'negative prompts: need one non-empty text, or one per prompt '
                         f'({b}); got {negative_prompt!r}. Leave them out for the plain '
                         f'empty unconditional prompt.')
      null_tokens, null_mask = self.tokenizer.encode(negatives)
    shape = (b, num_frames) + self.video_shape[1:]
    if init is not None:
      init = jnp.asarray(init, jnp.float32)
      if init.shape != shape:
        raise ValueError(f'init videos of shape {init.shape}: need {list(shape)}.')
    kw = dict(self.kw, t_start=t_start, schedule=prompt_frames)
    kw['num_steps'] = num_steps or kw['num_steps']
    args = (self.params, tokens, mask, null_tokens, null_mask, jax.random.key(seed),
            jnp.float32(guidance), init, lowres, jnp.float32(self.lowres_aug), *(cond or ()))
    t0 = time.time()
    self._hooks = {'progress': progress, 'preview': preview}
    hooks = {name: functools.partial(self._hook, name)
             for name, fn in self._hooks.items() if fn is not None}
    key = (b, num_frames, init is not None, tuple(sorted(kw.items())), tuple(hooks))
    if key not in self._compiled:
      fn = sampling.make_sampler(self.model, shape, windows=windows, mesh=self.mesh,
                                 rules=self.rules, **kw, **hooks)
      self._compiled[key] = fn.lower(*args).compile()
    t1 = time.time()
    videos = np.asarray(jax.block_until_ready(self._compiled[key](*args)))
    self.last_times = {'compile_s': t1 - t0, 'sample_s': time.time() - t1,
                       'per_step_s': (time.time() - t1) / kw['num_steps'],
                       'windows': len(windows.starts) if windows else 1}
    return videos

  def _hook(self, name, *args):
    """What a compiled sampler calls: the current call's hook of that name."""
    fn = self._hooks.get(name)
    if fn is not None:
      fn(*args)
