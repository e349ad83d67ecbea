"""RID in miniature: budgets, the data pipeline, the defender's one forward pass, PGD, the judge, metrics, errors."""
import math

import pytest
import torch

from minimdm.rid.data import TrainingDigits, load_rid_digits
from minimdm.rid.ddpm import NEW_TOKEN, NULL_SLOT, DiffusionModel, train_base_model
from minimdm.rid.defenses import (Defender, adv_sds_loss, aspl, diffusion_loss_of_images, pgd_advdm, train_defender,
                                  uniform_noise)
from minimdm.rid.autoencoder import Autoencoder
from minimdm.rid.experiment import attack_and_judge
from minimdm.rid.judge import Judge, accuracy, train_judge
from minimdm.rid.metrics import frechet_distance, linf, psnr
from minimdm.rid.personalize import personalize
from minimdm.rid.postprocess import diffpure, quantise_blur


@pytest.fixture(scope="module")
def digits():
    return load_rid_digits(identity=8)


@pytest.fixture(scope="module")
def untrained_bases():
    torch.manual_seed(0)
    return {"latent": DiffusionModel(Autoencoder()).eval().requires_grad_(False),
            "pixel": DiffusionModel(None).eval().requires_grad_(False)}


def test_identity_class_never_in_training_data(digits):
    training = digits.base_training_set()
    assert not bool((training.labels == digits.identity).any())
    assert len(training.labels) == int((digits.train_labels != digits.identity).sum())
    # no identity image slips in under another label: compare pixels
    identity_images = digits.train_images[digits.train_labels == digits.identity].flatten(1)
    distances = torch.cdist(training.images.flatten(1), identity_images)
    assert float(distances.min()) > 0
    with pytest.raises(ValueError, match="identity class 8"):
        TrainingDigits(digits.train_images, digits.train_labels, identity=8)


def test_identity_photos_and_reference_are_the_identity(digits):
    photos = digits.identity_photos(8, seed=1)
    assert photos.shape == (8, 1, 8, 8)
    eights = digits.train_images[digits.train_labels == 8].flatten(1)
    assert float(torch.cdist(photos.flatten(1), eights).min(1).values.max()) == 0  # each photo is a training 8
    assert torch.equal(digits.identity_reference(), digits.test_images[digits.test_labels == 8])
    assert len(digits.identity_reference()) > 10


def test_training_functions_demand_the_checked_pipeline(digits, untrained_bases):
    raw = (digits.train_images, digits.train_labels)
    with pytest.raises(ValueError, match="TrainingDigits"):
        train_base_model(raw, "pixel", ae_steps=1, steps=1)
    with pytest.raises(ValueError, match="TrainingDigits"):
        train_defender([untrained_bases["pixel"]], raw, 0.1, steps=1)


@pytest.mark.parametrize("epsilon", [0.01, 0.1, 0.5])
@pytest.mark.parametrize("space", ["latent", "pixel"])
def test_every_perturbation_stays_within_budget(digits, untrained_bases, epsilon, space):
    base = untrained_bases[space]
    photos = digits.identity_photos(4)
    defender = Defender(epsilon)
    with torch.no_grad():  # a large random head: tanh saturates, the budget must still hold
        defender.net.head[-1].weight.normal_(0, 50)
        defender.net.head[-1].bias.normal_(0, 50)
    protected = {"noise": uniform_noise(photos, epsilon), "pgd": pgd_advdm(base, photos, epsilon, steps=5),
                 "aspl": aspl(base, photos, epsilon, rounds=2, fine_tune_steps=1, pgd_steps=2),
                 "rid": defender.protect(photos)}
    for name, images in protected.items():
        assert linf(images, photos) <= epsilon + 1e-6, name
        assert float(images.min()) >= -1 and float(images.max()) <= 1, name
    assert linf(protected["rid"], photos) > 0.5 * epsilon  # the saturated defender really uses its budget


