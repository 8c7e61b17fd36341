"""What sample.py is asked to make, checked, then made: the library side of the CLI.

``SampleRequest`` holds the flags of one ``sample.py`` call. ``check`` refuses bad
values and combinations before anything is loaded or compiled and returns the
application the flags ask for (``MODES``); ``run`` loads the model(s), samples and
writes the files. sample.py only turns flags into a request, so tests exercise the
same code that users run.
"""

import contextlib
import dataclasses
import os
import tempfile
from typing import Callable, Optional, Sequence

import numpy as np

from stunet import checkpoints
from stunet import conditioning
from stunet import config as config_lib
from stunet import editing
from stunet import prompt_schedule
from stunet import sharding
from stunet import video_io
from stunet.generator import Generator
from stunet.text import Tokenizer

CONDITIONAL_MODES = ('image-to-video', 'inpainting', 'outpainting', 'cinemagraph')
MODES = ('text-to-video', 'editing') + CONDITIONAL_MODES
VIDEO_EXTENSIONS = ('.mp4', '.gif')


@dataclasses.dataclass
class SampleRequest:
  """The flags of one sample.py call (None: the model's configured value)."""
  prompts: Sequence[str]
  prompt_frames: Optional[Sequence[str]] = None  # one video's prompt schedule
  outputs: Sequence[str] = ('samples/sample.mp4',)
  workdir: Optional[str] = None          # default: the shipped model
  checkpoint: Optional[str] = None       # workdir/checkpoints/<step>
  ssr_workdir: Optional[str] = None      # an SSR run (default: the shipped SSR)
  ssr_checkpoint: Optional[str] = None
  base_only: bool = False                # no SSR: the base model's clip only
  negative_prompt: Optional[str] = None  # the unconditional branch's text
  frames: Optional[int] = None
  window: Optional[int] = None
  overlap: Optional[int] = None
  num_steps: Optional[int] = None
  guidance: Optional[float] = None
  sampler: Optional[str] = None
  spacing: Optional[str] = None
  seed: int = 0
  fps: int = 8
  scale: int = 4
  video: Optional[str] = None            # editing (with strength) or in/outpainting
  strength: Optional[float] = None
  image: Optional[str] = None            # image-to-video or cinemagraph
  mask: Optional[str] = None             # PNG, white = generate
  box: Optional[Sequence[str]] = None    # x0, y0, x1, y1
  outpaint: bool = False
  cinemagraph: bool = False
  mesh: Optional[Sequence[str]] = None   # sizes along (data, fsdp, tensor, context)
  style: Optional[str] = None
  style_alpha: float = 1.

  # ---- checks that need nothing loaded ----

  def mode(self) -> str:
    """The application the flags ask for (refusing combinations that mean nothing)."""
    region = self.mask is not None or self.box is not None
    if self.mask is not None and self.box is not None:
      raise ValueError('pass --mask or --box, not both: each gives the region to generate.')
    if self.image is not None and self.video is not None:
      raise ValueError('--image animates an image, --video edits or fills a clip: pass one '
                       'of them.')
    if self.cinemagraph and (self.image is None or not region):
      raise ValueError('--cinemagraph needs --image and the region that moves (--mask or '
                       '--box).')
    if self.outpaint and (self.video is None or not region):
      raise ValueError('--outpaint needs --video and the region to keep (--mask or --box).')
    if self.video is not None:
      if region and self.strength is not None:
        raise ValueError('--strength edits the whole clip and --mask/--box fill a region of '
                         'it: pass one of them.')
      if region:
        return 'outpainting' if self.outpaint else 'inpainting'
      if self.strength is None:
        raise ValueError('--video needs --strength (editing: --video=clip.mp4 '
                         '--strength=0.5) or --mask/--box (inpainting, outpainting).')
      return 'editing'
    if self.strength is not None:
      raise ValueError('--strength needs --video, the clip to edit: --video=clip.mp4 '
                       '--strength=0.5.')
    if self.image is not None:
      if region and not self.cinemagraph:
        raise ValueError('--mask/--box with --image: add --cinemagraph to animate only that '
                         'region.')
      return 'cinemagraph' if self.cinemagraph else 'image-to-video'
    if region:
      raise ValueError('--mask/--box need --video (inpainting, outpainting) or --image '
                       '--cinemagraph.')
    return 'text-to-video'

  def check(self) -> str:
    """Refuses bad values before anything is loaded or compiled; returns ``mode()``."""
    if not self.prompts or any(not p or not p.strip() for p in self.prompts):
      raise ValueError('--prompt: every prompt must be non-empty text (the empty prompt is '
                       'the unconditional one used for guidance).')
    if self.negative_prompt is not None and not self.negative_prompt.strip():
      raise ValueError('--negative_prompt is empty: leave it out for the empty '
                       'unconditional prompt.')
    if self.base_only and (self.ssr_workdir or self.ssr_checkpoint):
      raise ValueError('--base_only skips the SSR that --ssr_workdir/--ssr_checkpoint '
                       'names: pass one of them.')
    for flag, value, field in (('--num_steps', self.num_steps, 'sample.num_steps'),
                               ('--guidance', self.guidance, 'sample.guidance'),
                               ('--overlap', self.overlap, 'sample.overlap'),
                               ('--seed', self.seed, 'seed')):
      config_lib.check_flag(flag, value, field)
    for flag, value, what in (('--frames', self.frames, 'frames of the clip'),
                              ('--window', self.window, 'frames per window'),
                              ('--fps', self.fps, 'frames per second'),
                              ('--scale', self.scale, 'the enlargement')):
      if value is not None:
        config_lib.check_range(flag, value, 1, None, what)
    mode = self.mode()
    if self.prompt_frames is not None:
      if mode != 'text-to-video':
        raise ValueError(f'--prompt_frames schedules the prompts of text-to-video, not of '
                         f'{mode}.')
      self.schedule(self.frames)
    if self.strength is not None:
      try:
        editing.check_strength(self.strength)
      except ValueError as e:
        raise ValueError(f'--strength={self.strength}: {e}') from e
    for flag, path in (('--video', self.video), ('--image', self.image),
                       ('--mask', self.mask)):
      if path is not None and not os.path.isfile(path):
        raise ValueError(f'{flag}={path}: no such file.')
    if self.box is not None:
      self.box_pixels()
    if self.style is not None:
      if mode not in ('text-to-video', 'editing'):
        raise ValueError(f'--style works with text-to-video and editing (the style weights '
                         f'were fine-tuned from the text-to-video model), not with {mode}.')
      try:
        editing.check_alpha(self.style_alpha)
      except ValueError as e:
        raise ValueError(f'--style_alpha={self.style_alpha}: {e}') from e
    self.mesh_shape()
    for output in self.outputs:
      ext = os.path.splitext(output)[1].lower()
      if ext not in VIDEO_EXTENSIONS:
        raise ValueError(f'--output={output}: unknown video extension {ext!r}; use .mp4 or '
                         f'.gif.')
      _check_writable(output)
    return mode

  def schedule(self, num_frames: Optional[int]) -> Optional[tuple]:
    """--prompt_frames as first frames checked against the prompts (and, when known, the
    clip's num_frames), or None without a schedule."""
    if self.prompt_frames is None:
      return None
    try:
      first = [int(v) for v in self.prompt_frames]
    except ValueError:
      first = None
    flag = f'--prompt_frames={",".join(map(str, self.prompt_frames))}'
    if not first:
      raise ValueError(f'{flag}: give whole numbers, the first frame of each --prompt.')
    try:
      return prompt_schedule.check(first, len(self.prompts), num_frames or 1 + max(first))
    except ValueError as e:
      raise ValueError(f'{flag}: {e}') from e

  def box_pixels(self) -> list:
    try:
      box = [int(v) for v in self.box]
    except ValueError:
      box = []
    if len(box) != 4:
      raise ValueError(f'--box={",".join(map(str, self.box))}: give 4 whole numbers of '
                       f'pixels, x0,y0,x1,y1 (x1, y1 excluded).')
    return box

  def mesh_shape(self) -> Optional[tuple]:
    """--mesh as a tuple of ints checked against the devices, or None (the config's)."""
    if self.mesh is None:
      return None
    import jax  # pylint: disable=g-import-not-at-top
    try:
      shape = tuple(int(x) for x in self.mesh)
      sharding.mesh_shape(shape, jax.device_count(), 4)
    except ValueError as e:
      raise ValueError(f'--mesh={",".join(map(str, self.mesh))}: {e} Give up to 4 whole '
                       f'numbers (data, fsdp, tensor, context).') from e
    return shape


