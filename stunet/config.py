"""The one owner of configuration: defaults, enumerations, validation, saving and loading.

Every run is an ``ml_collections.ConfigDict`` built from ``base_config()`` by a config
file (``configs/*.py``) and ``--config.x.y=value`` overrides. ``validate`` checks it once,
before anything is built, compiled or written: every numeric field against its range
and every rule between fields, each rule here and nowhere else, with a message that
names the field, the value and what to do. The library then trusts the config: it reads
fields directly, never with a fallback.

A run's config is saved as ``<workdir>/config.json``; ``load`` reads it back merged over
today's defaults (so a workdir written before a field existed gets that field's
default), which is the only place defaults are applied to a saved config.

Which kind of model a config describes (``model_kind``) follows from four independent
switches the network is built from (``model.temporal``, ``model.lowres_size``,
``model.conditional``, ``cascade.role``); ``validate`` refuses combinations that mean
nothing, and everything that asks "which model is this" asks ``model_kind``.
"""

import json
import math
import os
import jax
import ml_collections

from stunet import cascade
from stunet import conditioning
from stunet import layers
from stunet import models
from stunet import monitoring
from stunet import multidiffusion
from stunet import sampling
from stunet import train_step
from stunet import unet

CONFIG_FILE = 'config.json'


def parse_arg(arg: str, **defaults) -> dict:
  """'stage=t2i,runlocal=True' -> dict, starting from defaults; unknown keys refused."""
  out = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    if '=' not in item:
      raise ValueError(f'config variant {item!r} is not key=value.')
    k, v = item.split('=', 1)
    if k not in defaults:
      raise ValueError(f'unknown config variant key {k!r}; known: {sorted(defaults)}.')
    out[k] = type(defaults[k])(v) if not isinstance(defaults[k], bool) else v.lower() in ('1', 'true', 'yes')
  return out


