"""Samples videos from a trained model, or from the base -> SSR cascade.

  python sample.py --prompt="a red square moves left" --output=samples/red_square.mp4
  python sample.py --workdir=workdir/stunet --prompt="a red square moves left" \
      --output=samples/red_square.mp4
  python sample.py --workdir=workdir/stunet --ssr_workdir=workdir/ssr \
      --prompt="a red square moves left" --output=samples/red_square.mp4
Several --prompt flags give several videos (output name gets _0, _1, ...). With an
SSR model the base model's clip is written next to the high-res one (name_lowres.mp4).
Clips longer than a model's window (--frames, or the low-res clip for the SSR) are
made of overlapping windows fused at every step (MultiDiffusion).

Applications (README, "Applications"). Video-to-video editing (SDEdit):
--video=clip.mp4 --strength=0.5 noises the clip to t = 0.5 and denoises it with the
prompt (0 keeps it, 1 ignores it):
  python sample.py --video=samples/red_square.mp4 --strength=0.85 \
      --prompt="a blue square moves left" --output=samples/blue_square.mp4
With the conditional model (pretrained/stunet_tiny_conditional, the default for these):
  image-to-video   --image=frame.png
  inpainting       --video=clip.mp4 --box=8,8,24,24 (or --mask=mask.png, white = generate)
  outpainting      --video=clip.mp4 --box=8,8,24,24 --outpaint (the box is what is kept)
  cinemagraph      --image=frame.png --cinemagraph --box=... (only the box moves)
Stylized generation: --style=pretrained/style_outline --style_alpha=1 mixes the
style's spatial weights into the model's, W = alpha W_style + (1 - alpha) W.
"""

import os
import sys
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# TensorFlow (the input pipeline only) prints a oneDNN notice on import, past the level.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
import numpy as np

from configs import common
from stunet import checkpoints
from stunet import cli
from stunet import conditioning
from stunet import editing
from stunet import sampling
from stunet import sharding
from stunet import train_lib
from stunet import video_io

_WORKDIR = flags.DEFINE_string('workdir', None, 'train.py workdir (latest checkpoint); '
                               'default: the shipped model, pretrained/stunet_tiny.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None,
                                  'A checkpoint folder, workdir/checkpoints/<step>.')
_SSR_WORKDIR = flags.DEFINE_string('ssr_workdir', None,
                                   'An SSR model\'s train.py workdir: upsample the base '
                                   'model\'s videos with it (the cascade).')
_SSR_CHECKPOINT = flags.DEFINE_string('ssr_checkpoint', None,
                                      'An SSR checkpoint folder, ssr_workdir/checkpoints/<step>.')
_FRAMES = flags.DEFINE_integer('frames', None, 'Frames of the base clip (default: the trained '
                               'length; longer clips use MultiDiffusion windows).')
_WINDOW = flags.DEFINE_integer('window', None, 'SSR window length in frames (default: its '
                               'config.sample.window); without an SSR, the base model\'s.')
_OVERLAP = flags.DEFINE_integer('overlap', None, 'Frames shared by neighbouring windows '
                                '(default: config.sample.overlap, 2).')
_PROMPT = flags.DEFINE_multi_string('prompt', None, 'Text prompt; repeat for several.')
_NUM_STEPS = flags.DEFINE_integer('num_steps', None, 'Denoising steps (default: config).')
_GUIDANCE = flags.DEFINE_float('guidance', None, 'CFG weight w (default: config).')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed: same seed, same video.')
_SAMPLER = flags.DEFINE_enum('sampler', None, list(sampling.SAMPLERS), 'default: config.')
_OUTPUT = flags.DEFINE_multi_string('output', ['samples/sample.mp4'],
                                    '.mp4 or .gif path; repeat to write several formats.')
_FPS = flags.DEFINE_integer('fps', 8, 'Frames per second of the written file; an input '
                           '--video at another rate is resampled to it.')
_SCALE = flags.DEFINE_integer('scale', 4, 'Nearest-neighbour enlargement for viewing.')
_VIDEO = flags.DEFINE_string('video', None, 'A video (mp4, gif, ...) to edit with the prompt '
                             '(SDEdit, with --strength) or to fill in (with --mask/--box); '
                             'resized to the model\'s frame size.')
_STRENGTH = flags.DEFINE_float('strength', None, 'With --video: how much to change it, in '
                               '[0, 1] (the noise level it is denoised from).')
_IMAGE = flags.DEFINE_string('image', None, 'An image (PNG, JPEG) to animate: it is frame 0 '
                             '(image-to-video; with --cinemagraph only a region moves).')
_MASK = flags.DEFINE_string('mask', None, 'A PNG of the frame size, white = the region to '
                            'generate (--video: inpainting; --cinemagraph: what moves).')