def test_defender_starts_at_zero_and_infers_in_one_pass_without_the_base(digits, untrained_bases):
    photos = digits.identity_photos(4)
    defender = Defender(0.1)
    assert torch.equal(defender.protect(photos), photos)  # zero-initialised head: delta = 0
    base = untrained_bases["latent"]
    calls = []
    hooks = [module.register_forward_hook(lambda *args: calls.append(1)) for module in base.modules()]
    forwards = []
    defender_hook = defender.register_forward_hook(lambda *args: forwards.append(1))
    try:
        protected = defender.protect(photos)
    finally:
        for hook in hooks + [defender_hook]:
            hook.remove()
    assert calls == [] and forwards == [1]  # one defender forward, no base model module ran
    assert not protected.requires_grad


def test_adv_sds_gradient_is_minus_the_sds_gradient(digits, untrained_bases, monkeypatch):
    """dL_adv/dz_t = -w (eps_hat - eps), minus DreamFusion's SDS gradient, for adv_sds_loss's own draws of t and eps."""
    base = untrained_bases["latent"]
    seen, noise = {}, base.noise

    def noise_and_record(z0, t, eps):  # the z_t that adv_sds_loss builds, kept for its gradient
        z_t = noise(z0, t, eps)
        z_t.retain_grad()
        seen.update(z_t=z_t, t=t, eps=eps)
        return z_t

    monkeypatch.setattr(base, "noise", noise_and_record)
    photos = digits.identity_photos(3)
    adv_sds_loss(Defender(0.1), [base], photos).backward()
    z_t, t, eps = seen["z_t"], seen["t"], seen["eps"]
    with torch.no_grad():
        eps_hat = base.eps_net(z_t, t, torch.full_like(t, NULL_SLOT))
    weight = (1 - base.alphas_bar[t]).unsqueeze(-1)
    torch.testing.assert_close(z_t.grad, -weight * (eps_hat - eps) / len(photos))


def test_adv_sds_reaches_the_defender_only_through_the_encoder(digits, untrained_bases):
    defender = Defender(0.1)
    loss = adv_sds_loss(defender, [untrained_bases["latent"], untrained_bases["pixel"]], digits.identity_photos(4))
    loss.backward()
    assert defender.net.head[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in untrained_bases["latent"].parameters())


def test_pgd_increases_the_loss_it_attacks(digits):
    base = train_base_model(digits.base_training_set(), "latent", ae_steps=60, steps=150, hidden=64)
    photos = digits.identity_photos(8)

    def loss(images):  # the same Monte-Carlo draws for both images: a paired comparison
        torch.manual_seed(123)
        return float(diffusion_loss_of_images(base, images, NULL_SLOT, samples=64).mean())

    adversarial = pgd_advdm(base, photos, 0.2, steps=20)
    assert loss(adversarial) > 1.05 * loss(photos)
    assert loss(adversarial) > 1.05 * loss(uniform_noise(photos, 0.2))  # direction matters, not just size


def test_judge_is_accurate_on_clean_held_out_digits(digits):
    judge = train_judge(digits.train_images, digits.train_labels, steps=400)  # ~10 s on one idle CPU thread
    assert accuracy(judge, digits.test_images, digits.test_labels) > 0.95


def test_a_hardened_judge_reads_digits_through_sign_noise(digits):
    plain, hardened = (train_judge(digits.train_images, digits.train_labels, steps=1000, sign_noise=s) for s in (0, 0.4))
    noisy = uniform_noise(digits.test_images, 0.4)
    assert accuracy(hardened, digits.test_images, digits.test_labels) > 0.95
    assert accuracy(hardened, noisy, digits.test_labels) > accuracy(plain, noisy, digits.test_labels) + 0.03
    with pytest.raises(ValueError, match="sign_noise"):
        train_judge(digits.train_images, digits.train_labels, steps=1, sign_noise=2)


def _constant_judge(label: int):
    """A judge that calls every image ``label``: its verdicts are known without looking at the generations."""
    judge = Judge()
    with torch.no_grad():
        judge.classifier.weight.zero_()
        judge.classifier.bias.copy_(torch.arange(10) == label)
    return judge.eval()


