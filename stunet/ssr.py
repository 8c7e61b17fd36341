"""The spatial super-resolution (SSR) model: the inflated U-Net conditioned on low-res video.

Lumiere's SSR upsamples every frame of the base model's clip (128 -> 1024 px in the
paper). It is the same U-Net (``stunet.unet.UNet``) with temporal convolutions and
temporal attention but no temporal down/upsampling (``temporal_resample=False``), and
two extra inputs:
- the low-resolution video, bilinearly upsampled to the output size and concatenated
  to the noisy input along channels (3 + 3 input channels);
- noise-conditioning augmentation (Imagen / Imagen Video): the low-res video is noised
  with the forward process to a level ``aug_t`` (U[0, train.lowres_aug_max] in
  training, the fixed ``sample.lowres_aug`` at sampling), and ``aug_t`` is embedded
  like the diffusion time and added to the timestep embedding. The model learns to
  not trust the low-res input blindly, which makes it robust to the base model's
  artefacts.
With ``residual`` (``model.lowres_residual``), the diffusion runs on the residual
r = x - up(base) between the high-res clip and the clean low-res clip ``base``
bilinearly upsampled (SRDiff, Li et al. 2022, arXiv 2104.14951), written as a
reparameterization of the same process on x: the network sees z - alpha_t up(base),
the noised residual, and its output f becomes v = f - sigma_t up(base). Since
z_t = alpha_t x + sigma_t eps, f's target is then the residual's v, alpha_t eps -
sigma_t r, and x_hat = up(base) + r_hat: every sampler, guidance, thresholding and the
loss work on x unchanged. Where the clip is flat, r = 0 and the network only has to
recognise the noise, instead of separating it from the colours.
Memory allows the SSR only short windows of frames; ``stunet.multidiffusion`` fuses
overlapping windows at every denoising step.
"""

import jax
import jax.numpy as jnp

from stunet import diffusion as D
from stunet.unet import TextToVideo


def resize(video, size: int):
  """Frames of [b, t, h, w, c] -> [b, t, size, size, c]; linear, antialiased when shrinking."""
  b, t, _, _, c = video.shape
  return jax.image.resize(video, (b, t, size, size, c), method='linear', antialias=True)


def augment(rng, lowres, aug_t):
  """Noise-conditioning augmentation: the low-res video at noise level aug_t [b]."""
  return D.q_sample(lowres, aug_t, jax.random.normal(rng, lowres.shape, jnp.float32))


def training_condition(rng, video, lowres_size: int, aug_max: float):
  """(augmented low-res video, clean low-res video, aug_t) for a training batch of
  high-res videos.

  The low-res input is the high-res clip downsampled (antialiased), as the base
  model's output would be; aug_t ~ U[0, aug_max] per example.
  """
  r_t, r_noise = jax.random.split(rng)
  aug_t = jax.random.uniform(r_t, (video.shape[0],), maxval=aug_max)
  clean = resize(video, lowres_size)
  return augment(r_noise, clean, aug_t), clean, aug_t


class SuperResolution(TextToVideo):
  """TextToVideo whose denoiser also takes the low-res video and its augmentation level.

  denoise(z [b, t, H, W, 3], t [b], text, text_mask, lowres [b, t, h, w, 3], base [same],
  aug_t [b]): lowres is the low-res clip as the network sees it (noise-augmented to
  aug_t), base the same clip clean, which a residual model's output is relative to
  (the others ignore it).
  """
  lowres_size: int = 0
  residual: bool = False

  def denoise(self, z, t, text, text_mask, lowres, base, aug_t):
    # The network is fully convolutional: it runs on whole frames (sampling) and on
    # crops (training with data.crop_size), the low-res input being a whole factor
    # smaller either way; callers check the factor against model.lowres_size.
    h, w = lowres.shape[2:4]
    if (lowres.shape[:2] != z.shape[:2] or h != w or not h < z.shape[2]
        or z.shape[2] % h or z.shape[2] != z.shape[3]):
      raise ValueError(
          f'low-res input {lowres.shape} does not match this SSR model: it needs '
          f'{z.shape[:2]} clips of square frames a whole factor smaller than '
          f'{z.shape[2]}x{z.shape[3]} ({self.lowres_size}x{self.lowres_size} at the '
          f'trained size, model.lowres_size).')
    if base.shape != lowres.shape:
      raise ValueError(f'the clean low-res clip {base.shape} and the network\'s low-res '
                       f'input {lowres.shape} must have one shape.')
    up = resize(lowres.astype(jnp.float32), z.shape[2])
    if self.residual:  # the network sees and predicts the residual over up(base)
      alpha, sigma = (D.per_example(a, z) for a in
                      D.alpha_sigma(D.logsnr_schedule_cosine(t)))
      skip = resize(base.astype(jnp.float32), z.shape[2])
      z = (z - alpha * skip).astype(z.dtype)
    out = self.unet(jnp.concatenate([z, up.astype(z.dtype)], axis=-1), t, text, text_mask,
                    cond_t=aug_t)
    return out - sigma * skip if self.residual else out

  def __call__(self, z, t, tokens, mask, lowres, base, aug_t):
    return self.denoise(z, t, self.encode_text(tokens, mask), mask, lowres, base, aug_t)