_BOX = flags.DEFINE_list('box', None, 'x0,y0,x1,y1 in pixels (x1, y1 excluded): the region '
                         'to generate, instead of --mask.')
_OUTPAINT = flags.DEFINE_bool('outpaint', False, 'With --video and --mask/--box: generate '
                              'outside the region and keep it (outpainting).')
_CINEMAGRAPH = flags.DEFINE_bool('cinemagraph', False, 'With --image and --mask/--box: keep '
                                 'the image still and animate only the region.')
_MESH = flags.DEFINE_list('mesh', None, 'Device mesh to sample on, sizes along (data, fsdp, '
                          'tensor, context), -1 fills, e.g. 2,1,1,4: prompts (and '
                          'MultiDiffusion windows) over data x fsdp, each clip over context '
                          '(default: the workdir\'s config.mesh).')
_STYLE = flags.DEFINE_string('style', None, 'A style fine-tune\'s workdir '
                             '(configs/tiny.py:stage=style; shipped: '
                             'pretrained/style_outline): its spatial weights are mixed in.')
_STYLE_ALPHA = flags.DEFINE_float('style_alpha', 1., 'With --style: W = alpha W_style + '
                                  '(1 - alpha) W, alpha in [0, 1] (the shipped style shows '
                                  'at 1, README "Applications").')
flags.mark_flags_as_required(['prompt'])


def _locate(workdir, checkpoint, prefix='', conditional=False) -> tuple[str, int | None]:
  if not prefix and not workdir.value and not checkpoint.value:  # a shipped model
    return checkpoints.default_workdir(checkpoints.PRETRAINED_CONDITIONAL if conditional
                                       else checkpoints.PRETRAINED), None
  if bool(workdir.value) == bool(checkpoint.value):
    raise app.UsageError(f'pass exactly one of --{prefix}workdir or --{prefix}checkpoint.')
  if workdir.value:
    return workdir.value, None
  path = os.path.abspath(checkpoint.value.rstrip('/'))
  step = os.path.basename(path)
  if not step.isdigit():
    raise app.UsageError(f'--{prefix}checkpoint={checkpoint.value} should end in a step '
                         f'number (workdir/checkpoints/<step>); use --{prefix}workdir for '
                         f'the latest.')
  return os.path.dirname(os.path.dirname(path)), int(step)


def _report(stage: str, gen, videos) -> None:
  t = gen.last_times
  print(f'{stage}: compile {t["compile_s"]:.1f}s, sampling {t["sample_s"]:.1f}s '
        f'({t["per_step_s"] * 1000:.0f} ms/step, {t["windows"]} window(s)) for '
        f'{len(videos)} video(s) of {"x".join(map(str, videos.shape[1:4]))}')


def main(argv):
  try:
    _main(argv)
  except (ValueError, FileNotFoundError) as e:  # bad flags for this model, missing files
    raise app.UsageError(str(e)) from e


def _mesh_shape():
  """--mesh as a tuple of ints checked against the devices, or None (the config's)."""
  if _MESH.value is None:
    return None
  try:
    shape = tuple(int(x) for x in _MESH.value)
    sharding.mesh_shape(shape, jax.device_count(), 4)
  except ValueError as e:
    raise app.UsageError(f'--mesh={",".join(_MESH.value)}: {e} Give up to 4 whole '
                         f'numbers (data, fsdp, tensor, context).') from e
  return shape


def _check_flags() -> str:
  """Refuses bad values before anything is loaded or compiled; returns the application
  the flags ask for (``_mode``)."""
  for flag, low in ((_NUM_STEPS, 1), (_FRAMES, 1), (_WINDOW, 1), (_OVERLAP, 0), (_FPS, 1),
                    (_SCALE, 1)):
    if flag.value is not None and flag.value < low:
      raise app.UsageError(f'--{flag.name}={flag.value}: must be at least {low}.')
  if _GUIDANCE.value is not None and _GUIDANCE.value < 0:
    raise app.UsageError(f'--guidance={_GUIDANCE.value}: must be >= 0 (0 is plain '
                         f'conditional sampling; a negative weight steers away from the '
                         f'prompt).')
  mode = _mode()
  if _STRENGTH.value is not None:
    try:
      editing.check_strength(_STRENGTH.value)
    except ValueError as e:
      raise app.UsageError(f'--strength={_STRENGTH.value}: {e}') from e
  for flag in (_VIDEO, _IMAGE, _MASK):
    if flag.value is not None and not os.path.isfile(flag.value):
      raise app.UsageError(f'--{flag.name}={flag.value}: no such file.')
  if _BOX.value is not None:
    try:
      box = [int(v) for v in _BOX.value]
    except ValueError:
      box = []
    if len(box) != 4:
      raise app.UsageError(f'--box={",".join(_BOX.value)}: give 4 whole numbers of pixels, '
                           f'x0,y0,x1,y1 (x1, y1 excluded).')
  if _STYLE.value is not None:
    if mode not in ('text-to-video', 'editing'):
      raise app.UsageError(f'--style works with text-to-video and editing (the style '
                           f'weights were fine-tuned from the text-to-video model), not '
                           f'with {mode}.')
    try:
      editing.check_alpha(_STYLE_ALPHA.value)
    except ValueError as e:
      raise app.UsageError(f'--style_alpha={_STYLE_ALPHA.value}: {e}') from e
  for output in _OUTPUT.value:
    ext = os.path.splitext(output)[1].lower()
    if ext not in ('.mp4', '.gif'):
      raise app.UsageError(f'--output={output}: unknown video extension {ext!r}; use .mp4 '
                           f'or .gif.')
    # Tried, not predicted (os.access says yes to root everywhere, /proc included): the
    # folder is made now and a scratch file written in it, before anything compiles.
    folder = os.path.dirname(os.path.abspath(output))
    try:
      os.makedirs(folder, exist_ok=True)
      with tempfile.TemporaryFile(dir=folder):
        pass
    except OSError as e:
      raise app.UsageError(f'--output={output}: cannot write in {folder} '
                           f'({e.strerror or e}); choose another folder.') from e
  return mode


