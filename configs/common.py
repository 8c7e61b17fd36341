"""Defaults shared by every config, the ``key=value`` variant parser and validation."""

import ml_collections


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
  # Records written by data/ingest.py (a directory of *.tfrecord shards + info.json);
  # when set they replace the tfds dataset `name`. Clips of num_frames frames start
  # at a random frame and take every k-th frame, k drawn from frame_strides (those
  # that fit the video).
  c.data.records = ''
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
  # The conditional STUNet (stunet/conditioning.py): its input is <noisy video, masked
  # conditioning video, mask> (7 channels) for image-to-video, in/outpainting and
  # cinemagraphs; trained by stage=conditional from a text-to-video run.
  c.model.conditional = False
  # > 0: the STUNet adds to its output a smooth space-time pattern (this many cosines
  # per axis) chosen by the timestep + text embedding (stunet.layers.LayoutBias).
  c.model.layout_basis = 0
  # Row, column (and frame) coordinates at the input, through zero-initialised 1x1
  # projections (stunet.unet.UNet._coordinates): absolute position from step 0.
  c.model.coord_channels = False
  # The keyframe + temporal super-resolution cascade that the paper argues against
  # (stunet/cascade.py; README "Reproducing the paper"). role '': the STUNet, every
  # frame. 'keyframes': the model sees every stride-th frame of each clip. 'tsr': it
  # sees windows of `window` frames starting at multiples of stride, given the frames
  # at multiples of stride (a conditional model: model.conditional=True).
  c.cascade = ml_collections.ConfigDict(dict(role='', stride=4, window=8))
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

  c.train = ml_collections.ConfigDict()
  c.train.stage = 'stunet'               # 't2i' | 'stunet' | 'scratch' | 'conditional'
  c.train.batch_size = 8                 # global batch: clips (STUNet) or frames (t2i)
  c.train.grad_accum = 1                 # micro-batches per step (batch_size / k each)
  c.train.frames_per_clip = 4            # t2i stage: random frames taken from each clip
  c.train.num_steps = 1000               # optimizer steps
  c.train.lr = 1e-3                      # peak learning rate
  c.train.warmup_steps = 100             # linear warmup steps
  c.train.schedule = 'constant'          # after warmup: 'constant' or 'cosine'
  c.train.weight_decay = 0.0             # AdamW weight decay
  c.train.grad_clip = 1.0                # global-norm gradient clipping (0 = off)
  c.train.ema_decay = 0.999              # EMA of weights, used for sampling (0 = raw)
  # Noise levels of training: t = 1 - (1 - u)^t_power, u uniform; > 1 trains more at
  # high noise, where the motion of a clip is decided (README, "Motion").
  c.train.t_power = 1.0
  c.train.cfg_drop = 0.1                 # probability of dropping the text (CFG)
  c.train.lowres_aug_max = 0.4           # SSR: low-res input noised to t ~ U[0, this]
  c.train.freeze_spatial = False         # train only temporal layers (STUNet stage)
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
  # clip's frames in spatial layers, its rows in temporal ones (stunet.layers.split_clip),
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
  c.sample.sampler = 'ddim'              # 'ddim' or 'ddpm'
  c.sample.threshold = 0.995             # dynamic-thresholding percentile (0: clip)
  # Clips longer than `window` frames (0: the trained data.num_frames) are denoised in
  # windows overlapping by `overlap` frames, fused at every step (MultiDiffusion).
  c.sample.window = 0
  c.sample.overlap = 2                   # the paper's overlap
  c.sample.weighting = 'uniform'         # per-frame fusion weights: uniform | ramp
  c.sample.window_batch = 1              # windows per denoiser call (memory vs speed)
  c.sample.lowres_aug = 0.1              # SSR: fixed noise level of the low-res input
  return c


# Enumerated fields and their values. configs/ imports nothing of ours, so these copy
# the constants of the modules that own them; tests/test_config.py pins them equal.
CHOICES = {
    'model.remat': ('none', 'full', 'dots', 'dots_no_batch'),  # stunet.unet.REMAT_POLICIES
    'model.temporal_cond': ('none', 'film', 'film_xattn'),     # stunet.unet.TEMPORAL_COND
    'train.schedule': ('constant', 'cosine'),                   # stunet.train_lib.SCHEDULES
    'sample.sampler': ('ddim', 'ddpm'),                         # stunet.sampling.SAMPLERS
}


