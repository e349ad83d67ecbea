"""Protections a victim can apply to their photos before posting them: x' = clip(x + delta, -1, 1), |delta|_inf <= eps.

* ``uniform_noise``: random signs +-eps on every pixel (the control: the same L-infinity budget and the largest L2
  norm, but no direction);
* ``pgd_advdm``: AdvDM (Liang et al., arXiv 2302.04578): projected sign-gradient ascent on the base model's
  diffusion loss E_{t,eps} || eps_theta(z_t(E(x')), t) - eps ||^2, a Monte-Carlo estimate per step;
* ``aspl``: Anti-DreamBooth's ASPL (Le et al., arXiv 2303.15433): alternate (i) a surrogate
  fine-tuned briefly on the clean photos, (ii) PGD against that surrogate, (iii) fine-tuning the surrogate on the
  perturbed photos;
* ``Defender``: RID (Guo et al., arXiv 2412.09844, method section): a network that outputs delta = eps tanh(h(x)) in one
  forward pass, its last layer zero-initialised so that delta = 0 at the start, trained once with Adversarial Score
  Distillation Sampling (Adv-SDS) against one or several frozen base models (``train_defender``).
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from minimdm.bfn.nets import DigitsConvNet
from minimdm.rid.data import SIDE, TrainingDigits, check_epsilon, check_images
from minimdm.rid.ddpm import NEW_TOKEN, NULL_SLOT, DiffusionModel
from minimdm.rng import seeded
from minimdm.train import TrainConfig, train


def apply_perturbation(images: Tensor, delta: Tensor) -> Tensor:
    """x' = clip(x + delta, -1, 1): clipping can only shrink |x' - x|, so the budget still holds."""
    return (images + delta).clamp(-1, 1)


def uniform_noise(images: Tensor, epsilon: float, seed: int = 0) -> Tensor:
    check_images(images)
    check_epsilon(epsilon)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    signs = torch.randint(0, 2, images.shape, generator=generator, device=images.device).to(images.dtype) * 2 - 1
    return apply_perturbation(images, epsilon * signs)


def diffusion_loss_of_images(base: DiffusionModel, images: Tensor, slot: int, samples: int = 8) -> Tensor:
    """Monte-Carlo estimate of E_{t, eps} || eps_theta(z_t, t, c) - eps ||^2 with z0 = E(images), one per image. (B,)"""
    z0 = base.encode(images).repeat_interleave(samples, 0)
    slots = torch.full((len(z0),), slot, device=z0.device, dtype=torch.long)
    return base.per_sample_loss(z0, slots).reshape(len(images), samples).mean(-1)


def _pgd(base: DiffusionModel, clean: Tensor, start: Tensor, epsilon: float, steps: int, step_size: float,
         slot: int, samples: int) -> Tensor:
    """Sign-gradient ascent on the diffusion loss, projected onto the eps-ball around ``clean`` and onto [-1, 1]."""
    adversarial = start.clone()
    for _ in range(steps):
        adversarial.requires_grad_(True)
        loss = diffusion_loss_of_images(base, adversarial, slot, samples).sum()
        (grad,) = torch.autograd.grad(loss, adversarial)
        with torch.no_grad():
            adversarial = adversarial + step_size * grad.sign()
            adversarial = apply_perturbation(clean, (adversarial - clean).clamp(-epsilon, epsilon))
    return adversarial.detach()


def pgd_advdm(base: DiffusionModel, images: Tensor, epsilon: float, steps: int = 100, step_size: float | None = None,
              samples: int = 8, seed: int = 0) -> Tensor:
    """AdvDM: maximise the frozen base model's diffusion loss (empty prompt) over the eps-ball. Returns x'."""
    check_images(images)
    check_epsilon(epsilon)
    step_size = epsilon / 10 if step_size is None else step_size
    with seeded(seed, images.device):
        return _pgd(base.requires_grad_(False), images, images, epsilon, steps, step_size, NULL_SLOT, samples)


def _fine_tune(model: DiffusionModel, optimizer: torch.optim.Optimizer, z0: Tensor, steps: int, batch_size: int = 64):
    slots = torch.full((batch_size,), NEW_TOKEN, device=z0.device, dtype=torch.long)
    for _ in range(steps):
        loss = model.per_sample_loss(z0[torch.randint(0, len(z0), (batch_size,), device=z0.device)], slots).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def aspl(base: DiffusionModel, images: Tensor, epsilon: float, rounds: int = 20, fine_tune_steps: int = 3,
         pgd_steps: int = 6, step_size: float | None = None, lr: float = 1e-3, samples: int = 8,
         seed: int = 0) -> Tensor:
    """Anti-DreamBooth's ASPL: the defender fine-tunes its own surrogate the way the attacker will. Returns x'."""
    check_images(images)
    check_epsilon(epsilon)
    step_size = epsilon / 10 if step_size is None else step_size
    with seeded(seed, images.device):
        surrogate = copy.deepcopy(base)
        surrogate.eps_net.requires_grad_(True)
        with torch.no_grad():
            surrogate.eps_net.class_embedding.weight[NEW_TOKEN] = surrogate.eps_net.class_embedding.weight[NULL_SLOT]
            clean_z0 = surrogate.encode(images)
        optimizer = torch.optim.Adam(surrogate.eps_net.parameters(), lr=lr)
        adversarial = images.clone()
        for _ in range(rounds):
            learner = copy.deepcopy(surrogate)  # (i) theta' <- theta, trained on the clean photos
            _fine_tune(learner, torch.optim.Adam(learner.eps_net.parameters(), lr=lr), clean_z0, fine_tune_steps)
            learner.requires_grad_(False)
            adversarial = _pgd(learner, images, adversarial, epsilon, pgd_steps, step_size, NEW_TOKEN, samples)  # (ii)
            with torch.no_grad():
                adversarial_z0 = surrogate.encode(adversarial)
            _fine_tune(surrogate, optimizer, adversarial_z0, fine_tune_steps)  # (iii) theta on the perturbed photos
        return adversarial


class Defender(nn.Module):
    """RID in miniature: delta(x) = eps * tanh(h(x)), h a small residual conv net whose last layer starts at zero.

    RID's net is a DiT whose adaLN conditioning vector is identically zero; ours reuses the course's digits conv net
    with its time input held at a constant, which likewise reduces to learned per-channel shifts.
    """

    def __init__(self, epsilon: float, channels: int = 8, n_blocks: int = 1):
        super().__init__()
        check_epsilon(epsilon)
        self.epsilon = epsilon
        self.net = DigitsConvNet(in_channels=1, out_channels=1, channels=channels, n_blocks=n_blocks)  # head = 0

    def perturbation(self, images: Tensor) -> Tensor:  # (B, 1, 8, 8) -> delta with |delta|_inf <= eps
        batch = len(images)
        h = self.net(images.reshape(batch, SIDE * SIDE, 1), torch.zeros(batch, device=images.device))
        return self.epsilon * torch.tanh(h.reshape(batch, 1, SIDE, SIDE))  # RID: the budget holds by construction

    def forward(self, images: Tensor) -> Tensor:
        return apply_perturbation(images, self.perturbation(images))

    @torch.no_grad()
    def protect(self, images: Tensor) -> Tensor:
        """Inference: one forward pass of the defender; no base model is involved."""
        check_images(images)
        return self(images)


def adv_sds_loss(defender: Defender, bases: list[DiffusionModel], images: Tensor) -> Tensor:
    """Adversarial SDS (RID, arXiv 2412.09844, method section), averaged over the ensemble of frozen base models.

    For each base k: z0 = E_k(x + delta_psi(x)), z_t = sqrt(abar) z0 + sqrt(1 - abar) eps, w(t) = 1 - abar_t and
        L_k = 1/2 || z_t - sg(z_t + w(t) (eps_hat_k(z_t, t, empty) - eps)) ||^2 ,
    so dL/dz_t = -w (eps_hat - eps): descending L in psi moves z_t along +w (eps_hat - eps). DreamFusion's SDS
    (Poole et al., arXiv 2209.14988, Eq. 3) uses w (eps_hat - eps) as a stand-in for the gradient of the denoising loss
    and descends it (towards what the model finds likely); Adv-SDS takes the opposite step.
    The denoiser's Jacobian is dropped (no backward pass through eps_hat); the gradient reaches psi through E_k.
    """
    protected = defender(images)
    losses = []
    for base in bases:
        z0 = base.encode(protected)
        t = torch.randint(0, base.n_steps, (len(z0),), device=z0.device)
        noise = torch.randn_like(z0)
        z_t = base.noise(z0, t, noise)
        with torch.no_grad():
            eps_hat = base.eps_net(z_t, t, torch.full_like(t, NULL_SLOT))
            weight = (1 - base.alphas_bar[t]).unsqueeze(-1)
            target = z_t + weight * (eps_hat - noise)
        losses.append(0.5 * (z_t - target).pow(2).sum(-1).mean())
    return torch.stack(losses).mean()


def train_defender(bases: list[DiffusionModel], data: TrainingDigits, epsilon: float, *, steps: int,
                   batch_size: int = 128, lr: float = 3e-3, seed: int = 0, channels: int = 8,
                   n_blocks: int = 1) -> Defender:
    """Train once on non-identity digits against frozen bases; afterwards protection costs one forward pass."""
    if not isinstance(data, TrainingDigits):
        raise ValueError("data must be a TrainingDigits (the pipeline that proves the identity class is absent)")
    if not bases:
        raise ValueError("bases must name at least one frozen base model")
    device = bases[0].betas.device
    for base in bases:
        base.requires_grad_(False)
    torch.manual_seed(seed)
    defender = Defender(epsilon, channels, n_blocks).to(device)
    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=min(100, steps // 10 + 1), weight_decay=0.0, seed=seed,
                      device=str(device), progress=False, log_every=max(1, steps), amp=False)
    train(defender, lambda model, batch: adv_sds_loss(model, bases, batch[0]), lambda step: data.batch(batch_size), cfg)
    return defender.eval().requires_grad_(False)