def base_config() -> ml_collections.ConfigDict:
  """Every field, with its default and a one-line comment."""
  c = ml_collections.ConfigDict()
  c.seed = 0                             # seeds init, data order, noise and CFG dropout

  c.data = ml_collections.ConfigDict()
  c.data.name = 'shapes'                 # 'shapes' (embedded, generated) or a tfds name
  c.data.data_dir = './tfds_data'        # where tfds datasets are prepared and read
  c.data.num_frames = 16                 # frames per clip
  c.data.size = 32                       # frame height and width in pixels
  c.data.num_train = 4096                # generated training clips (shapes only)
  c.data.num_test = 256                  # generated test clips (shapes only)
  c.data.dataset_seed = 0                # seed of the generated dataset (shapes only)
  c.data.tokenizer = ''                  # sentencepiece model; '' = data/captions_spm.model
  c.data.max_text_len = 16               # tokens per caption, EOS included
  # Look of the shapes dataset: '' (solid shapes) or 'outline' (drawn as outlines; the
  # style of stylized generation, configs/tiny.py:stage=style).
  c.data.style = ''
  # 0: the benchmark's clips, whose motion spans the clip (a translation covers 40-50%
  # of the frame whatever the length). N: the stationary variant (shapes only): clips
  # of N frames whose motion has a rate per frame (a translation wraps around the
  # frame; data/shapes.py), from which training reads random windows of num_frames, so
  # a model learns motion that can be continued past its window (long videos).
  c.data.stationary_frames = 0
  # Records written by data/ingest.py (a directory of *.tfrecord shards + info.json);
  # when set they replace the tfds dataset `name`. Clips of num_frames frames start
  # at a random frame and take every k-th frame, k drawn from frame_strides (those
  # that fit the video).
  c.data.records = ''
  # SSR models only: train on random crop_size x crop_size crops of the frames (the same
  # crop in every frame of a clip, at offsets on the low-res pixel grid) and sample whole
  # frames of data.size (the SSR is fully convolutional, as Imagen's). 0: whole frames.
  c.data.crop_size = 0
  c.data.frame_strides = (1,)
  # Read the text embeddings that data/embed_captions.py stored in the records
  # instead of running the text encoder every step (the U-Net then has no encoder
  # parameters; sampling loads config.model.text.pretrained).
  c.data.precomputed_text = False
  # Logical data shards, each read by one process (a process reads num_shards /
  # process_count of them) and each filling its slice of every global batch. Fix it
  # (e.g. 8) to make the data order independent of the number of hosts; 0 = one per
  # process.
  c.data.num_shards = 0

  c.model = ml_collections.ConfigDict()
  c.model.channels = 32                  # base width of the U-Net
  c.model.channel_mult = (1, 2, 2)       # width multiplier per level
  c.model.num_res_blocks = 1             # ResBlocks per level on the way down
  c.model.attn_levels = (2,)             # levels with spatial self-attention
  c.model.cross_attn_levels = (1, 2)     # levels with cross-attention to the text
  c.model.num_heads = 4                  # attention heads
  c.model.temporal = True                # True: STUNet; False: T2I U-Net on frames
  c.model.num_temporal_attn = 1          # temporal attention blocks per spatial one
  # Temporal down/upsampling at init: 'identity' (the paper's: striding, frame
  # repetition), 'linear' (pair average, linear interpolation) or 'he' (ablation).
  c.model.temporal_resample_init = 'identity'
  c.model.temporal_resample = True       # halve/double time with space (SSR: False)
  # How the temporal layers are conditioned: 'film' scales/shifts their input by the
  # timestep + text embedding (their own text projection); 'film_xattn' adds a
  # cross-attention from the temporal attention to the text tokens; 'none': features only.
  c.model.temporal_cond = 'film'
  # SSR (stunet/ssr.py): > 0 makes this a super-resolution model conditioned on the
  # clip downsampled to lowres_size x lowres_size (upsampled, concatenated to its input).
  c.model.lowres_size = 0
  # SSR: diffuse the residual over the bilinearly upsampled low-res clip (stunet/ssr.py).
  c.model.lowres_residual = False
  # The conditional STUNet (stunet/conditioning.py): its input is <noisy video, masked
  # conditioning video, mask> (7 channels) for image-to-video, in/outpainting and
  # cinemagraphs; trained by stage=conditional from a text-to-video run.
  c.model.conditional = False
  # > 0: the STUNet adds to its output a smooth space-time pattern (this many cosines
  # per axis) chosen by the timestep + text embedding (stunet.layers.LayoutBias).
  c.model.layout_basis = 0
  # Row, column (and frame) coordinates at the input, through zero-initialised 1x1
  # projections (stunet.unet.UNet): absolute position from step 0.
  c.model.coord_channels = False
  # What the spatial convolutions see past the frame's edges: 'zeros', or 'circular'
  # (the opposite edge's pixels: the frame as a torus, as in the stationary data,
  # where an object leaving one edge comes back at the other).
  c.model.spatial_pad = 'zeros'
  # The share of the noise's variance that a clip's frames have in common, in training
  # and sampling (stunet.diffusion.video_noise; PYoCo's mixed noise prior); 0: each
  # frame's noise independent, as in the paper.
  c.model.shared_noise = 0.
  c.model.remat = 'none'                 # none | full | dots | dots_no_batch (unet.py)
  c.model.dtype = 'float32'              # compute dtype (bfloat16 on accelerators);
                                         # parameters and optimizer stay float32
  c.model.text = ml_collections.ConfigDict()
  c.model.text.vocab_size = 0            # 0 = the tokenizer's vocabulary size
  c.model.text.width = 64                # text encoder width
  c.model.text.num_layers = 2            # text encoder layers
  c.model.text.num_heads = 4             # text encoder heads
  c.model.text.mlp_dim = 128             # text encoder MLP width
  c.model.text.head_dim = 0              # per-head width (0 = width // num_heads)
  c.model.text.num_buckets = 32          # relative-position buckets
  c.model.text.max_distance = 128        # relative distance of the last bucket
  c.model.text.eps = 1e-6                # RMSNorm epsilon
  # A local HuggingFace T5 v1.1 checkpoint (config.json + safetensors, stunet/t5.py):
  # its weights replace the encoder's and stay frozen, and the fields above are
  # read from its config.json. '' = train the small encoder with the T2I stage.
  c.model.text.pretrained = ''

  # The keyframe + temporal super-resolution cascade that the paper argues against
  # (stunet/cascade.py; docs/reproducing.md). role '': the STUNet, every frame.
  # 'keyframes': the model sees every stride-th frame of each clip. 'tsr': it sees
  # windows of `window` frames starting at multiples of stride, given the frames at
  # multiples of stride (a conditional model: model.conditional=True).
  c.cascade = ml_collections.ConfigDict(dict(role='', stride=4, window=8))

  c.train = ml_collections.ConfigDict()
  c.train.stage = 'stunet'               # 't2i' | 'stunet' | 'scratch' | 'conditional'
  c.train.batch_size = 8                 # global batch: clips (STUNet) or frames (t2i)
  c.train.grad_accum = 1                 # micro-batches per step (batch_size / k each)
  # With grad_accum > 1 and FSDP: gather each sharded parameter anew for every
  # micro-batch (ZeRO-3: only one micro-batch's gathered weights are ever alive). False
  # lets XLA hoist the gathers out of the accumulation loop, keeping every gathered
  # parameter alive for the whole step: 1/grad_accum of the gather bytes, but a full
  # copy of the parameters per device (docs/scale.md measures both).
  c.train.regather_params = True
  c.train.frames_per_clip = 4            # t2i stage: random frames taken from each clip
  c.train.num_steps = 1000               # optimizer steps
  c.train.lr = 1e-3                      # peak learning rate
  c.train.warmup_steps = 100             # linear warmup steps
  c.train.schedule = 'constant'          # after warmup: 'constant' or 'cosine'
  c.train.weight_decay = 0.0             # AdamW weight decay
  c.train.grad_clip = 1.0                # global-norm gradient clipping (0 = off)
  c.train.ema_decay = 0.999              # EMA of weights, used for sampling (0 = raw)
  # Noise levels of training: t = 1 - (1 - u)^t_power, u uniform; > 1 trains more at
  # high noise, where the motion of a clip is decided (docs/choices.md).
  c.train.t_power = 1.0
  # A share of each batch drawn uniformly from the noise levels [t_band[0], t_band[1]],
  # the rest by t_power (0: none). On the stationary data the direction of a motion
  # pays only where the trajectory is partly visible, about t = 0.95-0.99
  # (experiments/direction_information.py; docs/long_videos.md).
  c.train.t_band = (0.95, 0.99)
  c.train.t_band_share = 0.0
  # Min-SNR-gamma loss weighting (0: off, every noise level weighted 1): the v-loss
  # times min(SNR, gamma) / (SNR + 1), which takes the highest noise levels' weight to 0.
  c.train.min_snr_gamma = 0.0
  c.train.cfg_drop = 0.1                 # probability of dropping the text (CFG)
  c.train.lowres_aug_max = 0.4           # SSR: low-res input noised to t ~ U[0, this]
  c.train.freeze_spatial = False         # train only temporal layers (STUNet stage)
  # The learning rate of the non-temporal weights (the inflated image network's)
  # relative to train.lr; 1: one rate for every weight.
  c.train.spatial_lr_scale = 1.0
  # Train only the spatial (T2I) layers, the temporal ones frozen: the stylized
  # generation fine-tune (sample.py --style).
  c.train.freeze_temporal = False
  # Keep the text encoder at its (random) init: a fixed representation in which every
  # word differs from the start (a pretrained T5 is always frozen).
  c.train.freeze_text = False
  # Conditional stage: the share of each kind of training mask, in the order of
  # stunet.conditioning.KINDS (unconditional, image-to-video, inpainting,
  # outpainting, cinemagraph).
  c.train.condition_mix = (0.2, 0.2, 0.2, 0.2, 0.2)
  c.train.init_from = ''                 # T2I workdir/checkpoint to inflate from
  c.train.nan_policy = 'skip'            # non-finite loss/grads: 'skip' the update
                                         # (counted) or 'stop' the run; never saved
  c.train.max_nonfinite_steps = 10       # skipped steps in a row that end the run
  c.train.inject_nan_steps = ()          # fault injection for tests: NaN batches here
  # Several processes agree on a SIGTERM through a collective that the host waits on:
  # every this many steps (one process checks its flag at every step).
  c.train.preemption_check_every = 10
  c.train.log_every = 50                 # steps between progress lines and summaries
  c.train.ckpt_every = 500               # steps between checkpoints
  c.train.keep = 3                       # checkpoints kept

  c.mesh = ml_collections.ConfigDict()
  # Devices along ('data', 'fsdp', 'tensor', 'context'); -1 fills, left-out trailing
  # axes are 1. 'context' splits each clip's activations (context parallelism): the
  # clip's frames in spatial layers, its rows in temporal ones (stunet/folding.py),
  # so a global batch may hold fewer clips than there are devices.
  c.mesh.shape = (-1, 1, 1, 1)
  c.mesh.axes = ('data', 'fsdp', 'tensor', 'context')  # mesh axis names
  # Logical axis -> mesh axes (None = replicated). Parameters: output features over
  # 'tensor' (Megatron-style); activations: the batch over data x fsdp, one clip over
  # 'context'. A mesh axis that does not divide a dimension is dropped there.
  c.mesh.rules = (('batch', ('data', 'fsdp')), ('conv_out', 'tensor'), ('mlp', 'tensor'),
                  ('embed', None), ('conv_in', None), ('conv_h', None), ('conv_w', None),
                  ('conv_t', None), ('norm', None), ('vocab', None), ('heads', None),
                  ('time', None), ('height', None), ('width', None), ('act_channels', None),
                  ('context', 'context'))
  # FSDP: every parameter with at least this many elements is also split along
  # 'fsdp' and 'context' (its largest dimension they divide), and so is its optimizer
  # state.
  c.mesh.fsdp_min_size = 2 ** 14
  # Refuse to start when more than this fraction of the parameter bytes is not split
  # over the model axes (fsdp x tensor x context); not checked when all have size 1.
  c.mesh.max_replicated_fraction = 0.1

  c.sample = ml_collections.ConfigDict()
  c.sample.num_steps = 32                # denoising steps
  c.sample.guidance = 3.0                # classifier-free guidance weight w
  c.sample.sampler = 'ddim'              # one of sampling.SAMPLERS
  c.sample.spacing = 'uniform'           # step times: uniform | quadratic (dense near 0)
  c.sample.threshold = 0.995             # dynamic-thresholding percentile (0: clip)
  # Clips longer than `window` frames (0: the trained data.num_frames) are denoised in
  # windows overlapping by `overlap` frames, fused at every step (MultiDiffusion).
  c.sample.window = 0
  c.sample.overlap = 2                   # the paper's overlap
  c.sample.weighting = 'uniform'         # per-frame fusion weights: uniform | ramp
  c.sample.window_batch = 1              # windows per denoiser call (memory vs speed)
  c.sample.lowres_aug = 0.1              # SSR: fixed noise level of the low-res input
  return c


