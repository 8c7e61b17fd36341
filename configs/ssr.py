"""Tiny spatial super-resolution (SSR) model on the embedded shapes dataset: 32 -> 64 px.

It upsamples configs/tiny.py's 32x32 clips to 64x64, trained on windows of 8 frames
(the paper's SSR sees short windows; sampling fuses overlapping windows of 8 with
MultiDiffusion, so clips of any length work). Same U-Net code as the base model,
with temporal convolutions and attention but no temporal down/upsampling, the low-res
clip concatenated to the input, noise-conditioning augmentation, and the diffusion run
on the residual over the low-res clip's bilinear upsampling (stunet/ssr.py).

Variants (as configs/tiny.py):
  configs/ssr.py:stage=scratch   every weight trained from scratch (default)
  configs/ssr.py:stage=t2i       the per-frame image SSR
  configs/ssr.py:stage=stunet    inflated from --config.train.init_from, spatial
                                 weights frozen (Lumiere's recipe)
"""

from stunet import config as config_lib


def get_config(arg: str = 'stage=scratch'):
  stage = config_lib.parse_arg(arg, stage='scratch')['stage']
  if stage not in ('t2i', 'stunet', 'scratch'):
    raise ValueError(f'unknown stage {stage!r}; use stage=t2i, stage=stunet or stage=scratch.')
  config = config_lib.base_config()

  d = config.data
  d.num_frames = 8                       # training windows of 8 frames
  d.size = 64                            # output frames 64x64 ...
  d.max_text_len = 8

  m = config.model
  m.lowres_size = 32                     # ... from 32x32 (configs/tiny.py's output)
  m.channels = 16                        # widths 16, 32, 64 at 64, 32, 16 px
  m.channel_mult = (1, 2, 4)
  m.attn_levels = ()                     # no spatial self-attention (as Imagen's SR)
  m.cross_attn_levels = (2,)             # cross-attention to the text at 16 px
  m.temporal = stage != 't2i'
  m.temporal_resample = False            # SSR: keep every frame at every level
  # Diffuse the residual over the bilinearly upsampled low-res clip (stunet/ssr.py):
  # where the clip is flat the network has nothing to add but the noise to recognise.
  m.lowres_residual = True
  # 90% of the noise's variance common to every frame of a clip (PYoCo's mixed noise
  # prior), in training and sampling: what the SSR leaves of the noise is then nearly
  # the same in every frame instead of a flicker (docs/superres_and_long_clips.md).
  m.shared_noise = 0.9

  t = config.train
  t.stage = stage
  t.freeze_spatial = stage == 'stunet'
  if stage == 't2i':
    t.batch_size = 16                    # frames: 4 clips x 4 random frames
  else:
    t.batch_size = 4                     # windows of 8 frames
  t.num_steps = 400
  t.ckpt_every = 400
  t.ema_decay = 0.995
  t.lowres_aug_max = 0.4

  s = config.sample
  # DDPM at 8 steps, quadratic step times (the last step starts at t = 1/64 instead of
  # 1/8): the cheapest setting whose cascade FVD matches DDPM-24's within noise; the
  # SDE DPM-Solver at 8 steps leaves a grain on the flat colours (docs/sampling.md).
  s.sampler = 'ddpm'
  s.num_steps = 8
  s.spacing = 'quadratic'
  s.guidance = 1.0                       # the low-res clip already fixes the content
  # Plain clipping: dynamic thresholding rescales a whole clip when a few pixels of the
  # black background overshoot -1, and the SSR's error compounds over the steps (held-
  # out clips, 16 DDIM steps: mean abs error 0.48 with p=0.995, 0.07 clipped).
  s.threshold = 0.
  s.window = 8                           # MultiDiffusion windows of the trained length
  s.overlap = 2                          # the paper's overlap
  s.lowres_aug = 0.1
  return config
