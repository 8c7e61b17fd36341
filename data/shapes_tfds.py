"""The shapes benchmark (data/shapes.py) as a tfds dataset, generated locally.

Nothing is downloaded: `_split_generators` ignores the download manager and the
examples come from the deterministic numpy generator. Each setting (frames, size,
split sizes, seed) is its own builder config, named e.g. `f16_r32_n2048_t256_s0`, so
datasets prepared with different settings never collide in one data_dir.

    builder = build('/tmp/tfds', num_frames=16, size=32, num_train=2048, num_test=256)
    ds = builder.as_dataset(split='train')  # or data.pipeline.make_dataset(builder, ...)

Features: video uint8 [t, size, size, 3] (stored as PNG frames; decoding needs no
ffmpeg), caption (text), color / shape / motion (class labels, names as in
data/shapes.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time

from etils import epath
import tensorflow_datasets as tfds
from tensorflow_datasets.core import utils as tfds_utils

from data import shapes

# Test examples are drawn from a separate index range of the same seeded stream, so
# train and test never share an example whatever num_train is.
TEST_INDEX_OFFSET = 2**31


def config_name(num_frames: int, size: int, num_train: int, num_test: int, seed: int,
                style: str = "", stationary: bool = False) -> str:
  """'f16_r32_n2048_t256_s0' ('..._s0_outline' in a style, '..._stationary' for motion
  with a rate per frame): every field that changes the data is in the name."""
  return (f"f{num_frames}_r{size}_n{num_train}_t{num_test}_s{seed}" +
          (f"_{style}" if style else "") + ("_stationary" if stationary else ""))


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
  """Generation settings. Build with `ShapesConfig.make(...)` to get a unique name."""

  num_frames: int = 16
  size: int = 32
  num_train: int = 2048
  num_test: int = 256
  seed: int = 0
  style: str = ""
  stationary: bool = False  # data.shapes.render's: motion at a rate per frame

  @classmethod
  def make(cls, num_frames: int, size: int, num_train: int, num_test: int, seed: int = 0,
           style: str = "", stationary: bool = False):
    if num_frames < 4 or size < 16:
      raise ValueError(f"Need num_frames >= 4 and size >= 16, got {num_frames}, {size}.")
    if num_train < 1 or num_test < 1 or seed < 0:
      raise ValueError(
          f"Need num_train >= 1, num_test >= 1, seed >= 0; got {num_train}, {num_test}, {seed}."
      )
    if style not in shapes.STYLES:
      raise ValueError(f"Unknown style {style!r}; use one of {shapes.STYLES}.")
    return cls(
        name=config_name(num_frames, size, num_train, num_test, seed, style, stationary),
        description=(
            f"{num_train} train / {num_test} test clips of {num_frames} frames at "
            f"{size}x{size}, seed {seed}" + (f", {style} style" if style else "") +
            (", motion at a rate per frame" if stationary else "") + "."
        ),
        num_frames=num_frames,
        size=size,
        num_train=num_train,
        num_test=num_test,
        seed=seed,
        style=style,
        stationary=stationary,
    )


# The project's default setting, registered so `tfds.builder('shapes_videos')` works.
DEFAULT_CONFIG = ShapesConfig.make(num_frames=16, size=32, num_train=2048, num_test=256, seed=0)


class ShapesVideos(tfds.core.GeneratorBasedBuilder):
  """Coloured shapes that move, bounce, grow, shrink or rotate, with captions."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [DEFAULT_CONFIG]

  # tfds 4.9.10's default `code_path` touches `importlib_resources` (a backport that
  # is not a dependency here) for any builder defined inside a package, and crashes
  # with ModuleNotFoundError. The file path is all it needs.
  @tfds_utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return self.dataset_info_from_configs(
        description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            # Numpy uint8 frames are PNG-encoded individually (no ffmpeg involved).
            "video": tfds.features.Video(shape=(c.num_frames, c.size, c.size, 3)),
            "caption": tfds.features.Text(),
            "color": tfds.features.ClassLabel(names=list(shapes.COLORS)),
            "shape": tfds.features.ClassLabel(names=list(shapes.SHAPES)),
            "motion": tfds.features.ClassLabel(names=list(shapes.MOTIONS)),
        }),
        homepage=None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Generated locally: nothing to download.
    c = self.builder_config
    return {
        "train": self._generate_examples(0, c.num_train),
        "test": self._generate_examples(TEST_INDEX_OFFSET, c.num_test),
    }

  def _generate_examples(self, start: int, count: int):
    c = self.builder_config
    for index in range(start, start + count):
      ex = shapes.example(c.seed, index, c.num_frames, c.size, c.style, c.stationary)
      yield index, dict(
          video=ex["video"],
          caption=ex["caption"],
          color=ex["color"],
          shape=ex["shape"],
          motion=ex["motion"],
      )


def build(
    data_dir: str,
    num_frames: int,
    size: int,
    num_train: int,
    num_test: int,
    seed: int = 0,
    style: str = "",
    stationary: bool = False,
) -> tfds.core.DatasetBuilder:
  """Returns a prepared ShapesVideos builder, generating the data only if missing.

  A second call with the same arguments and data_dir only reads dataset_info.json.
  Never touches the network (no GCS lookup, no downloads).
  """
  config = ShapesConfig.make(num_frames, size, num_train, num_test, seed, style, stationary)
  if config.name in ShapesVideos.builder_configs:
    # tfds refuses a second config object with a registered name: use the registered one.
    config = ShapesVideos.builder_configs[config.name]
  builder = ShapesVideos(config=config, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  # The first use generates it: one line of ours instead of tfds' progress bars and
  # "downloaded and prepared" notice (which nothing was).
  t0 = time.time()
  print(f"generating the shapes dataset once: {num_train} + {num_test} "
        f"{style + ' ' if style else ''}{'stationary ' if stationary else ''}clips of "
        f"{num_frames}x{size}x{size} under "
        f"{data_dir}", flush=True)
  tfds.display_progress_bar(False)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              try_download_gcs=False,
              compute_stats=tfds.download.ComputeStatsMode.SKIP,
          )
      )
  finally:
    tfds.display_progress_bar(True)
  print(f"generated the shapes dataset in {time.time() - t0:.0f}s", flush=True)
  return builder