def test_a_robust_judge_scores_the_same_generations_a_second_time(digits, untrained_bases):
    outcome = attack_and_judge(untrained_bases["pixel"], digits.identity_photos(2), _constant_judge(0), digits.identity,
                               digits.identity_reference()[:8], steps=1, n_samples=4, seeds=(0, 1),
                               robust_judge=_constant_judge(digits.identity))
    assert outcome.success == [0.0, 0.0] and outcome.robust_success == [1.0, 1.0]
    assert outcome.robust_mean == 1.0 and outcome.robust_error == 0.0
    unscored = attack_and_judge(untrained_bases["pixel"], digits.identity_photos(2), _constant_judge(0), digits.identity,
                                digits.identity_reference()[:8], steps=1, n_samples=4)
    with pytest.raises(ValueError, match="robust_judge"):
        unscored.robust_mean


def test_personalisation_only_moves_what_it_should(digits, untrained_bases):
    base = untrained_bases["pixel"]
    photos = digits.identity_photos(4)
    inverted = personalize(base, photos, "textual_inversion", steps=3, batch_size=8)
    changed = (inverted.eps_net.class_embedding.weight != base.eps_net.class_embedding.weight).any(-1)
    assert changed.nonzero().flatten().tolist() == [NEW_TOKEN]
    assert torch.equal(inverted.eps_net.head[1].weight, base.eps_net.head[1].weight)
    tuned = personalize(base, photos, "dreambooth", steps=3, batch_size=8)
    assert not torch.equal(tuned.eps_net.head[1].weight, base.eps_net.head[1].weight)


def test_frechet_distance_matches_closed_form():
    # Gaussians N(0, I) and N(m, 4 I) in 2-D: |m|^2 + tr(I + 4I - 2 * 2I) = |m|^2 + 2
    torch.manual_seed(0)
    a = torch.randn(200_000, 2)
    b = 2 * torch.randn(200_000, 2) + torch.tensor([3.0, 4.0])
    assert frechet_distance(a, b) == pytest.approx(27.0, rel=0.01)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_psnr_and_linf_by_hand():
    clean = torch.zeros(1, 1, 8, 8)
    protected = clean + 0.1
    assert psnr(protected, clean) == pytest.approx(10 * math.log10(4 / 0.01))
    assert linf(protected, clean) == pytest.approx(0.1)


def test_quantise_blur_by_hand():
    images = torch.full((1, 1, 8, 8), -1.0)
    images[..., 0, 0] = 1.0
    out = quantise_blur(images, bits=1, blur=2)
    assert out[0, 0, 0, 0] == pytest.approx(-0.5)  # mean of (1, -1, -1, -1)
    assert out[0, 0, 7, 7] == pytest.approx(-1.0)
    assert torch.equal(quantise_blur(images, bits=4, blur=1), images)  # -1 and 1 are on the 4-bit grid


def test_diffpure_returns_images_in_range(digits, untrained_bases):
    out = diffpure(untrained_bases["pixel"], digits.identity_photos(3), strength=0.1)
    assert out.shape == (3, 1, 8, 8) and float(out.abs().max()) <= 1


@pytest.mark.parametrize("call, message", [
    (lambda base, x: uniform_noise(x, 0.0), "epsilon=0.0 must be > 0"),
    (lambda base, x: pgd_advdm(base, x, -0.1), "epsilon=-0.1 must be > 0"),
    (lambda base, x: Defender(0), "epsilon=0 must be > 0"),
    (lambda base, x: pgd_advdm(base, 3 * x, 0.1), r"range \[-1, 1\]"),
    (lambda base, x: Defender(0.1).protect((x + 1) * 127.5), r"range \[-1, 1\]"),
    (lambda base, x: aspl(base, x.reshape(-1, 64), 0.1), r"shape \(B, 1, 8, 8\)"),
    (lambda base, x: Defender(0.1).protect(x[:, :, :4]), r"shape \(B, 1, 8, 8\)"),
    (lambda base, x: personalize(base, x.long(), steps=1), "float tensor"),
    (lambda base, x: personalize(base, x, "lora"), "method='lora'"),
    (lambda base, x: quantise_blur(x, bits=0), "bits=0"),
    (lambda base, x: diffpure(base, x, strength=0), "strength=0"),
    (lambda base, x: load_rid_digits(identity=10), "identity=10"),
])
def test_bad_input_gives_one_line_error(digits, untrained_bases, call, message):
    with pytest.raises(ValueError, match=message) as error:
        call(untrained_bases["pixel"], digits.identity_photos(2))
    assert "\n" not in str(error.value)
