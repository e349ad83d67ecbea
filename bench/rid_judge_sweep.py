"""Does RID stop the attack, or only make the attacker's generations noisy? Defender size against two judges.

    python bench/rid_judge_sweep.py                  # one GPU: notebook 12's GPU sizes for the latent base model
    SWEEP_QUICK=1 python bench/rid_judge_sweep.py    # CPU smoke run (numbers meaningless)

Identity success rate (DreamBooth-style attack, 2 seeds x 512 samples) scored by notebook 12's judge and by a judge
hardened against +-0.4 sign noise (``train_judge(sign_noise=0.4)``, scoring the first seed's samples), for clean
photos, uniform sign noise and RID defenders of several widths, depths and step counts at eps 0.2 and 0.4.
Results: bench/results/rid_judge_sweep_h100.txt.
"""
import argparse
import os
import time

from minimdm.presets import default_device
from minimdm.rid.data import load_rid_digits
from minimdm.rid.ddpm import train_base_model
from minimdm.rid.defenses import train_defender, uniform_noise
from minimdm.rid.experiment import attack_and_judge
from minimdm.rid.judge import accuracy, train_judge
from minimdm.rid.metrics import identity_success_rate

argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()  # --help
QUICK = os.environ.get("SWEEP_QUICK") == "1"


def size(n: int) -> int:
    return max(2, n // 200) if QUICK else n


device = default_device()
digits = load_rid_digits(identity=8)
training = digits.base_training_set()
photos, reference = digits.identity_photos(8).to(device), digits.identity_reference().to(device)
judge = train_judge(digits.train_images, digits.train_labels, steps=size(1500), device=device)
hardened = train_judge(digits.train_images, digits.train_labels, steps=size(3000), device=device, sign_noise=0.4)
test_images, test_labels = digits.test_images.to(device), digits.test_labels.to(device)
print(f"held-out accuracy: judge {accuracy(judge, test_images, test_labels):.3f}, "
      f"hardened judge {accuracy(hardened, test_images, test_labels):.3f}", flush=True)
start = time.time()
latent = train_base_model(training, "latent", ae_steps=size(1000), steps=size(3000), batch_size=512, hidden=256,
                          seed=0, device=device)
print(f"latent base model {time.time() - start:.0f} s", flush=True)


def attack(images) -> str:
    outcome = attack_and_judge(latent, images, judge, digits.identity, reference, steps=size(300),
                               n_samples=size(512), seeds=(0, 1))
    robust = identity_success_rate(hardened, outcome.samples.to(device), digits.identity)
    return f"judge {outcome.mean:.3f} / hardened {robust:.3f}"


print(f"clean: {attack(photos)}", flush=True)
for eps in (0.1, 0.2, 0.4):
    print(f"uniform sign noise eps {eps}: {attack(uniform_noise(photos, eps))}", flush=True)
for channels, blocks, steps, epsilons in [(8, 1, 1000, (0.4,)), (32, 2, 3000, (0.2, 0.4)), (64, 3, 3000, (0.2, 0.4)),
                                          (32, 2, 1000, (0.2, 0.4)), (8, 1, 3000, (0.2, 0.4))]:
    for eps in epsilons:
        start = time.time()
        defender = train_defender([latent], training, eps, steps=size(steps), batch_size=512, channels=channels,
                                  n_blocks=blocks)
        print(f"RID {channels} channels, {blocks} block(s), {steps} steps, eps {eps}: {attack(defender.protect(photos))} "
              f"({time.time() - start:.0f} s)", flush=True)