def _check_writable(output: str) -> None:
  """Refuses an output whose folder cannot be written. Tried, not predicted (os.access
  says yes to root everywhere, /proc included): the folder is made and a scratch file
  written in it, before anything compiles; folders made here are removed again (the
  writer makes them), so a refusal later leaves nothing behind."""
  folder = os.path.dirname(os.path.abspath(output))
  made, parent = [], folder
  while not os.path.exists(parent):
    made.append(parent)
    parent = os.path.dirname(parent)
  try:
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
      pass
  except OSError as e:
    raise ValueError(f'--output={output}: cannot write in {folder} ({e.strerror or e}); '
                     f'choose another folder.') from e
  finally:
    for path in made:  # deepest first
      if os.path.isdir(path):
        os.rmdir(path)


def locate(workdir: Optional[str], checkpoint: Optional[str], prefix: str = '',
           shipped: Optional[str] = None) -> tuple[str, Optional[int]]:
  """(workdir, step or None for the latest) from --<prefix>workdir/--<prefix>checkpoint;
  neither: the shipped model ``shipped`` (when there is one for this flag)."""
  if shipped and not workdir and not checkpoint:
    return checkpoints.default_workdir(shipped), None
  if bool(workdir) == bool(checkpoint):
    raise ValueError(f'pass exactly one of --{prefix}workdir or --{prefix}checkpoint.')
  if workdir:
    return workdir, None
  try:
    return checkpoints.split_checkpoint_path(checkpoint)
  except ValueError as e:
    raise ValueError(f'--{prefix}checkpoint={checkpoint}: {e}') from e