# Enumerated fields -> their values, from the modules that own them.
CHOICES = {
    'model.remat': tuple(unet.REMAT_POLICIES),
    'model.temporal_cond': unet.TEMPORAL_COND,
    'model.temporal_resample_init': layers.TEMPORAL_RESAMPLE_INITS,
    'model.spatial_pad': layers.SPATIAL_PADS,
    'model.dtype': models.DTYPES,
    'train.stage': train_step.STAGES,
    'train.schedule': train_step.SCHEDULES,
    'train.nan_policy': monitoring.NAN_POLICIES,
    'cascade.role': cascade.ROLES,
    'sample.sampler': sampling.SAMPLERS,
    'sample.spacing': sampling.SPACINGS,
    'sample.weighting': multidiffusion.WEIGHTINGS,
}

# Numeric fields -> (low, high, what the field is). Integers and floats alike: low and
# high are inclusive unless written as ('>', x) / ('<', x); None means unbounded. A NaN
# fails every bound.
RANGES = {
    'seed': (0, None, 'the run\'s seed'),
    'data.num_frames': (1, None, 'frames per clip'),
    'data.size': (1, None, 'the frame size in pixels'),
    'data.num_train': (1, None, 'generated training clips'),
    'data.num_test': (1, None, 'generated test clips'),
    'data.dataset_seed': (0, None, 'the generated dataset\'s seed'),
    'data.max_text_len': (2, None, 'tokens per caption, EOS included'),
    'data.num_shards': (0, None, 'logical data shards (0 = one per process)'),
    'data.stationary_frames': (0, None, 'frames per stationary clip (0: the benchmark\'s clips)'),
    'model.channels': (1, None, 'the base width'),
    'model.num_res_blocks': (1, None, 'ResBlocks per level'),
    'model.num_heads': (1, None, 'attention heads'),
    'model.num_temporal_attn': (0, None, 'temporal attention blocks per spatial one'),
    'model.lowres_size': (0, None, 'the SSR\'s low-res frame size (0: not an SSR)'),
    'model.layout_basis': (0, None, 'cosines per axis of the layout bias (0: off)'),
    'model.shared_noise': (0., ('<', 1.), 'the share of the noise the frames have in common'),
    'model.text.vocab_size': (0, None, 'the vocabulary (0: the tokenizer\'s)'),
    'model.text.width': (1, None, 'the text encoder\'s width'),
    'model.text.num_layers': (0, None, 'text encoder layers'),
    'model.text.num_heads': (1, None, 'text encoder heads'),
    'model.text.mlp_dim': (1, None, 'the text encoder\'s MLP width'),
    'model.text.head_dim': (0, None, 'the per-head width (0: width // num_heads)'),
    'model.text.num_buckets': (1, None, 'relative-position buckets'),
    'model.text.max_distance': (1, None, 'the relative distance of the last bucket'),
    'model.text.eps': (('>', 0.), None, 'the RMSNorm epsilon'),
    'cascade.stride': (2, None, 'the keyframe stride'),
    'cascade.window': (1, None, 'the TSR window in frames'),
    'train.batch_size': (1, None, 'examples per step'),
    'train.grad_accum': (1, None, 'micro-batches per step'),
    'train.frames_per_clip': (1, None, 'frames per clip of the t2i stage'),
    'train.num_steps': (1, None, 'optimizer steps'),
    'train.lr': (('>', 0.), None, 'the peak learning rate'),
    'train.warmup_steps': (0, None, 'linear warmup steps'),
    'train.weight_decay': (0., None, 'the AdamW weight decay'),
    'train.grad_clip': (0., None, 'the gradient-norm clip (0: off)'),
    'train.ema_decay': (0., ('<', 1.), 'the EMA decay (0: raw weights)'),
    'train.t_power': (('>', 0.), None, 'the noise-level power (1: uniform)'),
    'train.t_band_share': (0., ('<', 1.), 'the share of the batch in config.train.t_band'),
    'train.min_snr_gamma': (0., None, 'the Min-SNR gamma (0: off)'),
    'train.spatial_lr_scale': (0., None, 'the spatial weights\' learning-rate factor'),
    'train.cfg_drop': (0., ('<', 1.), 'the probability of dropping the text'),
    'train.lowres_aug_max': (0., 1., 'the SSR\'s largest low-res noise level'),
    'train.max_nonfinite_steps': (1, None, 'non-finite steps in a row before stopping'),
    'train.preemption_check_every': (1, None, 'steps between preemption checks'),
    'train.log_every': (1, None, 'steps between progress lines'),
    'train.ckpt_every': (1, None, 'steps between checkpoints'),
    'train.keep': (1, None, 'checkpoints kept'),
    'mesh.fsdp_min_size': (0, None, 'the smallest parameter FSDP splits'),
    'mesh.max_replicated_fraction': (0., 1., 'a fraction of the parameter bytes'),
    'sample.num_steps': (1, None, 'denoising steps'),
    'sample.guidance': (0., None, 'the guidance weight (0: plain conditional sampling)'),
    'sample.threshold': (0., ('<', 1.), 'the thresholding percentile (0: a plain clip)'),
    'sample.window': (0, None, 'the window length (0: data.num_frames)'),
    'sample.overlap': (0, None, 'frames shared by neighbouring windows'),
    'sample.window_batch': (1, None, 'windows per denoiser call'),
    'sample.lowres_aug': (0., 1., 'the SSR\'s low-res noise level at sampling'),
}


