"""RID in miniature: budgets, the data pipeline, the defender's one forward pass, PGD, the judge, metrics, errors."""
import copy
import math

import pytest
import torch
from torch import nn

from minimdm.rid.data import TrainingDigits, load_rid_digits
from minimdm.rid.ddpm import NEW_TOKEN, NULL_SLOT, DiffusionModel, train_base_model
from minimdm.rid.defenses import (Defender, adv_sds_loss, aspl, diffusion_loss_of_images, pgd_advdm, train_defender,
                                  uniform_noise)
from minimdm.rid.autoencoder import Autoencoder, train_autoencoder
from minimdm.rid.experiment import AttackOutcome, _mean_and_error, attack_and_judge
from minimdm.rid.judge import Judge, accuracy, train_judge
from minimdm.rid.metrics import frechet_distance, linf, no_digit_rate, psnr
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
    """With every base parameter left trainable, the loss's graph runs through the encoder only: the encoder gets a
    gradient, the eps-net (eps_hat is a stop-gradient target) and the decoder get none."""
    defender = Defender(0.1)
    latent = copy.deepcopy(untrained_bases["latent"]).requires_grad_(True)
    loss = adv_sds_loss(defender, [latent, untrained_bases["pixel"]], digits.identity_photos(4))
    loss.backward()
    assert defender.net.head[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in latent.autoencoder.encoder.parameters())
    assert all(p.grad is None for p in [*latent.eps_net.parameters(), *latent.autoencoder.decoder.parameters()])


def test_adv_sds_averages_over_the_ensemble(digits, untrained_bases):
    """L([a, b]) == (L([a]) + L([b])) / 2 with the same draws: each base draws its t and eps from the global generator
    in turn and the defender draws nothing, so re-seeding and scoring a then b alone replays the ensemble's draws."""
    defender = Defender(0.1)
    with torch.no_grad():  # a non-zero perturbation, so the two bases see different images from the clean ones
        defender.net.head[-1].weight.normal_(0, 1)
    photos, bases = digits.identity_photos(4), [untrained_bases["latent"], untrained_bases["pixel"]]
    torch.manual_seed(7)
    with torch.no_grad():
        ensemble = float(adv_sds_loss(defender, bases, photos))
        torch.manual_seed(7)
        first, second = (float(adv_sds_loss(defender, [base], photos)) for base in bases)
    assert first != pytest.approx(second, rel=0.01)  # a mean and a sum (or the first alone) give different numbers
    assert ensemble == pytest.approx((first + second) / 2, rel=1e-6)


def test_pgd_increases_the_loss_it_attacks(digits):
    base = train_base_model(digits.base_training_set(), "latent", ae_steps=60, steps=150, hidden=64)
    photos = digits.identity_photos(8)

    def loss(images):  # the same Monte-Carlo draws for both images: a paired comparison
        torch.manual_seed(123)
        return float(diffusion_loss_of_images(base, images, NULL_SLOT, samples=64).mean())

    adversarial = pgd_advdm(base, photos, 0.2, steps=20)
    assert loss(adversarial) > 1.05 * loss(photos)
    assert loss(adversarial) > 1.05 * loss(uniform_noise(photos, 0.2))  # direction matters, not just size


def test_defenses_draw_from_their_own_seed_and_give_the_caller_s_rng_back(digits, untrained_bases):
    base, photos = untrained_bases["latent"], digits.identity_photos(4)
    defenses = {"advdm": lambda: pgd_advdm(base, photos, 0.1, steps=2),
                "aspl": lambda: aspl(base, photos, 0.1, rounds=1, fine_tune_steps=1, pgd_steps=2)}
    for name, defend in defenses.items():
        torch.manual_seed(5)
        untouched = torch.rand(3)
        torch.manual_seed(5)
        first = defend()
        assert torch.equal(torch.rand(3), untouched), name  # the caller's stream goes on as if nothing ran
        torch.manual_seed(6)
        assert torch.equal(defend(), first), name  # the defense's seed decides its draws, not the caller's state


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