def _conditioning(request: SampleRequest, mode: str, config):
  """((C [t, h, w, 3], M [t, h, w, 1]), notes) for a conditional mode, from the files
  given; notes: what the loaders changed (resizing, frame rate)."""
  d = config.data
  frames = request.frames or d.num_frames
  region = None
  if request.mask is not None:
    region = video_io.load_mask(request.mask, d.size)
  elif request.box is not None:
    region = conditioning.box_region(d.size, request.box_pixels())
  if region is not None:  # what is generated: the region, or with --outpaint all else
    generate = ~region if mode == 'outpainting' else region
    region = conditioning.check_region(generate, d.size, 'mask' if request.mask else 'box')
  if mode in ('inpainting', 'outpainting'):
    video, notes = video_io.load_clip(request.video, frames, d.size, fps=request.fps)
    made = conditioning.inpainting(video, region)  # outpainting: the region is outside
  else:
    image, notes = video_io.load_image(request.image, d.size)
    made = (conditioning.cinemagraph(image, frames, region) if mode == 'cinemagraph' else
            conditioning.image_to_video(image, frames))
  return made, notes


def _timing(stage: str, gen: Generator, videos) -> str:
  t = gen.last_times
  return (f'{stage}: compile {t["compile_s"]:.1f}s, sampling {t["sample_s"]:.1f}s '
          f'({t["per_step_s"] * 1000:.0f} ms/step, {t["windows"]} window(s)) for '
          f'{len(videos)} video(s) of {"x".join(map(str, videos.shape[1:4]))}')


def _ssr_run(request: SampleRequest, base_size: int, log) -> tuple:
  """(SSR workdir, step) of the cascade, or (None, None) for the base model alone:
  --ssr_workdir/--ssr_checkpoint, else the shipped SSR when it upsamples the base
  model's frame size (and --base_only is not given)."""
  if request.ssr_workdir or request.ssr_checkpoint:
    return locate(request.ssr_workdir, request.ssr_checkpoint, 'ssr_')
  shipped = checkpoints.PRETRAINED_SSR
  if request.base_only or not os.path.exists(os.path.join(shipped, 'config.json')):
    return None, None
  low = config_lib.load(shipped).model.lowres_size
  if low != base_size:
    log(f'base model only: the shipped SSR upsamples {low}px frames, this model makes '
        f'{base_size}px ones (--ssr_workdir for an SSR of its size).')
    return None, None
  return shipped, None


