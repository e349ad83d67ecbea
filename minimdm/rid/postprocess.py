"""What an attacker may do to published photos before fine-tuning, hoping to wash a protection out.

* ``quantise_blur``: a JPEG analogue for 8x8 images (JPEG drops precision and high frequencies): round to 2^bits
  levels, then a 2x2 box blur (edge-replicated so the image stays 8x8).
* ``diffpure``: DiffPure (Nie et al., arXiv 2205.07460): diffuse the image to a small time t* with the
  forward process, then run a diffusion model's reverse process back to t = 0. The added noise drowns a small
  perturbation and the denoiser pulls the image back onto the data manifold.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from minimdm.rid.data import check_images
from minimdm.rid.ddpm import NULL_SLOT, DiffusionModel


def quantise_blur(images: Tensor, bits: int = 4, blur: int = 2) -> Tensor:
    check_images(images)
    if not 1 <= bits <= 16:
        raise ValueError(f"bits={bits} must lie in 1..16")
    if blur < 1:
        raise ValueError(f"blur={blur} must be >= 1 (1 means no blur)")
    levels = 2 ** bits - 1
    quantised = torch.round((images + 1) / 2 * levels) / levels * 2 - 1
    if blur == 1:
        return quantised
    padded = F.pad(quantised, (0, blur - 1, 0, blur - 1), mode="replicate")
    return F.avg_pool2d(padded, blur, stride=1)


@torch.no_grad()
def diffpure(purifier: DiffusionModel, images: Tensor, strength: float = 0.1, seed: int = 0) -> Tensor:
    """Noise to t* = strength * T, denoise with ancestral steps (empty prompt), decode. DiffPure's purification."""
    check_images(images)
    if not 0 < strength <= 1:
        raise ValueError(f"strength={strength} must lie in (0, 1]")
    device = purifier.betas.device
    generator = torch.Generator(device=device).manual_seed(seed)
    t_star = max(1, round(strength * purifier.n_steps))
    z0 = purifier.encode(images.to(device))
    t = torch.full((len(z0),), t_star - 1, device=device, dtype=torch.long)
    z = purifier.noise(z0, t, torch.randn(z0.shape, device=device, generator=generator))
    slots = torch.full((len(z0),), NULL_SLOT, device=device, dtype=torch.long)
    for step in reversed(range(t_star)):
        beta, alpha_bar = purifier.betas[step], purifier.alphas_bar[step]
        eps = purifier.eps_net(z, torch.full_like(slots, step), slots)
        z = (z - beta / (1 - alpha_bar).sqrt() * eps) / (1 - beta).sqrt()  # Ho et al. Algorithm 2
        if step > 0:
            z = z + beta.sqrt() * torch.randn(z.shape, device=device, generator=generator)
    return purifier.decode(z)