def get(config, field: str):
  """config['a.b.c'] for a dotted field name."""
  for part in field.split('.'):
    config = config[part]
  return config


def _bound(value, bound, lower: bool):
  """Whether value satisfies the bound (inclusive, or strict when given as ('<', x))."""
  if bound is None:
    return True
  strict = isinstance(bound, tuple)
  x = bound[1] if strict else bound
  if lower:
    return value > x if strict else value >= x
  return value < x if strict else value <= x


def _describe(low, high) -> str:
  parts = []
  if low is not None:
    parts.append(f'> {low[1]}' if isinstance(low, tuple) else f'>= {low}')
  if high is not None:
    parts.append(f'< {high[1]}' if isinstance(high, tuple) else f'<= {high}')
  return ' and '.join(parts)


def check_range(name: str, value, low, high, what: str) -> None:
  """Refuses a number outside [low, high] (or NaN) with a message naming it."""
  ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  ok = ok and not (isinstance(value, float) and math.isnan(value))
  if not (ok and _bound(value, low, True) and _bound(value, high, False)):
    raise ValueError(f'{name}={value!r}: {what} must be {_describe(low, high)}.')


def _check_ranges(config) -> None:
  for field, (low, high, what) in RANGES.items():
    check_range(f'config.{field}', get(config, field), low, high, what)
  for field, items, what in (('data.frame_strides', config.data.frame_strides, 'strides'),
                             ('model.channel_mult', config.model.channel_mult,
                              'width multipliers'),
                             ('train.inject_nan_steps', config.train.inject_nan_steps,
                              'steps')):
    for v in items:
      check_range(f'config.{field} entry', v, 0 if field == 'train.inject_nan_steps' else 1,
                  None, what)
  if not config.data.frame_strides or not config.model.channel_mult:
    raise ValueError('config.data.frame_strides and config.model.channel_mult need at '
                     'least one entry.')
  shape = tuple(config.mesh.shape)
  if any(not isinstance(s, int) or (s < 1 and s != -1) for s in shape) or shape.count(-1) > 1:
    raise ValueError(f'config.mesh.shape={shape}: sizes must be whole numbers >= 1, with at '
                     f'most one -1 (the remaining devices).')