def test_no_digit_rate_counts_top_probabilities_below_the_threshold(digits):
    """_constant_judge's logits are 1 at one class and 0 at nine, so its top probability is p = e / (e + 9) ~ 0.23 on
    every image: the no-digit rate is 1 for any threshold above p (the default 0.5 included) and 0 below it."""
    judge, images = _constant_judge(3), digits.identity_photos(4)
    p = math.e / (math.e + 9)
    torch.testing.assert_close(judge(images).softmax(-1).max(-1).values, torch.full((4,), p))
    assert no_digit_rate(judge, images) == 1.0
    assert no_digit_rate(judge, images, threshold=p + 1e-3) == 1.0
    assert no_digit_rate(judge, images, threshold=p - 1e-3) == 0.0


def test_mean_and_error_by_hand():
    """Several seeds: the standard error of the mean across seeds, sqrt(sum (r - m)^2 / (n - 1) / n); for [0.25, 0.75]
    that is sqrt(0.125 / 1 / 2) = 0.25. One seed: the binomial sqrt(p (1 - p) / n_samples), for 0.25 of 48 samples
    sqrt(0.1875 / 48) = 0.0625."""
    assert _mean_and_error([0.25, 0.75], 4) == pytest.approx((0.5, 0.25), rel=1e-12)
    assert _mean_and_error([0.25], 48) == pytest.approx((0.25, 0.0625), rel=1e-12)
    outcome = AttackOutcome([0.25, 0.75], 0.0, 0.0, torch.zeros(1, 1, 8, 8), 4, robust_success=[0.25])
    assert (outcome.mean, outcome.error) == pytest.approx((0.5, 0.25), rel=1e-12)
    assert (outcome.robust_mean, outcome.robust_error) == pytest.approx((0.25, math.sqrt(0.1875 / 4)), rel=1e-12)


def test_uniform_noise_moves_every_pixel_by_exactly_epsilon_unless_clipped():
    """x' = clip(x + s eps, -1, 1), s = +-1: |x' - x| = eps wherever x +- eps stays in [-1, 1], x' is one of the two
    clipped values elsewhere, and the signs are fair (share of + within 5 standard errors 0.5 / sqrt(n) of 1/2)."""
    torch.manual_seed(0)
    epsilon, images = 0.1, torch.rand(256, 1, 8, 8) * 2 - 1
    moved = uniform_noise(images, epsilon) - images
    inside = images.abs() <= 1 - epsilon
    torch.testing.assert_close(moved[inside].abs(), torch.full_like(moved[inside], epsilon), rtol=0, atol=1e-6)
    up, down = (images + epsilon).clamp(-1, 1) - images, (images - epsilon).clamp(-1, 1) - images
    assert bool((torch.isclose(moved, up, atol=1e-6) | torch.isclose(moved, down, atol=1e-6))[~inside].all())
    n = int(inside.sum())
    assert float((moved[inside] > 0).double().mean()) == pytest.approx(0.5, abs=5 * 0.5 / math.sqrt(n))


def test_personalisation_only_moves_what_it_should(digits, untrained_bases):
    base = untrained_bases["pixel"]
    photos = digits.identity_photos(4)
    inverted = personalize(base, photos, "textual_inversion", steps=3, batch_size=8)
    changed = (inverted.eps_net.class_embedding.weight != base.eps_net.class_embedding.weight).any(-1)
    assert changed.nonzero().flatten().tolist() == [NEW_TOKEN]
    assert torch.equal(inverted.eps_net.head[1].weight, base.eps_net.head[1].weight)
    tuned = personalize(base, photos, "dreambooth", steps=3, batch_size=8)
    assert not torch.equal(tuned.eps_net.head[1].weight, base.eps_net.head[1].weight)


