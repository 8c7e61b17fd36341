"""Paper-scale STUNet configs (Lumiere's shapes; widths are ours, the paper gives none).

Variants (big_vision style, after a colon):
  configs/paper.py:model=base               the base STUNet: 80 frames x 128x128 (5 s at
                                            16 fps), spatial weights and the text encoder
                                            from --config.train.init_from (frozen), only
                                            the temporal layers train (the paper's setup)
  configs/paper.py:model=base,stage=scratch the same network with every weight trained
                                            (U-Net and text encoder): the worst case for
                                            memory, not something the paper does
  configs/paper.py:model=ssr                the spatial super-resolution model's shape:
                                            128 -> 1024 per frame on a window of frames
  configs/paper.py:model=ssr,window=8       ... on windows of 8 frames
  ...,text=encoder                          the frozen T5-XXL encoder runs inside the
                                            train step (the default with stage=stunet,
                                            text=precomputed, reads T5 embeddings stored
                                            with the clips)

Nothing here downloads anything: data.records, model.text.pretrained and
train.init_from are placeholders for video-caption records with stored T5 embeddings
(data/ingest.py, then data/embed_captions.py), a local T5 v1.1 XXL checkpoint (its
spiece.model is the tokenizer; sampling encodes prompts with it) and a T2I workdir at
these widths; with text=encoder, data.name, data.tokenizer and train.init_from are (a
tfds dataset under data.data_dir, T5's sentencepiece model, a T2I workdir whose frozen
encoder the step runs). They are meant for pods
(`python train.py --config=configs/paper.py:model=base --workdir=gs://...` on every
host); `benchmarks/paper_scale.py` compiles their train step for a large mesh of
fake CPU devices and prints per-device memory and FLOPs.

Parameter counts and the per-device memory of these configs' train steps are in
docs/scale.md, with the commands that measure them (tests/test_paper_config.py checks
the base U-Net's parameter count).
"""

from stunet import config as config_lib

# T5-XXL encoder's shape (Imagen's and so Lumiere's frozen text encoder): 24 layers of
# width 4096, 64 heads of 64, gated-GELU MLP of 10240, T5's 32128-token vocabulary,
# captions of up to 128 tokens. ~4.76B parameters, all frozen unless stage=scratch.
T5_XXL = dict(width=4096, num_layers=24, num_heads=64, mlp_dim=10240, vocab_size=32128)
T5_MAX_LEN = 128