def _check_choices(config) -> None:
  for field, allowed in CHOICES.items():
    value = get(config, field)
    if value not in allowed:
      raise ValueError(f'config.{field}={value!r}: use one of '
                       f'{", ".join(repr(a) if not a else a for a in allowed)}.')


def validate(config) -> None:
  """Refuses an inconsistent config with a message that says what to change."""
  _check_ranges(config)
  _check_choices(config)
  m, d, t, sc = config.model, config.data, config.train, config.sample
  levels = len(m.channel_mult)
  factor = unet.temporal_factor(m.channel_mult, m.temporal, m.temporal_resample)
  unet.check_frames(d.num_frames, factor, 'config.data.num_frames',
                    'or fewer levels in config.model.channel_mult')
  if d.size % 2 ** (levels - 1):
    raise ValueError(f'config.data.size={d.size} is not divisible by {2 ** (levels - 1)} '
                     f'({levels} levels of spatial halving).')
  for lvl in tuple(m.attn_levels) + tuple(m.cross_attn_levels):
    if not 0 <= lvl < levels:
      raise ValueError(f'attention level {lvl} is outside 0..{levels - 1}.')
  for width in {m.channels * k for k in m.channel_mult}:
    if width % m.num_heads:
      raise ValueError(f'width {width} is not divisible by config.model.num_heads='
                       f'{m.num_heads}.')
  _validate_stage(config)
  _validate_kind(config)
  if t.stage == 't2i' and t.batch_size % t.frames_per_clip:
    raise ValueError(f'config.train.batch_size={t.batch_size} frames must be whole clips of '
                     f'config.train.frames_per_clip={t.frames_per_clip} frames (t2i stage).')
  if t.batch_size % t.grad_accum:
    raise ValueError(f'config.train.grad_accum={t.grad_accum} must divide '
                     f'config.train.batch_size={t.batch_size}.')
  band = tuple(t.t_band)
  if t.t_band_share and not (len(band) == 2 and 0. <= band[0] < band[1] <= 1.):
    raise ValueError(f'config.train.t_band={band}: two noise levels lo < hi in [0, 1] '
                     f'(the band of config.train.t_band_share={t.t_band_share}).')
  mix = tuple(t.condition_mix)
  if min(mix) < 0 or not sum(mix) > 0 or (m.conditional and len(mix) != len(conditioning.KINDS)):
    raise ValueError(f'config.train.condition_mix={mix}: {len(conditioning.KINDS)} '
                     f'non-negative shares ({", ".join(conditioning.KINDS)}), not all 0.')
  multidiffusion.check_windows(sc.window or d.num_frames, sc.overlap, 'config.sample.window',
                               'config.sample.overlap')
  if d.stationary_frames and (d.name != 'shapes' or d.records or
                              d.stationary_frames < d.num_frames):
    raise ValueError(f'config.data.stationary_frames={d.stationary_frames}: the stationary '
                     f'variant is of the shapes dataset (data.name=shapes, no data.records) '
                     f'and its clips hold windows of config.data.num_frames={d.num_frames}: '
                     f'use 0 or at least {d.num_frames}.')
  if d.precomputed_text and not (d.records and m.text.pretrained):
    raise ValueError('config.data.precomputed_text=True reads embeddings stored in records '
                     'by data/embed_captions.py: set config.data.records to that directory '
                     'and config.model.text.pretrained to the T5 that embedded them (sampling '
                     'encodes prompts with it).')