@pytest.mark.parametrize("with_prior", [False, True])
def test_dreambooth_loss_is_the_instance_term_plus_the_prior_term(digits, untrained_bases, monkeypatch, with_prior):
    """The trainer gets loss = E||eps - eps_hat(z_t, t, sks)||^2 on the encoded photos, plus (with a prior set) the
    same loss of the prior digits under their own labels, weight 1 (DreamBooth's prior preservation). The batch and
    the noise draws are replayed from the seed and the two terms computed by hand on the model being tuned."""
    seen = {}
    monkeypatch.setattr("minimdm.rid.personalize.train",
                        lambda net, loss, batch, cfg: seen.update(loss=loss, batch=batch))
    base, photos = untrained_bases["latent"], digits.identity_photos(4)
    prior = digits.base_training_set() if with_prior else None
    model = personalize(base, photos, "dreambooth", batch_size=6, prior=prior)  # the copy the loss trains
    with torch.no_grad():  # the new word starts as the null slot; move it (not by a constant: the LayerNorms would
        new_word = model.eps_net.class_embedding.weight[NEW_TOKEN]  # remove that), so a loss on the wrong slot differs
        new_word += torch.linspace(-1, 1, len(new_word))
    torch.manual_seed(3)
    batch = seen["batch"](0)
    assert len(batch) == (3 if with_prior else 1)
    torch.manual_seed(4)
    loss = seen["loss"](None, batch)
    torch.manual_seed(4)
    instance = model.per_sample_loss(batch[0], torch.full((6,), NEW_TOKEN)).mean()
    expected = instance + model.per_sample_loss(model.encode(batch[1]), batch[2]).mean() if with_prior else instance
    assert torch.equal(loss, expected)


def _points_with_moments(mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """The 2D rows mean +- c l_i, D = len(mean), l_i the columns of L, L L^T = cov, c^2 = (2D - 1) / 2: their sample
    mean is ``mean`` and their unbiased sample covariance is 2 c^2 L L^T / (2D - 1) = ``cov``, exactly."""
    offsets = math.sqrt((2 * len(mean) - 1) / 2) * torch.linalg.cholesky(cov).T
    return torch.cat([mean + offsets, mean - offsets])


def test_frechet_distance_matches_closed_form_for_non_commuting_covariances():
    """For a 2x2 SPD matrix M with eigenvalues l1, l2: tr M^1/2 = sqrt(l1) + sqrt(l2) = sqrt(tr M + 2 sqrt(det M)).
    With M = S_a^1/2 S_b S_a^1/2, tr M = tr(S_a S_b) and det M = det S_a det S_b, so
    FD = |mu_a - mu_b|^2 + tr S_a + tr S_b - 2 sqrt(tr(S_a S_b) + 2 sqrt(det S_a det S_b)). S_a S_b != S_b S_a here,
    so the wrong cross term tr(S_a^1/2 S_b^1/2) gives another number."""
    mu_a, mu_b = torch.tensor([0.0, 0.0], dtype=torch.float64), torch.tensor([1.0, -2.0], dtype=torch.float64)
    cov_a = torch.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    cov_b = torch.tensor([[1.0, 0.0], [0.0, 9.0]], dtype=torch.float64)
    assert not torch.allclose(cov_a @ cov_b, cov_b @ cov_a)
    a, b = _points_with_moments(mu_a, cov_a), _points_with_moments(mu_b, cov_b)
    cross = math.sqrt(torch.trace(cov_a @ cov_b) + 2 * math.sqrt(torch.det(cov_a) * torch.det(cov_b)))
    expected = float((mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b)) - 2 * cross
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)
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


def test_quantise_rounds_to_the_nearest_of_2_to_the_bits_levels():
    """bits=b keeps the 2^b evenly spaced levels linspace(-1, 1, 2^b) and moves each pixel to its nearest level
    (blur=1: no blur). bits=2: levels -1, -1/3, 1/3, 1, so 0.2 -> 1/3 (2^b + 1 levels would give 0)."""
    values = torch.linspace(-0.99, 0.99, 64).reshape(1, 1, 8, 8)  # no value is midway between two levels
    for bits in (1, 2, 3):
        levels = torch.linspace(-1, 1, 2 ** bits)
        nearest = levels[(values.unsqueeze(-1) - levels).abs().argmin(-1)]
        torch.testing.assert_close(quantise_blur(values, bits=bits, blur=1), nearest)
    assert float(quantise_blur(torch.full((1, 1, 8, 8), 0.2), bits=2, blur=1).max()) == pytest.approx(1 / 3)


ORACLE_STEPS = 50


