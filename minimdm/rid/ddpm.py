"""A tiny class-conditional DDPM (Ho et al., arXiv 2006.11239) that runs in pixel space or in an autoencoder's latent.

The same epsilon-network serves both spaces, so "pixel vs latent" changes one thing only: whether an encoder sits
between the image and the diffusion model. Class slots of the embedding table:

* 0..9  the digit classes (the identity's own slot is never trained: its images are never seen);
* ``NULL_SLOT`` the empty prompt, trained by dropping labels 10% of the time (RID's Adv-SDS uses the empty prompt);
* ``NEW_TOKEN`` the attacker's new word ("sks" in DreamBooth, S* in textual inversion), trained only by personalisation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from minimdm.bfn.nets import TimeFeatures
from minimdm.rid.autoencoder import Autoencoder, train_autoencoder
from minimdm.rid.data import SIDE, TrainingDigits
from minimdm.train import TrainConfig, train

NULL_SLOT = 10
NEW_TOKEN = 11
N_SLOTS = 12


class EpsilonMLP(nn.Module):
    """epsilon_theta(z_t, t, c): (B, D), (B,) integer steps, (B,) slots -> (B, D). A residual MLP."""

    def __init__(self, data_dim: int, n_steps: int, hidden: int = 128, depth: int = 3):
        super().__init__()
        self.n_steps = n_steps
        self.time_features = TimeFeatures()
        self.input = nn.Linear(data_dim, hidden)
        self.time = nn.Sequential(nn.Linear(self.time_features.dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.class_embedding = nn.Embedding(N_SLOTS, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, hidden))
            for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, data_dim))

    def forward(self, z_t: Tensor, t: Tensor, slots: Tensor) -> Tensor:
        h = self.input(z_t) + self.time(self.time_features(t.to(z_t.dtype) / self.n_steps)) + self.class_embedding(slots)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


@dataclass
class Schedule:
    """Linear betas (Ho et al. Sec. 4 use 1e-4..0.02 over T = 1000; we use fewer, larger steps)."""

    betas: Tensor
    alphas_bar: Tensor

    @classmethod
    def linear(cls, n_steps: int, beta_start: float = 1e-4, beta_end: float = 0.05) -> "Schedule":
        betas = torch.linspace(beta_start, beta_end, n_steps, dtype=torch.float64)
        return cls(betas.float(), torch.cumprod(1 - betas, 0).float())


class DiffusionModel(nn.Module):
    """A base text-to-image model in miniature: optional frozen autoencoder + epsilon-net + noise schedule."""

    def __init__(self, autoencoder: Autoencoder | None, n_steps: int = 200, hidden: int = 128, depth: int = 3):
        super().__init__()
        self.autoencoder = autoencoder
        probe = None if autoencoder is None else torch.zeros(1, 1, SIDE, SIDE, device=autoencoder.latent_scale.device)
        self.data_dim = SIDE * SIDE if autoencoder is None else autoencoder.encode(probe).shape[1]
        self.eps_net = EpsilonMLP(self.data_dim, n_steps, hidden, depth)
        schedule = Schedule.linear(n_steps)
        self.register_buffer("betas", schedule.betas)
        self.register_buffer("alphas_bar", schedule.alphas_bar)
        self.n_steps = n_steps

    @property
    def space(self) -> str:
        return "pixel" if self.autoencoder is None else "latent"

    def encode(self, images: Tensor) -> Tensor:  # (B, 1, 8, 8) -> (B, D); differentiable in the images
        return images.flatten(1) if self.autoencoder is None else self.autoencoder.encode(images)

    def decode(self, z: Tensor) -> Tensor:  # (B, D) -> (B, 1, 8, 8) in [-1, 1]
        images = z.reshape(-1, 1, SIDE, SIDE) if self.autoencoder is None else self.autoencoder.decode(z)
        return images.clamp(-1, 1)

    def noise(self, z0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps   (Ho et al. Eq. 4)."""
        alpha_bar = self.alphas_bar[t].unsqueeze(-1)
        return alpha_bar.sqrt() * z0 + (1 - alpha_bar).sqrt() * noise

    def per_sample_loss(self, z0: Tensor, slots: Tensor, t: Tensor | None = None, noise: Tensor | None = None) -> Tensor:
        """|| eps - eps_theta(z_t, t, c) ||^2 averaged over dimensions: the simple loss (Ho et al. Eq. 14). (B,)"""
        t = torch.randint(0, self.n_steps, (len(z0),), device=z0.device) if t is None else t
        noise = torch.randn_like(z0) if noise is None else noise
        return (self.eps_net(self.noise(z0, t, noise), t, slots) - noise).pow(2).mean(-1)

    @torch.no_grad()
    def sample(self, n: int, slot: int, generator: torch.Generator | None = None, batch_size: int = 1024) -> Tensor:
        """Ancestral sampling (Ho et al. Algorithm 2, sigma_t^2 = beta_t), decoded to images (n, 1, 8, 8)."""
        device = self.betas.device
        chunks = []
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            slots = torch.full((m,), slot, device=device, dtype=torch.long)
            z = torch.randn(m, self.data_dim, device=device, generator=generator)
            for step in reversed(range(self.n_steps)):
                t = torch.full((m,), step, device=device, dtype=torch.long)
                beta, alpha_bar = self.betas[step], self.alphas_bar[step]
                eps = self.eps_net(z, t, slots)
                z = (z - beta / (1 - alpha_bar).sqrt() * eps) / (1 - beta).sqrt()
                if step > 0:
                    z = z + beta.sqrt() * torch.randn(z.shape, device=device, generator=generator)
            chunks.append(self.decode(z))
        return torch.cat(chunks)


def conditional_loss(model: DiffusionModel, batch, drop_label: float = 0.1) -> Tensor:
    """Training loss with labels replaced by the empty prompt with probability ``drop_label``."""
    images, labels = batch
    slots = torch.where(torch.rand(len(labels), device=labels.device) < drop_label, NULL_SLOT, labels)
    with torch.no_grad():
        z0 = model.encode(images)
    return model.per_sample_loss(z0, slots).mean()


def train_base_model(data: TrainingDigits, space: str, *, ae_steps: int, steps: int, batch_size: int = 256,
                     lr: float = 3e-3, n_steps: int = 200, hidden: int = 128, seed: int = 0,
                     device: str | torch.device = "cpu") -> DiffusionModel:
    """Train a base model on non-identity digits only; ``space`` is "latent" (autoencoder first) or "pixel"."""
    if space not in ("latent", "pixel"):
        raise ValueError(f"space={space!r} must be 'latent' or 'pixel'")
    if not isinstance(data, TrainingDigits):
        raise ValueError("data must be a TrainingDigits (the pipeline that proves the identity class is absent)")
    autoencoder = train_autoencoder(data, ae_steps, seed=seed, device=device) if space == "latent" else None
    torch.manual_seed(seed)
    model = DiffusionModel(autoencoder, n_steps=n_steps, hidden=hidden).to(device)
    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=min(100, steps // 10 + 1), weight_decay=0.0, seed=seed,
                      device=str(device), progress=False, log_every=max(1, steps), amp=False)
    train(model, conditional_loss, lambda step: data.batch(batch_size), cfg)
    return model.eval().requires_grad_(False)