def _validate_stage(config) -> None:
  """What each training stage trains, and what it needs."""
  m, t = config.model, config.train
  if t.stage == 't2i' and m.temporal:
    raise ValueError('config.train.stage=t2i trains the image U-Net: set model.temporal=False.')
  if t.stage != 't2i' and not m.temporal:
    raise ValueError(f'config.train.stage={t.stage} trains a STUNet: set model.temporal=True.')
  if t.stage in ('stunet', 'conditional') and not t.init_from:
    raise ValueError(f'config.train.stage={t.stage} starts from another run: set '
                     f'config.train.init_from to its workdir or checkpoint (or use '
                     f'stage=scratch to train a STUNet from scratch).')
  if (t.stage == 'conditional') != bool(m.conditional):
    raise ValueError('config.train.stage=conditional trains the conditional STUNet and '
                     'only it: set config.model.conditional to match the stage.')
  if t.freeze_temporal and (t.freeze_spatial or not t.init_from or not m.temporal):
    raise ValueError('config.train.freeze_temporal=True trains only the spatial layers of a '
                     'STUNet given by config.train.init_from (stylized generation); it '
                     'excludes freeze_spatial.')
  if t.freeze_spatial and not t.init_from:
    raise ValueError('config.train.freeze_spatial=True needs config.train.init_from (the T2I '
                     'workdir or checkpoint whose spatial weights stay frozen).')