def _linear_schedule(n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The schedule's definition, recomputed in float64: beta_i = b0 + (b1 - b0) i / (T - 1) with Schedule.linear's
    defaults b0 = 1e-4, b1 = 0.05, and abar_t = prod_{i <= t} (1 - beta_i)."""
    betas = torch.tensor([1e-4 + (0.05 - 1e-4) * i / (n_steps - 1) for i in range(n_steps)], dtype=torch.float64)
    alphas_bar = torch.tensor([math.prod(1 - float(b) for b in betas[:t + 1]) for t in range(n_steps)],
                              dtype=torch.float64)
    return betas, alphas_bar


class _ExactEps(nn.Module):
    """The exact eps-prediction for data z0 ~ N(mean, var) per coordinate (var = 0: a point mass at ``mean``).
    z_t = sqrt(abar) z0 + sqrt(1 - abar) eps is jointly Gaussian with eps, so
    E[eps | z_t] = sqrt(1 - abar) (z_t - sqrt(abar) mean) / (abar var + 1 - abar). Records each call's steps and
    slots."""

    def __init__(self, mean: torch.Tensor, var: float = 0.0):
        super().__init__()
        self.alphas_bar = _linear_schedule(ORACLE_STEPS)[1]
        self.mean, self.var, self.calls = mean.double(), var, []

    def forward(self, z_t, t, slots):
        self.calls.append((t.unique().tolist(), slots.unique().tolist()))
        abar = self.alphas_bar[t].unsqueeze(-1)
        eps = (1 - abar).sqrt() * (z_t.double() - abar.sqrt() * self.mean) / (abar * self.var + 1 - abar)
        return eps.to(z_t.dtype)


def _reverse_moments(start_step: int, mean: float, var: float, z_mean: float, z_var: float) -> tuple[float, float]:
    """Mean and variance after Ho et al.'s Algorithm 2 from z ~ N(z_mean, z_var) at step start_step - 1 down to 0 with
    _ExactEps of N(mean, var): eps = c (z - sqrt(abar) mean) is linear, so each step is z <- A z + B + sqrt(beta) xi
    (no xi at step 0) with k = beta / sqrt(1 - abar), A = (1 - k c) / sqrt(1 - beta), B = k c sqrt(abar) mean /
    sqrt(1 - beta)."""
    betas, alphas_bar = (x.tolist() for x in _linear_schedule(ORACLE_STEPS))
    for step in reversed(range(start_step)):
        beta, abar = betas[step], alphas_bar[step]
        c = math.sqrt(1 - abar) / (abar * var + 1 - abar)
        k = beta / math.sqrt(1 - abar)
        a, b = (1 - k * c) / math.sqrt(1 - beta), k * c * math.sqrt(abar) * mean / math.sqrt(1 - beta)
        z_mean, z_var = a * z_mean + b, a * a * z_var + (beta if step > 0 else 0.0)
    return z_mean, z_var


def _clamped_normal_moments(mean: float, var: float) -> tuple[float, float]:
    """Mean and variance of Y = clamp(X, -1, 1), X = mean + sd Z ~ N(mean, var) (decode() clamps): with
    a = (-1 - mean) / sd, b = (1 - mean) / sd, E[Z; a<Z<b] = pdf(a) - pdf(b), E[Z^2; a<Z<b] = P(a<Z<b) + a pdf(a)
    - b pdf(b), and Y = -1, +1 with the tail probabilities cdf(a), 1 - cdf(b)."""
    sd = math.sqrt(var)
    lo, hi = (-1 - mean) / sd, (1 - mean) / sd
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    pdf = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    p_lo, p_hi, p_in = cdf(lo), 1 - cdf(hi), cdf(hi) - cdf(lo)
    first = p_hi - p_lo + mean * p_in + sd * (pdf(lo) - pdf(hi))
    second = (p_lo + p_hi + (mean ** 2 + var) * p_in + 2 * mean * sd * (pdf(lo) - pdf(hi))
              + var * (lo * pdf(lo) - hi * pdf(hi)))
    return first, second - first ** 2


def _assert_moments(samples: torch.Tensor, mean: float, var: float):
    """N iid draws of clamp(N(mean, var), -1, 1): sample mean and variance against _clamped_normal_moments within 5
    standard errors estimated from the draws, sd / sqrt(N) and sqrt((m4 - s^4) / N) (m4 the 4th central moment)."""
    values = samples.double().flatten()
    n, expected_mean, expected_var = len(values), *_clamped_normal_moments(mean, var)
    centred = values - values.mean()
    assert float(values.mean()) == pytest.approx(expected_mean, abs=5 * float(values.std()) / math.sqrt(n))
    se_var = math.sqrt(float(centred.pow(4).mean() - centred.pow(2).mean() ** 2) / n)
    assert float(values.var()) == pytest.approx(expected_var, abs=5 * se_var)


def test_forward_noising_matches_the_schedule_definition():
    """betas and alphas_bar equal the linear schedule's definition, and noise(z0, t, eps) equals
    sqrt(abar_t) z0 + sqrt(1 - abar_t) eps with each row's own t."""
    model = DiffusionModel(None, n_steps=ORACLE_STEPS, hidden=8)
    betas, alphas_bar = _linear_schedule(ORACLE_STEPS)
    torch.testing.assert_close(model.betas.double(), betas, rtol=1e-6, atol=0)
    torch.testing.assert_close(model.alphas_bar.double(), alphas_bar, rtol=1e-6, atol=0)
    torch.manual_seed(0)
    t = torch.tensor([0, 1, ORACLE_STEPS // 2, ORACLE_STEPS - 1])
    z0, eps = torch.randn(4, model.data_dim), torch.randn(4, model.data_dim)
    expected = alphas_bar[t].sqrt().unsqueeze(-1) * z0 + (1 - alphas_bar[t]).sqrt().unsqueeze(-1) * eps
    torch.testing.assert_close(model.noise(z0, t, eps).double(), expected, rtol=1e-5, atol=1e-5)  # float32


@pytest.mark.parametrize("space", ["pixel", "latent"])
def test_sampler_and_diffpure_return_a_point_mass(digits, space):
    """With the exact eps of a point mass z0, the step at t = 0 maps any z to z0 exactly (abar_0 = 1 - beta_0), so
    sample() and diffpure() both return decode(z0) (to float32 rounding), visiting steps T-1..0 and t*-1..0 once, in
    order, with the requested slot and the empty prompt respectively."""
    torch.manual_seed(0)
    model = DiffusionModel(Autoencoder() if space == "latent" else None, n_steps=ORACLE_STEPS, hidden=8)
    target = torch.linspace(-0.9, 0.9, 64).reshape(1, 1, 8, 8)
    z0 = model.encode(target)
    model.eps_net = oracle = _ExactEps(z0[0])
    expected = model.decode(z0)
    samples = model.sample(5, slot=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(samples, expected.expand(5, -1, -1, -1), rtol=0, atol=1e-4)
    assert oracle.calls == [([step], [3]) for step in reversed(range(ORACLE_STEPS))]
    oracle.calls.clear()
    purified = diffpure(model, digits.identity_photos(4), strength=0.3)
    torch.testing.assert_close(purified, expected.expand(4, -1, -1, -1), rtol=0, atol=1e-4)
    assert oracle.calls == [([step], [NULL_SLOT]) for step in reversed(range(round(0.3 * ORACLE_STEPS)))]


@pytest.mark.parametrize("mean, sd", [(0.2, 0.15), (0.3, 1.0)])
def test_sampler_matches_the_exact_moments_of_gaussian_data(mean, sd):
    """Pixel data N(mean, sd^2) with its exact eps: sample() starts at z ~ N(0, 1) and every step is linear, so the
    output is N(m, s) with (m, s) from _reverse_moments, then clamped. Narrow data: (m, s) = (0.19827, 0.025217) at 50
    steps, > 5 standard errors from the data's own (0.2, 0.0225); wide data keeps a share abar_{T-1} ~ 0.28 of the
    start's variance, so it checks the start z_T ~ N(0, 1). 4000 x 64 iid pixels."""
    model = DiffusionModel(None, n_steps=ORACLE_STEPS, hidden=8)
    model.eps_net = _ExactEps(torch.tensor(mean), sd ** 2)
    samples = model.sample(4000, slot=NULL_SLOT, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (4000, 1, 8, 8)
    _assert_moments(samples, *_reverse_moments(ORACLE_STEPS, mean, sd ** 2, 0.0, 1.0))


def test_diffpure_matches_the_exact_moments_of_gaussian_data():
    """DiffPure of images all equal to x with the exact eps of N(0.3, 0.2^2): strength 0.2 gives t* = 10; the start
    z = sqrt(abar_{t*-1}) x + sqrt(1 - abar_{t*-1}) xi has mean sqrt(abar_{t*-1}) x and variance 1 - abar_{t*-1}, and
    the linear reverse steps t*-1..0 give the mean and variance of _reverse_moments. 8000 x 64 iid pixels."""
    mean, var, x, strength = 0.3, 0.2 ** 2, -0.5, 0.2
    model = DiffusionModel(None, n_steps=ORACLE_STEPS, hidden=8)
    model.eps_net = _ExactEps(torch.tensor(mean), var)
    t_star = round(strength * ORACLE_STEPS)
    abar = float(_linear_schedule(ORACLE_STEPS)[1][t_star - 1])
    purified = diffpure(model, torch.full((8000, 1, 8, 8), x), strength=strength)
    _assert_moments(purified, *_reverse_moments(t_star, mean, var, math.sqrt(abar) * x, 1 - abar))


def _point_mass_base(mean: torch.Tensor) -> DiffusionModel:
    """A frozen pixel-space base whose eps-net is _ExactEps of a point mass at ``mean`` (one value per pixel)."""
    base = DiffusionModel(None, n_steps=ORACLE_STEPS, hidden=8).requires_grad_(False)
    base.eps_net = _ExactEps(mean)
    return base


@pytest.mark.parametrize("steps, moved", [(1, 0.03), (4, 0.1)])
def test_pgd_advdm_steps_away_from_a_point_mass_by_the_sign_of_the_exact_gradient(steps, moved):
    """With the exact eps of a point mass m, eps_hat - eps = sqrt(abar_t / (1 - abar_t)) (x - m) whatever the noise,
    so the loss is a positive mix of |x - m|^2 over the drawn t and its gradient has the sign of x - m for every
    draw. Ascent by eta = 0.03 with projection onto eps = 0.1 and [-1, 1] then gives, after k steps,
    x' = clip(x + min(k eta, eps) sign(x - m), -1, 1): 0.03 after one step, the ball's edge 0.1 after four (not
    0.12). Each step is one call of the eps-net on the empty prompt."""
    mean = 0.25 * (-1.0) ** torch.arange(64)  # between some pixels and 0: sign(x - m) is not sign(x)
    ramp = torch.linspace(-0.99, 0.99, 64)
    images = torch.stack([ramp, ramp.flip(0)]).reshape(2, 1, 8, 8)
    assert float((images.flatten(1) - mean).abs().min()) > 0.01  # no pixel sits on m, where the sign would be 0
    base = _point_mass_base(mean)
    protected = pgd_advdm(base, images, epsilon=0.1, steps=steps, step_size=0.03, samples=4)
    expected = (images + moved * (images.flatten(1) - mean).sign().reshape(images.shape)).clamp(-1, 1)
    torch.testing.assert_close(protected, expected, rtol=0, atol=1e-6)
    assert linf(protected, images) <= 0.1 + 1e-6
    assert [slots for _, slots in base.eps_net.calls] == [[NULL_SLOT]] * steps


def _spy_on_aspl(monkeypatch) -> list[dict]:
    """Wrap aspl's two stages, recording each call in order: the model, its eps-net parameters before and after,
    the arguments, and for PGD the global RNG state it starts from and its result."""
    import minimdm.rid.defenses as defenses

    events, fine_tune, pgd = [], defenses._fine_tune, defenses._pgd
    flat = lambda model: nn.utils.parameters_to_vector(model.eps_net.parameters()).detach().clone()  # noqa: E731

    def spy_fine_tune(model, optimizer, z0, steps, *args):
        before = flat(model)
        fine_tune(model, optimizer, z0, steps, *args)
        events.append(dict(stage="tune", model=model, z0=z0.clone(), steps=steps, before=before, after=flat(model)))

    def spy_pgd(model, clean, start, epsilon, steps, step_size, slot, samples):
        event = dict(stage="pgd", model=model, before=flat(model), clean=clean, start=start.clone(), epsilon=epsilon,
                     steps=steps, step_size=step_size, slot=slot, samples=samples, rng=torch.get_rng_state())
        event["out"] = pgd(model, clean, start, epsilon, steps, step_size, slot, samples)
        events.append(event)
        return event["out"]

    monkeypatch.setattr(defenses, "_fine_tune", spy_fine_tune)
    monkeypatch.setattr(defenses, "_pgd", spy_pgd)
    return events


def test_aspl_rounds_tune_a_fresh_copy_on_clean_photos_attack_it_then_tune_the_surrogate(digits, monkeypatch):
    """Anti-DreamBooth's round, in order: (i) a fresh copy of the surrogate tuned fine_tune_steps steps on the clean
    latents, (ii) pgd_steps PGD steps on slot NEW_TOKEN against that copy, from the last round's x' (round 1: the
    photos) inside the eps-ball of the photos, (iii) the one surrogate tuned on the latents of the new x'. The
    surrogate starts as the base with NEW_TOKEN's embedding set to the empty prompt's; the last x' is returned."""
    events = _spy_on_aspl(monkeypatch)
    torch.manual_seed(0)
    base = DiffusionModel(Autoencoder(), hidden=16, depth=1).eval().requires_grad_(False)
    photos, rounds = digits.identity_photos(3), 3
    protected = aspl(base, photos, 0.1, rounds=rounds, fine_tune_steps=2, pgd_steps=2)
    assert [e["stage"] for e in events] == ["tune", "pgd", "tune"] * rounds
    surrogate_start = copy.deepcopy(base)
    with torch.no_grad():
        embedding = surrogate_start.eps_net.class_embedding.weight
        embedding[NEW_TOKEN] = embedding[NULL_SLOT]
    surrogate_params = nn.utils.parameters_to_vector(surrogate_start.eps_net.parameters())
    previous_x, surrogate = photos, events[2]["model"]
    with torch.no_grad():
        clean_z0 = base.encode(photos)
    for r in range(rounds):
        tune, attack, update = events[3 * r: 3 * r + 3]
        learner = tune["model"]
        assert learner is attack["model"] and learner is not surrogate and update["model"] is surrogate
        assert all(learner is not events[3 * s]["model"] for s in range(r))  # a fresh copy every round
        assert torch.equal(tune["before"], surrogate_params)  # copied from the surrogate as it stands
        assert tune["steps"] == 2 and torch.equal(tune["z0"], clean_z0)
        assert torch.equal(attack["before"], tune["after"])  # PGD attacks the tuned copy
        assert attack["slot"] == NEW_TOKEN and attack["steps"] == 2 and attack["epsilon"] == 0.1
        assert attack["step_size"] == pytest.approx(0.01) and torch.equal(attack["clean"], photos)
        assert torch.equal(attack["start"], previous_x)
        assert torch.equal(update["before"], surrogate_params) and update["steps"] == 2
        with torch.no_grad():
            assert torch.equal(update["z0"], base.encode(attack["out"]))
        assert not torch.equal(update["after"], update["before"])
        previous_x, surrogate_params = attack["out"], update["after"]
    assert torch.equal(protected, previous_x)


def test_aspl_pgd_step_follows_the_sign_of_a_finite_difference_gradient(digits, monkeypatch):
    """One round, one PGD step of size eta = 0.05 < eps = 0.1 from photos kept off the [-1, 1] edges: every pixel
    moves to x + eta sign(g), g the gradient of that step's Monte Carlo loss against the tuned copy. g is taken here
    by central differences in float64 (h = 1e-5), replaying the RNG state PGD started from at every evaluation so
    that all evaluations see the same t and noise."""
    events = _spy_on_aspl(monkeypatch)
    torch.manual_seed(0)
    base = DiffusionModel(None, n_steps=ORACLE_STEPS, hidden=16, depth=1).double().requires_grad_(False)
    photos = 0.8 * digits.identity_photos(2).double()
    protected = aspl(base, photos, 0.1, rounds=1, fine_tune_steps=1, pgd_steps=1, step_size=0.05, samples=4)
    attack = events[1]
    learner, h = attack["model"], 1e-5

    def loss(images):
        torch.set_rng_state(attack["rng"])
        with torch.no_grad():
            return float(diffusion_loss_of_images(learner, images, NEW_TOKEN, 4).sum())

    gradient = torch.zeros(photos.numel(), dtype=torch.float64)
    for i in range(photos.numel()):
        step = torch.zeros(photos.numel(), dtype=torch.float64)
        step[i] = h
        gradient[i] = (loss(photos + step.reshape(photos.shape)) - loss(photos - step.reshape(photos.shape))) / (2 * h)
    assert float(gradient.abs().min()) > 1e-6  # every sign is well defined
    torch.testing.assert_close(protected, photos + 0.05 * gradient.sign().reshape(photos.shape), rtol=0, atol=1e-12)


def test_train_defender_trains_a_zero_started_defender_on_adv_sds_against_frozen_bases(digits, untrained_bases,
                                                                                     monkeypatch):
    """train_defender hands the trainer a Defender whose perturbation is 0 (zero head), the loss
    adv_sds_loss(defender, bases, images of the batch), batches of batch_size training digits, and the step count,
    learning rate and seed asked for; the bases are frozen first and the defender comes back frozen, in eval mode."""
    seen = {}
    monkeypatch.setattr("minimdm.rid.defenses.train",
                        lambda model, loss, batch, cfg: seen.update(model=model, loss=loss, batch=batch, cfg=cfg))
    bases = [copy.deepcopy(untrained_bases["latent"]).requires_grad_(True), untrained_bases["pixel"]]
    defender = train_defender(bases, digits.base_training_set(), 0.1, steps=7, batch_size=5, lr=0.02, seed=3)
    assert defender is seen["model"] and not defender.training
    assert not any(p.requires_grad for p in defender.parameters())
    assert not any(p.requires_grad for base in bases for p in base.parameters())
    cfg, photos = seen["cfg"], digits.identity_photos(4)
    assert (cfg.steps, cfg.lr, cfg.seed) == (7, 0.02, 3)
    assert torch.equal(defender.protect(photos), photos)
    images, labels = seen["batch"](0)
    assert images.shape == (5, 1, 8, 8) and not bool((labels == digits.identity).any())
    with torch.no_grad():
        defender.net.head[-1].weight.normal_(0, 1)  # a non-zero delta, so a loss on the clean images would differ
        torch.manual_seed(11)
        got = seen["loss"](defender, (photos, labels[:4]))
        torch.manual_seed(11)
        assert torch.equal(got, adv_sds_loss(defender, bases, photos))


def test_autoencoder_latents_have_unit_std_and_decode_undoes_the_scale(digits):
    """After training, latent_scale is the std of the raw encoder outputs over the training images, so encode() of
    those images has std 1, and decode(encode(x)) equals decoder(encoder(x)): the scale cancels."""
    training = digits.base_training_set()
    autoencoder = train_autoencoder(training, steps=3)
    latents = autoencoder.encode(training.images)
    assert float(autoencoder.latent_scale) != pytest.approx(1.0, abs=0.01)  # the scale is doing something
    assert float(latents.std()) == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(autoencoder.decode(latents),
                               autoencoder.decoder(autoencoder.encoder(training.images)))


@pytest.mark.parametrize("call, message", [
    (lambda base, x: uniform_noise(x, 0.0), r"epsilon=0.0 must lie in \(0, 2\)"),
    (lambda base, x: pgd_advdm(base, x, -0.1), r"epsilon=-0.1 must lie in \(0, 2\)"),
    (lambda base, x: uniform_noise(x, 2.0), r"epsilon=2.0 must lie in \(0, 2\)"),
    (lambda base, x: Defender(0), r"epsilon=0 must lie in \(0, 2\)"),
    (lambda base, x: pgd_advdm(base, 3 * x, 0.1), r"range \[-1, 1\]"),
    (lambda base, x: Defender(0.1).protect((x + 1) * 127.5), r"range \[-1, 1\]"),
    (lambda base, x: aspl(base, x.reshape(-1, 64), 0.1), r"shape \(B, 1, 8, 8\)"),
    (lambda base, x: Defender(0.1).protect(x[:, :, :4]), r"shape \(B, 1, 8, 8\)"),
    (lambda base, x: personalize(base, x.long(), steps=1), "float tensor"),
    (lambda base, x: personalize(base, x, "lora"), "method='lora'"),
    (lambda base, x: quantise_blur(x, bits=0), "bits=0"),
    (lambda base, x: diffpure(base, x, strength=0), "strength=0"),
    (lambda base, x: load_rid_digits(identity=10), "identity=10"),
    (lambda base, x: attack_and_judge(base, x, _constant_judge(0), 8, x, seeds=()), r"seeds=\(\) is empty"),
    (lambda base, x: Defender(0.1, channels=4), "channels=4 must be a positive multiple of 8"),
])
def test_bad_input_gives_one_line_error(digits, untrained_bases, call, message):
    with pytest.raises(ValueError, match=message) as error:
        call(untrained_bases["pixel"], digits.identity_photos(2))
    assert "\n" not in str(error.value)