def validate(config) -> None:
  """Refuses an inconsistent config with a message that says what to change."""
  m, d, t = config.model, config.data, config.train
  levels = len(m.channel_mult)
  if m.temporal and m.temporal_resample:
    factor = 2 ** (levels - 1)
    if d.num_frames % factor:
      raise ValueError(
          f'config.data.num_frames={d.num_frames} is not divisible by {factor}: the '
          f'STUNet halves time at each of its {levels - 1} resolution changes. Use a '
          f'multiple of {factor}, or fewer levels in config.model.channel_mult.')
  if d.size % 2 ** (levels - 1):
    raise ValueError(f'config.data.size={d.size} is not divisible by {2 ** (levels - 1)} '
                     f'({levels} levels of spatial halving).')
  for lvl in tuple(m.attn_levels) + tuple(m.cross_attn_levels):
    if not 0 <= lvl < levels:
      raise ValueError(f'attention level {lvl} is outside 0..{levels - 1}.')
  for c in {m.channels * k for k in m.channel_mult}:
    if c % m.num_heads:
      raise ValueError(f'width {c} is not divisible by config.model.num_heads={m.num_heads}.')
  if t.stage not in ('t2i', 'stunet', 'scratch', 'conditional'):
    raise ValueError(f'config.train.stage={t.stage!r}: use t2i, stunet, scratch or '
                     f'conditional.')
  if t.stage == 't2i' and m.temporal:
    raise ValueError('config.train.stage=t2i trains the image U-Net: set model.temporal=False.')
  if t.stage != 't2i' and not m.temporal:
    raise ValueError(f'config.train.stage={t.stage} trains a STUNet: set model.temporal=True.')
  if t.stage == 'stunet' and not t.init_from:
    raise ValueError('config.train.stage=stunet starts from a T2I (or STUNet) run: set '
                     'config.train.init_from to its workdir or checkpoint (or use '
                     'stage=scratch to train a STUNet from scratch).')
  if (t.stage == 'conditional') != bool(m.get('conditional', False)):
    raise ValueError('config.train.stage=conditional trains the conditional STUNet and '
                     'only it: set config.model.conditional to match the stage.')
  if t.stage == 'conditional' and not t.init_from:
    raise ValueError('config.train.stage=conditional fine-tunes a text-to-video STUNet: set '
                     'config.train.init_from to its workdir (e.g. pretrained/stunet_tiny).')
  if m.get('conditional', False) and (m.lowres_size or not m.temporal):
    raise ValueError('config.model.conditional=True is a STUNet option: it cannot be an SSR '
                     'model (lowres_size > 0) or a T2I one (temporal=False).')
  mix = tuple(t.get('condition_mix', (1.,)))
  if min(mix) < 0 or sum(mix) <= 0 or (m.get('conditional', False) and len(mix) != 5):
    raise ValueError(f'config.train.condition_mix={mix}: 5 non-negative shares (unconditional, '
                     f'image_to_video, inpainting, outpainting, cinemagraph), not all 0.')
  if t.get('freeze_temporal', False) and (t.freeze_spatial or not t.init_from
                                          or not m.temporal):
    raise ValueError('config.train.freeze_temporal=True trains only the spatial layers of a '
                     'STUNet given by config.train.init_from (stylized generation); it '
                     'excludes freeze_spatial.')
  if t.freeze_spatial and not t.init_from:
    raise ValueError('config.train.freeze_spatial=True needs config.train.init_from (the T2I '
                     'workdir or checkpoint whose spatial weights stay frozen).')
  if m.dtype not in ('float32', 'bfloat16', 'float16'):
    raise ValueError(f'config.model.dtype={m.dtype!r}: use float32, bfloat16 or float16.')
  if m.temporal_resample_init not in ('identity', 'linear', 'he'):
    raise ValueError(f'config.model.temporal_resample_init={m.temporal_resample_init!r}: use '
                     f'identity, linear or he.')
  if m.layout_basis < 0:
    raise ValueError(f'config.model.layout_basis={m.layout_basis}: use 0 (off) or more.')
  for field, allowed in CHOICES.items():
    section, name = field.split('.')
    if config[section][name] not in allowed:
      raise ValueError(f'config.{field}={config[section][name]!r}: use one of '
                       f'{", ".join(allowed)}.')
  if t.stage == 't2i' and (t.frames_per_clip < 1 or t.batch_size % t.frames_per_clip):
    raise ValueError(f'config.train.batch_size={t.batch_size} frames must be whole clips of '
                     f'config.train.frames_per_clip={t.frames_per_clip} frames (t2i stage).')
  if d.get('num_shards', 0) < 0:
    raise ValueError(f'config.data.num_shards={d.num_shards}: use 0 (one per process) or more.')
  if config.sample.num_steps < 1 or config.sample.guidance < 0:
    raise ValueError(f'config.sample.num_steps={config.sample.num_steps} must be >= 1 and '
                     f'config.sample.guidance={config.sample.guidance} >= 0.')
  if t.nan_policy not in ('skip', 'stop'):
    raise ValueError(f'config.train.nan_policy={t.nan_policy!r}: use skip or stop.')
  examples = t.batch_size
  if t.grad_accum < 1 or examples % t.grad_accum:
    raise ValueError(f'config.train.grad_accum={t.grad_accum} must be >= 1 and divide '
                     f'config.train.batch_size={t.batch_size}.')
  _validate_cascade(config)
  if m.lowres_size:
    if not 0 < m.lowres_size < d.size:
      raise ValueError(f'config.model.lowres_size={m.lowres_size} must be below '
                       f'config.data.size={d.size} (the SSR upsamples to data.size).')
    if m.temporal and m.temporal_resample:
      raise ValueError('an SSR model (config.model.lowres_size > 0) keeps the frame rate: '
                       'set config.model.temporal_resample=False.')
    if not 0. <= t.lowres_aug_max <= 1.:
      raise ValueError(f'config.train.lowres_aug_max={t.lowres_aug_max} must be in [0, 1].')
  sc = config.sample
  if sc.window < 0 or not 0 <= sc.overlap < (sc.window or d.num_frames):
    raise ValueError(f'config.sample.window={sc.window}, overlap={sc.overlap}: need '
                     f'window >= 0 (0 = data.num_frames) and 0 <= overlap < window.')
  if not 0. <= sc.threshold < 1.:
    raise ValueError(f'config.sample.threshold={sc.threshold}: a percentile in (0, 1) for '
                     f'dynamic thresholding, or 0 for a plain clip to [-1, 1].')
  if sc.weighting not in ('uniform', 'ramp'):
    raise ValueError(f'config.sample.weighting={sc.weighting!r}: use uniform or ramp.')
  if t.get('preemption_check_every', 1) < 1:
    raise ValueError(f'config.train.preemption_check_every={t.preemption_check_every} must '
                     f'be >= 1.')
  if t.get('t_power', 1.) <= 0:
    raise ValueError(f'config.train.t_power={t.t_power} must be > 0 (1 = uniform noise levels).')
  if not 0. <= t.cfg_drop < 1.:
    raise ValueError(f'config.train.cfg_drop={t.cfg_drop} must be in [0, 1).')


