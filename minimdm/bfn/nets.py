"""Small networks for the BFN notebooks: an MLP for 2-D points and a residual conv net for 8x8 digits.

Both take the BFN input parameters and the time, ``net(inputs, t)`` with t of shape (B,), and return raw outputs
that a wrapper in ``continuous`` / ``discretised`` / ``discrete`` turns into an output distribution.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class TimeFeatures(nn.Module):
    """[2t - 1, sin(2 pi f t), cos(2 pi f t)] for frequencies f = 1, 2, 4, ... (fixed, not learned)."""

    def __init__(self, n_frequencies: int = 8):
        super().__init__()
        self.register_buffer("frequencies", 2 * math.pi * 2.0 ** torch.arange(n_frequencies), persistent=False)
        self.dim = 2 * n_frequencies + 1

    def forward(self, t: Tensor) -> Tensor:  # (B,) -> (B, dim)
        angles = t.unsqueeze(-1) * self.frequencies
        return torch.cat([2 * t.unsqueeze(-1) - 1, torch.sin(angles), torch.cos(angles)], dim=-1)


class PointMLP(nn.Module):
    """MLP on (input vector, time features): (B, in_dim), (B,) -> (B, out_dim). For 2-D data: in = out = 2 (eps_hat)."""

    def __init__(self, in_dim: int = 2, out_dim: int = 2, hidden: int = 128, depth: int = 3):
        super().__init__()
        self.time_features = TimeFeatures()
        layers, width = [], in_dim + self.time_features.dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden, out_dim)
        nn.init.zeros_(self.head.weight)  # start from eps_hat = 0: x_hat = mu / gamma, a harmless first guess
        nn.init.zeros_(self.head.bias)

    def forward(self, inputs: Tensor, t: Tensor) -> Tensor:
        return self.head(self.body(torch.cat([inputs, self.time_features(t.to(inputs.dtype))], dim=-1)))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, time_dim: int):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(8, channels), nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.time_shift = nn.Linear(time_dim, channels)  # the time enters as a per-channel shift

    def forward(self, h: Tensor, time_embedding: Tensor) -> Tensor:
        out = self.conv1(nn.functional.silu(self.norm1(h)))
        out = out + self.time_shift(time_embedding)[:, :, None, None]
        out = self.conv2(nn.functional.silu(self.norm2(out)))
        return h + out


class DigitsConvNet(nn.Module):
    """Residual conv net for 8x8 images: (B, 64, in_channels), (B,) -> (B, 64, out_channels).

    Two fixed coordinate channels tell it where each pixel is; after a few 3x3 layers every output sees the whole
    image. Discretised BFN: in = 1 (mu), out = 2 (mu_eps, ln sigma_eps). Discrete BFN: in = out = K (2 theta - 1 in,
    logits out).
    """

    def __init__(self, in_channels: int, out_channels: int, channels: int = 32, n_blocks: int = 2, side: int = 8):
        super().__init__()
        if channels < 8 or channels % 8:
            raise ValueError(f"channels={channels} must be a positive multiple of 8 (its GroupNorms have 8 groups)")
        self.side, self.in_channels = side, in_channels
        self.time_features = TimeFeatures()
        time_dim = 4 * channels
        self.time_mlp = nn.Sequential(nn.Linear(self.time_features.dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        coords = torch.linspace(-1, 1, side)
        self.register_buffer("coordinates", torch.stack(torch.meshgrid(coords, coords, indexing="ij")), persistent=False)
        self.stem = nn.Conv2d(in_channels + 2, channels, 3, padding=1)
        self.blocks = nn.ModuleList(ResidualBlock(channels, time_dim) for _ in range(n_blocks))
        self.head = nn.Sequential(nn.GroupNorm(8, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, inputs: Tensor, t: Tensor) -> Tensor:
        batch = inputs.shape[0]
        image = inputs.reshape(batch, self.side, self.side, self.in_channels).permute(0, 3, 1, 2)  # (B, C, 8, 8)
        image = torch.cat([image, self.coordinates.expand(batch, -1, -1, -1).to(image.dtype)], dim=1)
        time_embedding = self.time_mlp(self.time_features(t.to(inputs.dtype)))
        h = self.stem(image)
        for block in self.blocks:
            h = block(h, time_embedding)
        return self.head(h).permute(0, 2, 3, 1).reshape(batch, self.side * self.side, -1)  # (B, 64, out)