def run(request: SampleRequest, log: Callable[[str], None] = print,
        warn: Callable[[str], None] = print, progress=None) -> list:
  """Checks the request, samples and writes every output; returns the paths written.
  ``log`` gets the progress lines, ``warn`` the warnings about the prompts; ``progress``
  (optional): a context manager factory, ``progress(stage)`` giving the
  ``progress(step, num_steps)`` hook of one sampling stage (a progress bar). Everything
  that can be checked from the run's config (the model's kind, the prompts' words, the
  input files) is checked before any weights are loaded."""
  mode = request.check()
  mesh_shape = request.mesh_shape()
  conditional = mode in CONDITIONAL_MODES
  workdir, step = locate(request.workdir, request.checkpoint,
                         shipped=(checkpoints.PRETRAINED_CONDITIONAL if conditional
                                  else checkpoints.PRETRAINED))
  config = config_lib.load(workdir)
  ssr_dir, ssr_step = _ssr_run(request, config.data.size, log)
  cascade = ssr_dir is not None
  kind = config_lib.model_kind(config)
  if kind == 't2i':
    raise ValueError(f'{workdir} holds a text-to-image model (stage=t2i), which makes '
                     f'single frames: sample from a STUNet workdir (stage=stunet or '
                     f'scratch).')
  if kind == 'ssr':
    raise ValueError(f'{workdir} holds an SSR model: pass it as --ssr_workdir, with the '
                     f'base model as --workdir.')
  if conditional and kind != 'conditional':
    raise ValueError(f'{mode} needs the conditional model, and {workdir} holds a '
                     f'{kind} one: leave out --workdir (the shipped '
                     f'pretrained/stunet_tiny_conditional) or train one with '
                     f'configs/tiny.py:stage=conditional.')
  prompts = list(request.prompts)
  negative = [] if request.negative_prompt is None else [request.negative_prompt]
  text_warnings, text_errors = Tokenizer.from_config(config.data).check(prompts + negative)
  frames = request.frames or config.data.num_frames
  schedule = request.schedule(frames)
  if schedule is not None:
    # The base model's window (with an SSR, --window is the SSR's).
    window = (None if cascade else request.window) or config.sample.window or \
        config.data.num_frames
    if frames <= window:
      raise ValueError(f'--prompt_frames changes the prompt over time from one MultiDiffusion '
                       f'window to the next, and a clip of {frames} frames fits one window '
                       f'of {window}: ask for more frames (e.g. --frames={2 * window}).')
    prompts = [prompts]  # one video
  if text_errors:
    raise ValueError(' '.join(text_errors) + ' Use words of the training captions.')
  if cascade:
    ssr_config = config_lib.load(ssr_dir)
    if config_lib.model_kind(ssr_config) != 'ssr':
      raise ValueError(f'{ssr_dir} is not an SSR model (config.model.lowres_size is 0).')
    low = ssr_config.model.lowres_size
    if config.data.size != low:
      raise ValueError(f'the base model makes {config.data.size}px frames but the SSR model '
                       f'upsamples {low}px ones: train the SSR with '
                       f'--config.model.lowres_size={config.data.size}.')
  notes, inputs = [], None
  if mode == 'editing':
    inputs, notes = video_io.load_clip(request.video, request.frames or config.data.num_frames,
                                       config.data.size, fps=request.fps)
  elif conditional:
    inputs, notes = _conditioning(request, mode, config)  # the same for every prompt
  for line in text_warnings:
    warn(f'warning: {line}')
  for line in notes:
    log(line)

  settings = dict(num_steps=request.num_steps, sampler=request.sampler,
                  spacing=request.spacing)
  base_windows = {} if cascade else dict(window=request.window, overlap=request.overlap)
  gen, config = Generator.from_workdir(workdir, step, **settings, **base_windows,
                                       mesh_shape=mesh_shape)
  if cascade:
    ssr_gen, ssr_config = Generator.from_workdir(
        ssr_dir, ssr_step, **settings, window=request.window, overlap=request.overlap,
        mesh_shape=mesh_shape)
  if request.style is not None:
    _, style = checkpoints.load_params(request.style)
    gen.params = {'params': editing.interpolate_style(gen.params['params'], style,
                                                      request.style_alpha)}
    log(f'style {request.style} mixed in at alpha {request.style_alpha}')
  guidance = config.sample.guidance if request.guidance is None else request.guidance
  progress = progress or (lambda stage: contextlib.nullcontext())
  stage = {'text-to-video': 'base', 'editing': f'edit (strength {request.strength})'
           }.get(mode, mode)
  with progress(stage) as hook:
    kw = dict(guidance=guidance, seed=request.seed, progress=hook,
              negative_prompt=request.negative_prompt)
    if mode == 'text-to-video':
      videos = gen(prompts, num_frames=request.frames, prompt_frames=schedule, **kw)
    elif mode == 'editing':
      videos = editing.sdedit(gen, prompts, np.repeat(inputs[None], len(prompts), 0),
                              strength=request.strength, **kw)
    else:
      cond, mask = inputs
      videos = conditioning.generate(gen, prompts, cond, mask, **kw)
  if request.strength == 0.:
    log('strength 0: the input video, unchanged')
  else:
    log(_timing(stage, gen, videos))
  outputs = {'': (videos, request.scale)}
  if cascade:
    ssr_guidance = ssr_config.sample.guidance if request.guidance is None else request.guidance
    with progress('ssr') as hook:  # the SSR follows the low-res clip: no negative prompt
      high = ssr_gen(prompts, guidance=ssr_guidance, seed=request.seed, lowres=videos,
                     progress=hook, prompt_frames=schedule)
    log(_timing('ssr', ssr_gen, high))
    # Both written at the same display size.
    outputs = {'': (high, max(1, round(request.scale * low / high.shape[2]))),
               '_lowres': (videos, request.scale)}
  written = []
  for output in request.outputs:
    root, ext = os.path.splitext(output)
    for suffix, (clips, scale) in outputs.items():
      for i, (prompt, video) in enumerate(zip(prompts, clips)):
        path = (root if len(clips) == 1 else f'{root}_{i}') + suffix + ext
        video_io.write_video(path, video, fps=request.fps, scale=scale)
        shown = (prompt if schedule is None else ', then '.join(
            f'from frame {f} "{p}"' for f, p in zip(schedule, prompt)))
        log(f'wrote {path}: ' + (f'"{shown}"' if schedule is None else shown))
        written.append(path)
  return written
