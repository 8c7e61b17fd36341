"""Samples videos from a trained model.

  python sample.py --workdir=workdir/stunet --prompt="a red square moves left" \
      --output=samples/red_square.mp4
Several --prompt flags give several videos (output name gets _0, _1, ...).
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from stunet import sampling
from stunet import trainer
from stunet import video_io

_WORKDIR = flags.DEFINE_string('workdir', None, 'train.py workdir (latest checkpoint).')
_CHECKPOINT = flags.DEFINE_string('checkpoint', None,
                                  'A checkpoint folder, workdir/checkpoints/<step>.')
_PROMPT = flags.DEFINE_multi_string('prompt', None, 'Text prompt; repeat for several.')
_NUM_STEPS = flags.DEFINE_integer('num_steps', None, 'Denoising steps (default: config).')
_GUIDANCE = flags.DEFINE_float('guidance', None, 'CFG weight w (default: config).')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed: same seed, same video.')
_SAMPLER = flags.DEFINE_enum('sampler', None, list(sampling.SAMPLERS), 'default: config.')
_OUTPUT = flags.DEFINE_multi_string('output', ['samples/sample.mp4'],
                                    '.mp4 or .gif path; repeat to write several formats.')
_FPS = flags.DEFINE_integer('fps', 8, 'Frames per second of the written file.')
_SCALE = flags.DEFINE_integer('scale', 4, 'Nearest-neighbour enlargement for viewing.')
flags.mark_flags_as_required(['prompt'])


def _locate() -> tuple[str, int | None]:
  if bool(_WORKDIR.value) == bool(_CHECKPOINT.value):
    raise app.UsageError('pass exactly one of --workdir or --checkpoint.')
  if _WORKDIR.value:
    return _WORKDIR.value, None
  path = os.path.abspath(_CHECKPOINT.value.rstrip('/'))
  step = os.path.basename(path)
  if not step.isdigit():
    raise app.UsageError(f'--checkpoint={_CHECKPOINT.value} should end in a step number '
                         f'(workdir/checkpoints/<step>); use --workdir for the latest.')
  return os.path.dirname(os.path.dirname(path)), int(step)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  trainer.quiet_library_logs()
  workdir, step = _locate()
  gen, config = sampling.Generator.from_workdir(
      workdir, step, num_steps=_NUM_STEPS.value, sampler=_SAMPLER.value)
  sc = config.sample
  guidance = sc.guidance if _GUIDANCE.value is None else _GUIDANCE.value
  videos = gen(_PROMPT.value, guidance=guidance, seed=_SEED.value)
  times = gen.last_times
  print(f'compile {times["compile_s"]:.1f}s, sampling {times["sample_s"]:.1f}s '
        f'({times["per_step_s"] * 1000:.0f} ms/step) for {len(videos)} video(s)')
  for output in _OUTPUT.value:
    root, ext = os.path.splitext(output)
    for i, (prompt, video) in enumerate(zip(_PROMPT.value, videos)):
      path = output if len(videos) == 1 else f'{root}_{i}{ext}'
      video_io.write_video(path, video, fps=_FPS.value, scale=_SCALE.value)
      print(f'wrote {path}: "{prompt}"')


if __name__ == '__main__':
  app.run(main)
