"""Tiny STUNet on the embedded shapes dataset: trains on a 2-core CPU in minutes.

Variants (big_vision style, after a colon):
  configs/tiny.py:stage=t2i       the text-to-image U-Net on single frames
  configs/tiny.py:stage=stunet    the STUNet, inflated from the shipped T2I model
                                  (pretrained/t2i_tiny_7200) or the T2I run given by
                                  --config.train.init_from; every weight trains (the
                                  paper's frozen spatial weights:
                                  --config.train.freeze_spatial=True)
  configs/tiny.py:stage=scratch   the STUNet with every weight trained from scratch
  configs/tiny.py:stage=conditional   the conditional STUNet (image-to-video,
                                  in/outpainting, cinemagraphs), fine-tuned from the
                                  shipped model (pretrained/stunet_tiny) on random masks
  configs/tiny.py:stage=style     the shipped model's spatial weights fine-tuned on the
                                  outlined-shapes style (data.style='outline'), its
                                  temporal layers frozen (sample.py --style)
  configs/tiny.py:stage=stationary   the shipped model fine-tuned on the stationary
                                  data (motion at a rate per frame, random 16-frame
                                  windows of 64-frame clips): long videos whose motion
                                  goes on across windows (docs/long_videos.md)
  configs/tiny.py:stage=keyframes the keyframe model of the keyframe + TSR cascade
                                  (every 4th frame of each clip; docs/reproducing.md),
                                  from --config.train.init_from
  configs/tiny.py:stage=tsr       its temporal super-resolution model: 8-frame windows
                                  given the frames at 0 and 4, from init_from
Fields not set here keep the defaults of stunet/config.py.
"""

from stunet import config as config_lib


def get_config(arg: str = 'stage=stunet'):
  stage = config_lib.parse_arg(arg, stage='stunet')['stage']
  stages = ('t2i', 'stunet', 'scratch', 'conditional', 'style', 'stationary', 'keyframes',
            'tsr')
  if stage not in stages:
    raise ValueError(f'unknown stage {stage!r}; use stage= one of {", ".join(stages)}.')
  config = config_lib.base_config()

  config.data.num_frames = 16            # 16 frames of 32x32: 8 and 4 at the coarser levels
  config.data.size = 32
  config.data.max_text_len = 8           # the longest caption is 7 words + EOS

  m = config.model
  m.channels = 16                        # widths 16, 32, 64 at 32, 16, 8 px
  m.channel_mult = (1, 2, 4)
  m.attn_levels = (2,)                   # attention only at 8x8 (cheap on a CPU)
  m.cross_attn_levels = (2,)
  m.temporal = stage != 't2i'
  # Linear-interpolation init of the temporal resampling: with the paper's frame
  # repetition the tiny model's clips stay in blocks of 4 identical frames (its
  # coarsest level's 4 frames, repeated) for a long time (docs/choices.md).
  m.temporal_resample_init = 'linear'
  if stage in ('t2i', 'stunet'):
    # What makes the prompted motion learnable in minutes (docs/choices.md, "Motion in
    # minutes"): a text encoder left at its random init, which tells every word apart
    # (a T2I stage teaches it single frames, where the motion words carry nothing), and
    # absolute position at the input (row, column and frame coordinates).
    m.coord_channels = True
    config.train.freeze_text = True

  t = config.train
  t.stage = {'style': 'stunet', 'stationary': 'stunet', 'keyframes': 'stunet',
             'tsr': 'conditional'}.get(stage, stage)
  # At this scale the whole network fine-tuned on clips learns motion sooner than the
  # temporal layers alone on a frozen 600-step image model (docs/choices.md).
  t.freeze_spatial = False
  t.ckpt_every = 400
  if stage == 't2i':
    t.batch_size, t.num_steps = 32, 2400  # frames: 8 clips x 4 random frames
    t.schedule = 'cosine'                 # pretrained/t2i_tiny; t2i_tiny_7200 trains it on
    t.ckpt_every = 600
  else:
    t.batch_size, t.num_steps = 4, 400    # clips of 16 frames
  if stage == 'stunet':
    # Lumiere inflates a pretrained T2I model: by default the shipped one, the recipe
    # above and 4800 more steps at a constant 3e-4 (docs/models.md), so that the quick
    # start's minutes go to video; its shapes are the ones the clips inherit.
    t.init_from = 'pretrained/t2i_tiny_7200'
    t.num_steps = 800
    # The caption's mean clip one linear map away from the text (the layout bias), and
    # more of each batch at the high noise levels where a clip's motion is decided:
    # t = 1 - (1 - u)^3, 53% of it above t = 0.85 (more motion than t_power=2 on three
    # training seeds and three prompt sets; docs/choices.md).
    m.layout_basis = 6
    t.t_power = 3.
    # The inflated image network's weights at a tenth of the temporal layers' learning
    # rate (the paper freezes them): more of the T2I model's shapes kept and less
    # flicker, on two training seeds (docs/choices.md).
    t.spatial_lr_scale = 0.1
    # The learning rate decayed to 0 over the run: less flicker on two training seeds
    # and two sets of prompts, and no less motion (docs/choices.md).
    t.schedule = 'cosine'
  t.ema_decay = 0.995                    # short runs: a short average

  if stage in ('conditional', 'style', 'stationary'):
    # Fine-tunes of the shipped model (docs/models.md): its architecture
    # (the layout bias) and its last recipe (constant lr 3e-4, t_power 2).
    m.layout_basis = 6
    t.init_from = 'pretrained/stunet_tiny'
    t.lr, t.t_power, t.ema_decay = 3e-4, 2., 0.999
    t.ckpt_every = 500
    m.conditional = stage == 'conditional'
    t.num_steps = {'conditional': 3000, 'style': 1500, 'stationary': 2000}[stage]
    if stage == 'style':
      config.data.style = 'outline'
      t.freeze_temporal = True
    if stage == 'stationary':
      config.data.stationary_frames = 64

  if stage in ('keyframes', 'tsr'):  # 4 keyframes; TSR windows [0, 8), [4, 12), [8, 16)
    config.cascade.role, config.cascade.stride, config.cascade.window = stage, 4, 8
    m.conditional = stage == 'tsr'

  # A stochastic sampler: ancestral sampling gives cleaner, more coherent clips than
  # DDIM for these models (docs/choices.md). Its second-order multistep form at 12
  # steps matches DDPM-24's accuracies, not its FVD (docs/sampling.md: the shipped
  # model's config samples with DDPM-24), and the quick start's model moves more with
  # it (docs/models.md#the-quick-starts-model).
  config.sample.sampler = 'dpm++2m-sde'
  config.sample.num_steps = 12
  # A plain clip of x_hat: dynamic thresholding divides the whole clip by s > 1 when
  # a few pixels overshoot, which lifts the black background to grey.
  config.sample.threshold = 0.
  return config