CONDITIONAL_MODES = ('image-to-video', 'inpainting', 'outpainting', 'cinemagraph')


def _mode() -> str:
  """The application the flags ask for (refusing combinations that mean nothing)."""
  region = _MASK.value is not None or _BOX.value is not None
  def refuse(message):
    raise app.UsageError(message)
  if _MASK.value is not None and _BOX.value is not None:
    refuse('pass --mask or --box, not both: each gives the region to generate.')
  if _IMAGE.value is not None and _VIDEO.value is not None:
    refuse('--image animates an image, --video edits or fills a clip: pass one of them.')
  if _CINEMAGRAPH.value and (_IMAGE.value is None or not region):
    refuse('--cinemagraph needs --image and the region that moves (--mask or --box).')
  if _OUTPAINT.value and (_VIDEO.value is None or not region):
    refuse('--outpaint needs --video and the region to keep (--mask or --box).')
  if _VIDEO.value is not None:
    if region and _STRENGTH.value is not None:
      refuse('--strength edits the whole clip and --mask/--box fill a region of it: pass '
             'one of them.')
    if region:
      return 'outpainting' if _OUTPAINT.value else 'inpainting'
    if _STRENGTH.value is None:
      refuse('--video needs --strength (editing: --video=clip.mp4 --strength=0.5) or '
             '--mask/--box (inpainting, outpainting).')
    return 'editing'
  if _STRENGTH.value is not None:
    refuse('--strength needs --video, the clip to edit: --video=clip.mp4 --strength=0.5.')
  if _IMAGE.value is not None:
    if region and not _CINEMAGRAPH.value:
      refuse('--mask/--box with --image: add --cinemagraph to animate only that region.')
    return 'cinemagraph' if _CINEMAGRAPH.value else 'image-to-video'
  if region:
    refuse('--mask/--box need --video (inpainting, outpainting) or --image --cinemagraph.')
  return 'text-to-video'