def _validate_kind(config) -> None:
  """The switches that make an SSR, a conditional or a cascade model agree."""
  m, d, t, cas = config.model, config.data, config.train, config.cascade
  if m.conditional and (m.lowres_size or not m.temporal):
    raise ValueError('config.model.conditional=True is a STUNet option: it cannot be an SSR '
                     'model (lowres_size > 0) or a T2I one (temporal=False).')
  if m.lowres_residual and not m.lowres_size:
    raise ValueError('config.model.lowres_residual=True is an SSR option: set '
                     'config.model.lowres_size > 0 as well, or leave it False.')
  if m.lowres_size:
    if not m.lowres_size < d.size:
      raise ValueError(f'config.model.lowres_size={m.lowres_size} must be below '
                       f'config.data.size={d.size} (the SSR upsamples to data.size).')
    if m.temporal and m.temporal_resample:
      raise ValueError('an SSR model (config.model.lowres_size > 0) keeps the frame rate: '
                       'set config.model.temporal_resample=False.')
    if d.size % m.lowres_size:
      raise ValueError(f'config.model.lowres_size={m.lowres_size} must divide '
                       f'config.data.size={d.size} (a whole upsampling factor).')
  if d.crop_size:
    step = d.size // m.lowres_size if m.lowres_size else 0
    levels = 2 ** (len(m.channel_mult) - 1)
    if not step or not levels * step <= d.crop_size < d.size or d.crop_size % (levels * step):
      raise ValueError(
          f'config.data.crop_size={d.crop_size}: training on crops is for SSR models '
          f'(model.lowres_size > 0), and a crop must be below config.data.size={d.size} and '
          f'a multiple of {levels * step or "the upsampling factor"} (the upsampling factor '
          f'times the U-Net\'s {levels}x downsampling), so that it covers whole low-res '
          f'pixels and halves evenly at every level.')
    if m.layout_basis:
      raise ValueError('config.data.crop_size needs a network without position: the layout '
                       'bias (config.model.layout_basis) spans the input, a crop in training '
                       'and the whole frame at sampling. Set one of them to 0.')
  if not cas.role:
    return
  if not m.temporal or m.lowres_size:
    raise ValueError('config.cascade.role is a base-STUNet option: not for T2I or SSR models.')
  if d.num_frames % cas.stride:
    raise ValueError(f'config.cascade.stride={cas.stride} must divide '
                     f'config.data.num_frames={d.num_frames}.')
  if cas.role == 'tsr':
    cascade.check_window(d.num_frames, cas.stride, cas.window)
  factor = unet.temporal_factor(m.channel_mult, m.temporal, m.temporal_resample)
  unet.check_frames(cascade.model_frames(config), factor, f'the {cas.role} model\'s clip',
                    'change config.cascade.stride or window')
  if (cas.role == 'tsr') != bool(m.conditional):
    raise ValueError('config.cascade.role=tsr is a conditional model (given its keyframes) '
                     'and keyframes is not: set config.model.conditional=True for tsr only.')
  del t