def get_config(arg: str = 'model=base'):
  args = config_lib.parse_arg(arg, model='base', stage='stunet', window=16,
                              text='')
  model, stage, window, text = args['model'], args['stage'], args['window'], args['text']
  if model not in ('base', 'ssr'):
    raise ValueError(f'unknown model {model!r}; use model=base or model=ssr.')
  if stage not in ('stunet', 'scratch'):
    raise ValueError(f'unknown stage {stage!r}; use stage=stunet (temporal layers train, '
                     f'the rest frozen) or stage=scratch (every weight trains).')
  text = text or ('encoder' if stage == 'scratch' else 'precomputed')
  if text not in ('precomputed', 'encoder') or (text == 'precomputed' and stage == 'scratch'):
    raise ValueError(f'text={text!r}: use text=precomputed (T5 embeddings stored with the '
                     f'clips; not with stage=scratch, which trains the encoder) or '
                     f'text=encoder (the encoder runs in the train step).')
  config = config_lib.base_config()

  d = config.data
  d.name = 'webvid'                      # placeholder: a tfds video-caption dataset the
                                         # user prepared under data_dir (none downloads)
  d.data_dir = './tfds_data'             # where that dataset was prepared
  d.tokenizer = 't5/spiece.model'        # placeholder: T5's sentencepiece model (32128)
  d.max_text_len = T5_MAX_LEN            # T5 tokens per caption, EOS included
  d.num_shards = 0                       # one logical data shard per process

  m = config.model
  m.temporal = True
  m.dtype = 'bfloat16'                   # compute; parameters/optimizer stay float32
  m.remat = 'full'                       # keep only block inputs for the backward pass
  for k, v in T5_XXL.items():
    setattr(m.text, k, v)
  if text == 'precomputed':
    # The frozen T5-XXL (4.76B parameters, 4x the U-Net) out of the train step: its
    # embeddings are computed once per caption (data/embed_captions.py) and read with
    # the clips, so the step neither runs nor all-gathers it (docs/scale.md). Sampling
    # loads it from model.text.pretrained to encode prompts.
    d.precomputed_text = True
    d.records = './records'              # placeholder: ingest.py + embed_captions.py output
    m.text.pretrained = 't5/t5-v1_1-xxl'  # placeholder: local HF T5 v1.1 XXL checkpoint

  if model == 'base':
    d.num_frames = 80                    # the whole 5 s clip at 16 fps in one pass
    d.size = 128
    # Imagen's 2B base U-Net is channels 512, mult (1, 2, 3, 4), 3 ResBlocks, attention
    # at 32, 16 and 8 px of a 64 px image. Lumiere's base runs at 128 px, and 80 frames
    # halve four times to 5 (80 / 2^4), so we use 5 levels:
    # widths 256, 512, 768, 1024, 1024 at 128, 64, 32, 16, 8 px (80, 40, 20, 10, 5
    # frames). At 128 px the widths are half of Imagen's 512 so that the activations
    # of 80 full-resolution frames stay affordable; the U-Net comes to ~1.23B
    # parameters (Imagen's class), 0.28B of them the temporal layers.
    m.channels = 256
    m.channel_mult = (1, 2, 3, 4, 4)
    m.num_res_blocks = 3
    m.attn_levels = (2, 3, 4)            # self-attention at 32, 16, 8 px (as Imagen)
    m.cross_attn_levels = (2, 3, 4)      # cross-attention to T5 at the same levels
    m.num_heads = 16                     # head width 48 at 768, 64 at 1024 channels
    # Temporal attention: after every spatial attention block of the coarsest level
    # (8x8 px, 5 frames): 3 down + 2 middle + 4 up = 9 blocks of width 1024.
    m.num_temporal_attn = 1
    m.temporal_resample = True
  else:
    # SSR: 128 -> 1024 per frame. Memory allows only short windows (Lumiere
    # runs the SSR on overlapping windows, 2 frames of overlap, length not given): a
    # 1024x1024 frame at width 128 is 256 MiB of bfloat16 per activation, so a window
    # of 16 frames is 4 GiB per activation per clip, already more than the base model's
    # whole 80-frame clip at its top level (80 x 128^2 x 256 = 0.6 GiB). 16 frames is
    # 1 s at 16 fps, enough for the temporal convolutions and temporal attention to see
    # motion, and with an overlap of 2 tiles 80 frames in 6 windows (0, 14, ..., 64).
    # window=8 halves the activations (80 frames in 13 windows).
    d.num_frames = window
    d.size = 1024
    # Imagen's 1024 px SSR (Efficient U-Net): channels 128, mult (1, 2, 4, 8), no
    # self-attention at high resolution, cross-attention to the text only at the
    # lowest resolution; ~400M parameters. Here: widths 128, 256, 512, 1024 at 1024,
    # 512, 256, 128 px, 2 ResBlocks per level: 368M parameters.
    m.channels = 128
    m.channel_mult = (1, 2, 4, 8)
    m.num_res_blocks = 2
    m.attn_levels = ()                   # no spatial self-attention (16k pixels at 128 px)
    m.cross_attn_levels = (3,)           # cross-attention at 128 px only
    m.num_heads = 16                     # head width 64 at 1024 channels
    # No temporal down/upsampling: the SSR keeps the window's frame rate; temporal
    # convolutions at 1024..256 px and temporal attention at 128 px (the coarsest).
    m.temporal_resample = False
    m.num_temporal_attn = 1
    # The low-res clip (128 px, the base model's output) is upsampled and concatenated
    # to the noisy input, noise-augmented to a level that is a second conditioning
    # input (stunet/ssr.py). Sampling fuses windows overlapping by 2 (MultiDiffusion).
    m.lowres_size = 128
    config.sample.window = window
    config.sample.overlap = 2
    # Training on random 256-px crops of the 1024-px frames (Imagen trained its SR
    # models on crops): 1/16 of the activations, and the network is fully convolutional
    # (no spatial self-attention; cross-attention and temporal attention treat every
    # pixel alike), so it samples whole 1024-px frames. The low-res input of a crop is
    # the crop downsampled 8x (32 px), aligned with the 128-px frame on its pixel grid.
    d.crop_size = 256

  t = config.train
  t.stage = stage
  t.freeze_spatial = stage == 'stunet'
  # Placeholder: the T2I run (same widths, model.temporal=False) whose U-Net and text
  # encoder are inflated and frozen. It must exist before training starts.
  t.init_from = 'workdir/paper_t2i' if model == 'base' else 'workdir/paper_ssr_t2i'
  t.batch_size = 64                      # clips (base) or windows (ssr) per step (the
                                         # paper does not say), in 8 micro-batches: on 64
  t.grad_accum = 8                       # chips one clip per 8-chip context group (on
                                         # 256 chips: batch_size=256, the same per chip)
  t.num_steps = 500_000
  t.lr = 1e-4
  t.warmup_steps = 10_000
  t.schedule = 'cosine'
  t.weight_decay = 0.0
  t.grad_clip = 1.0
  t.ema_decay = 0.9999
  t.cfg_drop = 0.1                       # text dropped for 10% of clips (CFG)
  t.log_every = 100
  t.ckpt_every = 1000
  t.keep = 3

  # Each clip over the 8 chips of one node (the context axis: its frames in spatial
  # layers, its rows in temporal ones), parameters split over those 8 (FSDP inside the
  # node, over NVLink / ICI), nodes data-parallel (only the gradients' all-reduce crosses
  # nodes): the ICI/DCN split of maxtext. (1, -1, 1, 8) splits parameters over every
  # chip instead, and all-gathers them across nodes every micro-batch (docs/scale.md).
  config.mesh.shape = (-1, 1, 1, 8)

  config.sample.sampler = 'ddim'
  config.sample.num_steps = 64
  config.sample.guidance = 8.0           # Imagen Video used large guidance weights
  return config
