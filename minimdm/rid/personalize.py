"""The attacker: few-shot personalisation of a base model on the K (possibly protected) photos of one identity.

* DreamBooth-style (Ruiz et al., arXiv 2208.12242): fine-tune the whole denoiser together with a new word, so
  that the prompt "a photo of sks" (here: the slot ``NEW_TOKEN``) reproduces the subject. Their class-specific prior-preservation
  loss is optional: a second term keeps the other classes alive using non-identity digits.
* Textual-inversion-style (Gal et al., arXiv 2208.01618): freeze the denoiser and learn only the new
  word's embedding v* = argmin_v E || eps - eps_theta(z_t, t, c(v)) ||^2.

Both minimise the same diffusion loss on the encoded photos z0 = E(x'); that is why a perturbation which makes E(x')
(or the denoising of it) wrong spoils what the new word learns.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor

from minimdm.rid.data import TrainingDigits, check_images
from minimdm.rid.ddpm import NEW_TOKEN, NULL_SLOT, DiffusionModel
from minimdm.train import TrainConfig, train

METHODS = ("dreambooth", "textual_inversion")


def personalize(base: DiffusionModel, photos: Tensor, method: str = "dreambooth", *, steps: int = 300,
                lr: float | None = None, batch_size: int = 128, seed: int = 0,
                prior: TrainingDigits | None = None) -> DiffusionModel:
    """A personalised copy of ``base`` (the base itself is untouched); sample it with slot ``NEW_TOKEN``."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} must be one of {METHODS}")
    check_images(photos, "photos")
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    lr = lr if lr is not None else {"dreambooth": 1e-3, "textual_inversion": 2e-2}[method]
    model = copy.deepcopy(base).requires_grad_(False)
    device = model.betas.device
    embedding = model.eps_net.class_embedding.weight
    with torch.no_grad():
        embedding[NEW_TOKEN] = embedding[NULL_SLOT]  # the new word starts as "a digit" (TI's coarse initial word)
        z0 = model.encode(photos.to(device))  # the attacker encodes the published images once
    if method == "dreambooth":
        model.eps_net.requires_grad_(True)
    else:
        embedding.requires_grad_(True)
        only_new_word = torch.zeros(len(embedding), 1, device=device)
        only_new_word[NEW_TOKEN] = 1
        embedding.register_hook(lambda grad: grad * only_new_word)  # every other word stays as it was

    def batch(step):
        index = torch.randint(0, len(z0), (batch_size,), device=device)
        if prior is None:
            return (z0[index],)
        prior_images, prior_labels = prior.batch(batch_size)
        return z0[index], prior_images.to(device), prior_labels.to(device)

    def loss(_, batch):
        instance = model.per_sample_loss(batch[0], torch.full((len(batch[0]),), NEW_TOKEN, device=device)).mean()
        if prior is None:
            return instance
        return instance + model.per_sample_loss(model.encode(batch[1]), batch[2]).mean()  # DreamBooth's prior-preservation term, weight 1

    cfg = TrainConfig(steps=steps, lr=lr, warmup_steps=min(20, steps // 10 + 1), weight_decay=0.0, seed=seed,
                      device=str(device), progress=False, log_every=max(1, steps), amp=False)
    train(model.eps_net, loss, batch, cfg)
    return model.eval().requires_grad_(False)


def generate_identity(model: DiffusionModel, n: int, seed: int = 0) -> Tensor:
    """n images of the personalised word "sks" (n, 1, 8, 8)."""
    generator = torch.Generator(device=model.betas.device).manual_seed(seed)
    return model.sample(n, NEW_TOKEN, generator=generator)