KINDS = ('t2i', 'stunet', 'ssr', 'conditional', 'keyframes', 'tsr')


def model_kind(config) -> str:
  """What a (validated) config's model is: one of KINDS. 't2i' makes single frames,
  'stunet' text-to-video clips, 'ssr' upsamples clips, 'conditional' fills in
  <video, mask> inputs, 'keyframes' and 'tsr' are the two stages of the cascade."""
  m = config.model
  if config.cascade.role:
    return config.cascade.role
  if not m.temporal:
    return 't2i'
  if m.lowres_size:
    return 'ssr'
  return 'conditional' if m.conditional else 'stunet'


# ---- a run's config on disk ----

def save(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes workdir/config.json (process 0 only)."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))


def run_dir(path: str) -> str:
  """A workdir from itself, its checkpoints/ folder or a checkpoints/<step> folder."""
  path = os.path.abspath(path.rstrip('/'))
  if os.path.basename(os.path.dirname(path)) == 'checkpoints' and os.path.basename(path).isdigit():
    path = os.path.dirname(path)
  return os.path.dirname(path) if os.path.basename(path) == 'checkpoints' else path


def load(workdir: str) -> ml_collections.ConfigDict:
  """The config a train.py workdir was run with, merged over today's defaults.

  workdir may also be its checkpoints/ folder or one step of it. Values written by
  older versions are brought up to date (a boolean ``model.remat``).
  """
  path = os.path.join(run_dir(workdir), CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: {workdir!r} is not a train.py workdir.')
  with open(path) as f:
    saved = _tuplify(json.load(f))
  remat = saved.get('model', {}).get('remat')
  if isinstance(remat, bool):  # older runs stored a bool
    saved['model']['remat'] = 'full' if remat else 'none'
  return ml_collections.ConfigDict(_merge(base_config().to_dict(), saved))


def _merge(base: dict, over: dict) -> dict:
  """``over`` merged into ``base``, recursively for dicts present in both."""
  out = dict(base)
  for k, v in over.items():
    out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
  return out


def _tuplify(d):
  """JSON lists back to tuples, as the configs write them."""
  if isinstance(d, dict):
    return {k: _tuplify(v) for k, v in d.items()}
  if isinstance(d, list):
    return tuple(_tuplify(v) for v in d)
  return d


def check_flag(flag: str, value, field: str) -> None:
  """An entry point's flag that sets config field ``field`` (e.g. --guidance for
  sample.guidance), checked against that field's range before anything is loaded."""
  if value is not None:
    low, high, what = RANGES[field]
    check_range(flag, value, low, high, what)