def _conditioning(mode: str, config):
  """(C [t, h, w, 3], M [t, h, w, 1]) for a conditional mode, from the files given."""
  d = config.data
  frames = _FRAMES.value or d.num_frames
  region = None
  if _MASK.value is not None:
    region = video_io.load_mask(_MASK.value, d.size)
  elif _BOX.value is not None:
    region = conditioning.box_region(d.size, [int(v) for v in _BOX.value])
  if region is not None:  # what is generated: the region, or with --outpaint all else
    generate = ~region if mode == 'outpainting' else region
    region = conditioning.check_region(generate, d.size, 'mask' if _MASK.value else 'box')
  if mode in ('inpainting', 'outpainting'):
    video, notes = video_io.load_clip(_VIDEO.value, frames, d.size, fps=_FPS.value)
    made = conditioning.inpainting(video, region)  # outpainting: the region is outside
  else:
    image, notes = video_io.load_image(_IMAGE.value, d.size)
    made = (conditioning.cinemagraph(image, frames, region) if mode == 'cinemagraph' else
            conditioning.image_to_video(image, frames))
  for line in notes:
    print(line)
  return made


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_library_logs()  # first: checking --mesh starts jax, which logs its backends
  mode = _check_flags()
  mesh_shape = _mesh_shape()
  cascade = bool(_SSR_WORKDIR.value or _SSR_CHECKPOINT.value)
  workdir, step = _locate(_WORKDIR, _CHECKPOINT, conditional=mode in CONDITIONAL_MODES)
  if cascade:
    ssr_dir, ssr_step = _locate(_SSR_WORKDIR, _SSR_CHECKPOINT, 'ssr_')
  base_windows = {} if cascade else dict(window=_WINDOW.value, overlap=_OVERLAP.value)
  defaults = common.base_config()  # what a saved config.json is merged over
  gen, config = sampling.Generator.from_workdir(
      workdir, step, num_steps=_NUM_STEPS.value, sampler=_SAMPLER.value, **base_windows,
      defaults=defaults, mesh_shape=mesh_shape)
  if gen.ssr:
    raise app.UsageError(f'{workdir} holds an SSR model: pass it as --ssr_workdir, with '
                         f'the base model as --workdir.')
  text_warnings, text_errors = gen.tokenizer.check(_PROMPT.value)
  if text_errors:
    raise app.UsageError(' '.join(text_errors) + ' Use words of the training captions.')
  for line in text_warnings:
    print(f'warning: {line}', file=sys.stderr)
  if not config.model.temporal:
    raise app.UsageError(f'{workdir} holds a text-to-image model (stage=t2i), which makes '
                         f'single frames: sample from a STUNet workdir (stage=stunet or '
                         f'scratch).')
  if cascade:  # load and check the SSR before spending time on the base stage
    ssr_gen, ssr_config = sampling.Generator.from_workdir(
        ssr_dir, ssr_step, num_steps=_NUM_STEPS.value, sampler=_SAMPLER.value,
        window=_WINDOW.value, overlap=_OVERLAP.value, defaults=defaults,
        mesh_shape=mesh_shape)
    if not ssr_gen.ssr:
      raise app.UsageError(f'{ssr_dir} is not an SSR model (config.model.lowres_size is 0).')
    low = ssr_config.model.lowres_size
    if config.data.size != low:
      raise app.UsageError(f'the base model makes {config.data.size}px frames but the SSR '
                           f'model upsamples {low}px ones: train the SSR with '
                           f'--config.model.lowres_size={config.data.size}.')
  if mode in CONDITIONAL_MODES and not gen.conditional:
    raise app.UsageError(f'{mode} needs the conditional model, and {workdir} holds a '
                         f'text-to-video one: leave out --workdir (the shipped '
                         f'pretrained/stunet_tiny_conditional) or train one with '
                         f'configs/tiny.py:stage=conditional.')
  if _STYLE.value is not None:
    _, style = train_lib.load_params(_STYLE.value, defaults=defaults)
    gen.params = {'params': editing.interpolate_style(gen.params['params'], style,
                                                      _STYLE_ALPHA.value)}
    print(f'style {_STYLE.value} mixed in at alpha {_STYLE_ALPHA.value}')
  guidance = config.sample.guidance if _GUIDANCE.value is None else _GUIDANCE.value
  prompts = _PROMPT.value
  if mode == 'text-to-video':
    videos = gen(prompts, guidance=guidance, seed=_SEED.value, num_frames=_FRAMES.value)
  elif mode == 'editing':
    video, notes = video_io.load_clip(_VIDEO.value, _FRAMES.value or config.data.num_frames,
                                      config.data.size, fps=_FPS.value)
    for line in notes:
      print(line)
    videos = editing.sdedit(gen, prompts, np.repeat(video[None], len(prompts), 0),
                            strength=_STRENGTH.value, guidance=guidance, seed=_SEED.value)
  else:
    cond, mask = _conditioning(mode, config)  # the same for every prompt
    videos = conditioning.generate(gen, prompts, cond, mask, guidance=guidance,
                                   seed=_SEED.value)
  if _STRENGTH.value == 0.:
    print('strength 0: the input video, unchanged')
  else:
    _report({'text-to-video': 'base', 'editing': f'edit (strength {_STRENGTH.value})'}.get(
        mode, mode), gen, videos)
  outputs = {'': (videos, _SCALE.value)}
  if cascade:
    ssr_guidance = ssr_config.sample.guidance if _GUIDANCE.value is None else _GUIDANCE.value
    high = ssr_gen(_PROMPT.value, guidance=ssr_guidance, seed=_SEED.value, lowres=videos)
    _report('ssr', ssr_gen, high)
    # Both written at the same display size.
    outputs = {'': (high, max(1, round(_SCALE.value * low / high.shape[2]))),
               '_lowres': (videos, _SCALE.value)}
  for output in _OUTPUT.value:
    root, ext = os.path.splitext(output)
    for suffix, (clips, scale) in outputs.items():
      for i, (prompt, video) in enumerate(zip(_PROMPT.value, clips)):
        path = (root if len(clips) == 1 else f'{root}_{i}') + suffix + ext
        video_io.write_video(path, video, fps=_FPS.value, scale=scale)
        print(f'wrote {path}: "{prompt}"')


if __name__ == '__main__':
  cli.run(main)
