"""Samples videos from a trained model, or from the base -> SSR cascade.

  python sample.py --prompt="a red square moves left" --output=samples/red_square.mp4
  python sample.py --workdir=workdir/stunet --prompt="a red square moves left" \
      --output=samples/red_square.mp4
  python sample.py --workdir=workdir/stunet --ssr_workdir=workdir/ssr \
      --prompt="a red square moves left" --output=samples/red_square.mp4
The cascade is the default: the base model's 32-px clip is upsampled to 64 px by the
shipped SSR (pretrained/ssr_tiny; --ssr_workdir for another, --base_only for none),
and the base clip is written next to the high-res one (name_lowres.mp4).
Several --prompt flags give several videos (output name gets _0, _1, ...).
Clips longer than a model's window (--frames, or the low-res clip for the SSR) are
made of overlapping windows fused at every step (MultiDiffusion). With --prompt_frames
the prompts are one video's schedule: each window follows the prompts of its frames
(transitions; docs/long_videos.md):
  python sample.py --prompt="a red square moves left" --prompt="a red square moves up" \
      --frames=64 --prompt_frames=0,32 --output=samples/left_then_up.mp4

Applications (docs/applications.md). Video-to-video editing (SDEdit):
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

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# TensorFlow (the input pipeline only) prints a oneDNN notice on import, past the level.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from stunet import cli
from stunet import sample_request
from stunet import sampling

_WORKDIR = flags.DEFINE_string('workdir', None, 'train.py workdir (latest checkpoint); '
                               'default: the shipped model, pretrained/stunet_tiny.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None,
                                  'A checkpoint folder, workdir/checkpoints/<step>.')
_SSR_WORKDIR = flags.DEFINE_string('ssr_workdir', None,
                                   'An SSR model\'s train.py workdir: upsample the base '
                                   'model\'s videos with it (default: the shipped SSR, '
                                   'pretrained/ssr_tiny, for a 32-px base model).')
_BASE_ONLY = flags.DEFINE_bool('base_only', False, 'Skip the SSR: write the base model\'s '
                               'clip only.')
_SSR_CHECKPOINT = flags.DEFINE_string('ssr_checkpoint', None,
                                      'An SSR checkpoint folder, ssr_workdir/checkpoints/<step>.')
_FRAMES = flags.DEFINE_integer('frames', None, 'Frames of the base clip (default: the trained '
                               'length; longer clips use MultiDiffusion windows).')
_WINDOW = flags.DEFINE_integer('window', None, 'SSR window length in frames (default: its '
                               'config.sample.window); without an SSR, the base model\'s.')
_OVERLAP = flags.DEFINE_integer('overlap', None, 'Frames shared by neighbouring windows '
                                '(default: config.sample.overlap, 2).')
_PROMPT = flags.DEFINE_multi_string('prompt', None, 'Text prompt; repeat for several '
                                    '(with --prompt_frames: one video\'s prompts, in order).')
_PROMPT_FRAMES = flags.DEFINE_list('prompt_frames', None, 'A prompt schedule: the first frame '
                                   'of each --prompt in one video, e.g. --prompt="a red square '
                                   'moves left" --prompt="a red square moves up" '
                                   '--frames=64 --prompt_frames=0,32 (docs/long_videos.md).')
_NUM_STEPS = flags.DEFINE_integer('num_steps', None, 'Denoising steps (default: config).')
_GUIDANCE = flags.DEFINE_float('guidance', None, 'CFG weight w (default: config).')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed: same seed, same video.')
_SAMPLER = flags.DEFINE_enum('sampler', None, list(sampling.SAMPLERS), 'Default: config '
                             '(the shipped text-to-video model: ddpm, 24 steps; '
                             'docs/sampling.md).')
_SPACING = flags.DEFINE_enum('spacing', None, list(sampling.SPACINGS), 'Step times: uniform '
                             'in t, or quadratic (dense near t = 0); default: config.')
_NEGATIVE = flags.DEFINE_string('negative_prompt', None, 'Text guidance steers away from, '
                                'in place of the empty unconditional prompt (base model '
                                'only), e.g. --prompt="a red square moves left" '
                                '--negative_prompt="moves right".')
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
                                  'at 1, docs/applications.md).')
flags.mark_flags_as_required(['prompt'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_library_logs()  # first: checking --mesh starts jax, which logs its backends
  request = sample_request.SampleRequest(
      prompts=_PROMPT.value, prompt_frames=_PROMPT_FRAMES.value, outputs=_OUTPUT.value,
      workdir=_WORKDIR.value,
      checkpoint=_CHECKPOINT.value, ssr_workdir=_SSR_WORKDIR.value,
      ssr_checkpoint=_SSR_CHECKPOINT.value, base_only=_BASE_ONLY.value,
      negative_prompt=_NEGATIVE.value, frames=_FRAMES.value, window=_WINDOW.value,
      overlap=_OVERLAP.value, num_steps=_NUM_STEPS.value, guidance=_GUIDANCE.value,
      sampler=_SAMPLER.value, spacing=_SPACING.value, seed=_SEED.value, fps=_FPS.value,
      scale=_SCALE.value,
      video=_VIDEO.value, strength=_STRENGTH.value, image=_IMAGE.value, mask=_MASK.value,
      box=_BOX.value, outpaint=_OUTPAINT.value, cinemagraph=_CINEMAGRAPH.value,
      mesh=_MESH.value, style=_STYLE.value, style_alpha=_STYLE_ALPHA.value)
  try:
    sample_request.run(request, log=print, warn=lambda line: print(line, file=sys.stderr),
                       progress=cli.progress_bar)
  except (ValueError, FileNotFoundError) as e:  # bad flags for this model, missing files
    raise app.UsageError(str(e)) from e


if __name__ == '__main__':
  cli.run(main)
