"""A tiny convolutional autoencoder, 8x8x1 pixels <-> a 4x4x2 latent: the miniature of Stable Diffusion's VAE.

RID (arXiv 2412.09844, method section) attacks latent diffusion models, whose encoder maps a protected image x + delta to the
latent z0 that personalisation then learns from; the defender's gradient flows through this encoder. Ours is
deterministic (no posterior sampling) and, like SD's, is trained once on data without the identity class and then
frozen. ``latent_scale`` plays the role of SD's scale factor: latents are divided by their standard deviation so the
diffusion model sees unit-variance data.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from minimdm.rid.data import TrainingDigits
from minimdm.train import TrainConfig, train

LATENT_SHAPE = (2, 4, 4)


class Autoencoder(nn.Module):
    def __init__(self, channels: int = 16, latent_channels: int = LATENT_SHAPE[0]):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.SiLU(),  # 8x8 -> 4x4
            nn.Conv2d(channels, latent_channels, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, channels, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1), nn.SiLU(),  # 4x4 -> 8x8
            nn.Conv2d(channels, 1, 3, padding=1), nn.Tanh())
        self.register_buffer("latent_scale", torch.ones(()))

    def encode(self, images: Tensor) -> Tensor:  # (B, 1, 8, 8) -> (B, 32), unit variance over the training set
        return self.encoder(images).flatten(1) / self.latent_scale

    def decode(self, latents: Tensor) -> Tensor:  # (B, 32) -> (B, 1, 8, 8) in [-1, 1]
        return self.decoder((latents * self.latent_scale).reshape(-1, *LATENT_SHAPE))


def reconstruction_loss(autoencoder: Autoencoder, batch) -> Tensor:
    images = batch[0]
    return (autoencoder.decoder(autoencoder.encoder(images)) - images).pow(2).mean()


def train_autoencoder(data: TrainingDigits, steps: int, batch_size: int = 128, lr: float = 1e-2, seed: int = 0,
                      device: str | torch.device = "cpu") -> Autoencoder:
    """Train on the non-identity digits, then fix the latent scale and freeze (SD's VAE is never fine-tuned)."""
    torch.manual_seed(seed)
    autoencoder = Autoencoder()
    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=min(50, steps // 10 + 1), weight_decay=0.0, seed=seed,
                      device=str(device), progress=False, log_every=max(1, steps), amp=False)
    train(autoencoder, reconstruction_loss, lambda step: data.batch(batch_size), cfg)
    with torch.no_grad():
        autoencoder.latent_scale.fill_(float(autoencoder.encoder(data.images.to(device)).std()))
    return autoencoder.eval().requires_grad_(False)
