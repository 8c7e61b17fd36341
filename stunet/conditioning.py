"""Conditional generation through one interface (Lumiere, "Applications"): <J, C, M>.

The STUNet's input becomes the channel concatenation of
  J  the noisy video z_t                                  [b, t, h, w, 3]
  C  the masked conditioning video (known pixels, 0 elsewhere)   [b, t, h, w, 3]
  M  the binary mask, 1 where a pixel is known            [b, t, h, w, 1]
so its first convolution takes 7 channels instead of 3. The 4 new input channels of
``conv_in`` start at zero (``stunet.inflate`` widens a text-to-video checkpoint that
way), so the conditional model starts as exactly the text-to-video model and is then
fine-tuned on a mixture of random masks (``training_condition``).

Every application is a choice of (C, M), made by the mask makers below:
  image-to-video   C = the image on frame 0, M = 1 on frame 0 only;
  inpainting       C = the video, M = 0 inside the region to fill;
  outpainting      C = the video, M = 0 outside the known area;
  cinemagraph      C = the image on every frame, M = 1 on all of frame 0 and, on the
                   other frames, outside the region that should move.
``composite`` pastes the known pixels into a sample, so they stay the input's exactly.
"""

import jax
import jax.numpy as jnp
import numpy as np

from stunet.unet import TextToVideo

# Input channels of the conditional U-Net: noisy video, conditioning video, mask.
CHANNELS = 3 + 3 + 1
# Training mixture (``training_condition``): the share of each kind of mask.
KINDS = ('unconditional', 'image_to_video', 'inpainting', 'outpainting', 'cinemagraph')


class Conditional(TextToVideo):
  """TextToVideo whose denoiser also takes a conditioning video and its mask.

  denoise(z [b, t, h, w, 3], t [b], text, text_mask, cond [b, t, h, w, 3],
          cond_mask [b, t, h, w, 1]).
  """
  conditional: bool = True

  def denoise(self, z, t, text, text_mask, cond, cond_mask):
    if cond.shape != z.shape or cond_mask.shape != z.shape[:-1] + (1,):
      raise ValueError(f'conditioning video {cond.shape} and mask {cond_mask.shape} do not '
                       f'match the clip {z.shape}: need {z.shape} and '
                       f'{z.shape[:-1] + (1,)}.')
    m = cond_mask.astype(z.dtype)
    return self.unet(jnp.concatenate([z, cond.astype(z.dtype) * m, m], axis=-1), t, text,
                     text_mask)

  def __call__(self, z, t, tokens, mask, cond, cond_mask):
    return self.denoise(z, t, self.encode_text(tokens, mask), mask, cond, cond_mask)


# ---- the mask makers (numpy; [t, h, w, 3] videos in [-1, 1], [t, h, w, 1] masks) ----

def box_region(size: int, box) -> np.ndarray:
  """A bool [size, size] region, True inside box = (x0, y0, x1, y1) in pixels (x1, y1
  excluded). Raises ValueError for a box that is empty or leaves the frame."""
  x0, y0, x1, y1 = (int(v) for v in box)
  if not (0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size):
    raise ValueError(f'box {x0},{y0},{x1},{y1} is not inside the {size}x{size} frame: need '
                     f'0 <= x0 < x1 <= {size} and 0 <= y0 < y1 <= {size}.')
  region = np.zeros((size, size), bool)
  region[y0:y1, x0:x1] = True
  return region


def check_region(region, size: int, what: str = 'mask') -> np.ndarray:
  """A region to generate -> bool [size, size]; refuses an empty or full one."""
  region = np.asarray(region, bool)
  if region.shape != (size, size):
    raise ValueError(f'the {what} is {region.shape[1] if region.ndim > 1 else "?"}x'
                     f'{region.shape[0]} pixels; the model makes {size}x{size} frames: '
                     f'give a {size}x{size} {what}.')
  if not region.any():
    raise ValueError(f'the {what} marks nothing to generate (it is all black): paint the '
                     f'region to generate white.')
  if region.all():
    raise ValueError(f'the {what} marks every pixel to generate (it is all white), which '
                     f'is plain text-to-video: leave the {what} out, or paint the part to '
                     f'keep black.')
  return region


def image_to_video(image, frames: int):
  """(C, M) that keep ``image`` [h, w, 3] as frame 0 and generate the rest."""
  image = np.asarray(image, np.float32)
  cond = np.zeros((frames,) + image.shape, np.float32)
  cond[0] = image
  mask = np.zeros((frames,) + image.shape[:2] + (1,), np.float32)
  mask[0] = 1.
  return cond, mask


def inpainting(video, region):
  """(C, M) that keep ``video`` [t, h, w, 3] outside ``region`` [h, w] (True = generate)."""
  video = np.asarray(video, np.float32)
  keep = ~np.asarray(region, bool)
  mask = np.broadcast_to(keep[None, :, :, None], video.shape[:3] + (1,)).astype(np.float32)
  return video * mask, mask