def _validate_cascade(config) -> None:
  cas, m, d = config.get('cascade'), config.model, config.data
  if not cas or not cas.role:
    return
  if cas.role not in ('keyframes', 'tsr'):
    raise ValueError(f"config.cascade.role={cas.role!r}: use '' (the STUNet), keyframes or tsr.")
  if not m.temporal or m.lowres_size:
    raise ValueError('config.cascade.role is a base-STUNet option: not for T2I or SSR models.')
  if cas.stride < 2 or d.num_frames % cas.stride:
    raise ValueError(f'config.cascade.stride={cas.stride} must be >= 2 and divide '
                     f'config.data.num_frames={d.num_frames}.')
  factor = 2 ** (len(m.channel_mult) - 1) if m.temporal_resample else 1
  frames = d.num_frames // cas.stride if cas.role == 'keyframes' else cas.window
  if cas.role == 'tsr' and (cas.window % cas.stride or not cas.stride < cas.window
                            <= d.num_frames):
    raise ValueError(f'config.cascade.window={cas.window} must be a multiple of '
                     f'config.cascade.stride={cas.stride}, more than it and at most '
                     f'config.data.num_frames={d.num_frames}.')
  if frames % factor:
    raise ValueError(f'the {cas.role} model sees {frames} frames, not a multiple of {factor} '
                     f'(the STUNet halves time {factor.bit_length() - 1} times): change '
                     f'config.cascade.stride or window.')
  if (cas.role == 'tsr') != bool(m.get('conditional', False)):
    raise ValueError('config.cascade.role=tsr is a conditional model (given its keyframes) '
                     'and keyframes is not: set config.model.conditional=True for tsr only.')
