"""The entry points' shared ``app.run``: a user's mistake is one line, not a traceback.

absl prints a traceback for a config file that cannot be loaded or a misspelt
``--config.x.y`` override (ml_collections raises from inside flag parsing), and the
module docstring plus every flag above the message of an ``app.UsageError``. Here
both become ``<program>: error: <what is wrong and what to do>`` on stderr, exit
status 1. ``--verbosity=1`` (or more) shows the traceback as well.
"""

import contextlib
import logging as std_logging
import os
import re
import sys
import traceback

from absl import app
from absl import flags
from absl import logging

_DID_YOU_MEAN = re.compile(r'Did you mean \\*"(\w+)\\*" instead of')


def _chain(e: BaseException) -> list:
  out = []
  while e is not None and e not in out:
    out.append(e)
    e = e.__cause__ or e.__context__
  return out


def flag_error(e: BaseException, argv) -> str:
  """One line for an exception raised while parsing argv's flags."""
  chain = _chain(e)
  missing = next((x for x in reversed(chain) if isinstance(x, (AttributeError, KeyError))), None)
  if missing is not None and not isinstance(e, flags.Error):
    # A config override naming a field the config does not have.
    name = str(missing.args[0] if missing.args else missing).split('\n')[0].strip('\'"\\ ')
    hint = next((m.group(1) for x in chain for m in [_DID_YOU_MEAN.search(str(x))] if m), None)
    arg = next((a for a in argv[1:] if a.startswith('--config.') and
                re.search(rf'\.{re.escape(name)}(=|$)', a.split('=')[0] + '=')), None)
    return (f'{arg.split("=")[0] if arg else "a --config override"}: the config has no '
            f'field {name!r}' + (f'; did you mean {hint!r}?' if hint else
                                 '; see the config file for its fields.'))
  root = chain[-1]
  if isinstance(e, flags.Error):
    head = str(e).split('\n')[0].rstrip(':')
    if root is not e:  # e.g. 'flag --config=...: Error whilst parsing config file'
      head = head.split(':')[0]
      return f'{head}: {str(root).strip()}'
    return f'{head} (--helpshort lists the flags).'
  text = str(root).strip()
  if 'Failed loading config file' in text:  # the file is missing or does not import
    return f'--config: cannot load the config file: {text.splitlines()[-1].strip()}'
  return text.split('\n')[0]


@contextlib.contextmanager
def progress_bar(desc: str):
  """A progress bar with ETA on stderr for one sampling stage; yields the sampler's
  ``progress(step, num_steps)`` hook (``generator.Generator``), which moves it."""
  import tqdm  # pylint: disable=g-import-not-at-top
  bars = []  # made at the first step, so that compiling does not count in the ETA

  def hook(step, num_steps):
    del step  # the hook is called once per step
    if not bars:
      bars.append(tqdm.tqdm(desc=desc, total=int(num_steps), unit='step', file=sys.stderr,
                            dynamic_ncols=True, leave=False))
    bars[0].update(1)

  try:
    yield hook
  finally:
    for bar in bars:
      bar.close()


def quiet_library_logs() -> None:
  """Entry points: library INFO logs (orbax, tfds) drown the progress lines, so show
  warnings only unless the user passed --verbosity (e.g. --verbosity=0 for INFO)."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
    # orbax and tfds also warn about routine things (a read-only checkpoint folder, a
    # custom dataset config, their own deprecations) and log the errors we report.
    logging.get_absl_handler().addFilter(_LibraryWarnings())


class _LibraryWarnings(std_logging.Filter):
  """orbax's and tfds's own log records (and those of the asyncio loops orbax writes
  with): their errors reach the user as the project's one-line errors (a failed
  checkpoint write is CheckpointWriteError), so at the default verbosity none of their
  records is shown."""

  def filter(self, record) -> bool:
    return not any(f'{os.sep}{lib}{os.sep}' in record.pathname
                   for lib in ('orbax', 'tensorflow_datasets', 'asyncio'))


def _verbose() -> bool:
  try:
    return flags.FLAGS['verbosity'].value >= 1
  except (KeyError, flags.UnparsedFlagAccessError):
    return False


def _fail(message: str) -> None:
  prog = os.path.basename(sys.argv[0])
  sys.stderr.write(f'{prog}: error: {message}\n')
  sys.exit(1)


def run(main, config_flags=()) -> None:
  """``app.run(main)``, with one-line errors for bad flags, config files and overrides
  (``config_flags``: the ``DEFINE_config_file`` holders, loaded while parsing) and
  for the ``app.UsageError``s of main."""

  def parse(argv):
    try:
      rest = flags.FLAGS(argv)
      for holder in config_flags:
        if holder.value is not None:
          holder.value.keys()  # a file that failed to load raises here, not in main
      return rest
    except Exception as e:  # pylint: disable=broad-except
      if '--verbosity' in ' '.join(argv) or '-v' in argv:
        traceback.print_exc()
      _fail(flag_error(e, argv))

  def guarded(argv):
    try:
      return main(argv)
    except app.UsageError as e:
      if _verbose():
        traceback.print_exc()
      _fail(str(e))

  app.run(guarded, flags_parser=parse)