def outpainting(video, known):
  """(C, M) that keep ``video`` inside ``known`` [h, w] (True = known) and generate the rest."""
  return inpainting(video, ~np.asarray(known, bool))


def cinemagraph(image, frames: int, region):
  """(C, M) that keep ``image`` still everywhere but ``region`` [h, w] (True = moves),
  which is generated on every frame after the first."""
  image = np.asarray(image, np.float32)
  cond = np.broadcast_to(image, (frames,) + image.shape).astype(np.float32)
  keep = (~np.asarray(region, bool)).astype(np.float32)[:, :, None]
  mask = np.broadcast_to(keep, (frames,) + keep.shape).copy()
  mask[0] = 1.
  return cond * mask, mask


def composite(samples, cond, mask):
  """Known pixels from the conditioning video, the rest from the samples (any batch)."""
  mask = np.asarray(mask, np.float32)
  return np.asarray(cond, np.float32) * mask + np.asarray(samples, np.float32) * (1. - mask)


def generate(generator, prompts: list, cond, mask, *, guidance: float, seed: int = 0,
             paste: bool = True, **sampler_kw) -> np.ndarray:
  """Samples of a conditional ``generator.Generator`` given conditioning videos [b, t, h,
  w, 3] and masks [b, t, h, w, 1] (from the mask makers, one per prompt; a single
  [t, ...] pair is used for every prompt). paste: the known pixels are the input's
  exactly (``composite``); False returns the model's own output everywhere.
  sampler_kw: the Generator call's options (negative_prompt, progress, preview)."""
  cond, mask = np.asarray(cond, np.float32), np.asarray(mask, np.float32)
  if cond.ndim == 4:
    cond, mask = (np.repeat(a[None], len(prompts), 0) for a in (cond, mask))
  out = generator(prompts, guidance=guidance, seed=seed, cond=(cond, mask), **sampler_kw)
  return composite(out, cond, mask) if paste else out


def known_psnr(videos, cond, mask) -> float:
  """PSNR (dB, pixels in [-1, 1]) of the videos against the conditioning video on the
  known pixels only."""
  m = np.broadcast_to(np.asarray(mask, bool), np.shape(videos))
  mse = float(np.mean((np.asarray(videos) - np.asarray(cond))[m] ** 2))
  return float(10. * np.log10(4. / max(mse, 1e-12)))


# ---- the training mixture (jax, inside the jitted step) ----

def _random_boxes(rng, b: int, h: int, w: int):
  """A random box per example: bool [b, h, w], sides in [1/4, 3/4] of the frame."""
  r_size, r_pos = jax.random.split(rng)
  lo = jnp.array([h // 4, w // 4])
  size = jax.random.randint(r_size, (b, 2), lo, jnp.array([3 * h // 4, 3 * w // 4]) + 1)
  start = jnp.floor(jax.random.uniform(r_pos, (b, 2)) *
                    (jnp.array([h, w]) - size + 1)).astype(jnp.int32)
  ys, xs = jnp.arange(h)[None, :], jnp.arange(w)[None, :]
  in_y = (ys >= start[:, :1]) & (ys < start[:, :1] + size[:, :1])
  in_x = (xs >= start[:, 1:]) & (xs < start[:, 1:] + size[:, 1:])
  return in_y[:, :, None] & in_x[:, None, :]


def training_condition(rng, video, probs=(0.2, 0.2, 0.2, 0.2, 0.2)):
  """(C, M, kind) for a training batch video [b, t, h, w, 3]: per example one of
  ``KINDS`` drawn with ``probs``, its mask drawn at random (boxes of 1/4 to 3/4 of the
  frame) and C the clip itself on the known pixels. The unconditional share keeps
  plain text-to-video working."""
  b, t, h, w, _ = video.shape
  r_kind, r_box = jax.random.split(rng)
  kind = jax.random.choice(r_kind, len(KINDS), (b,), p=jnp.asarray(probs, jnp.float32))
  box = _random_boxes(r_box, b, h, w)[:, None, :, :, None]        # [b, 1, h, w, 1]
  first = (jnp.arange(t) == 0)[None, :, None, None, None]         # [1, t, 1, 1, 1]
  shape = (b, t, h, w, 1)
  masks = jnp.stack([
      jnp.zeros(shape, bool),                                     # unconditional
      jnp.broadcast_to(first, shape),                             # image-to-video
      jnp.broadcast_to(~box, shape),                              # inpainting
      jnp.broadcast_to(box, shape),                               # outpainting
      jnp.broadcast_to(first | ~box, shape),                      # cinemagraph
  ])
  mask = jnp.take_along_axis(masks, kind[None, :, None, None, None, None], axis=0)[0]
  mask = mask.astype(jnp.float32)
  return video * mask, mask, kind
