"""A preference data set built from the SFT model's own samples, scored by a programmatic reward."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

import torch

from minimdm.mdm.answers import answer_prompts
from minimdm.mdm.elbo import Estimate
from minimdm.mdm.sft import ChatTemplate, make_sft_batch

def exact_match_reward(example, answer_text: str) -> float:
    """The programmatic reward: 1 if the answer is exactly the task's correct answer, else 0."""
    return float(answer_text == example.answer)


def split_held_out(examples: list, num_held_out: int) -> tuple[list, list]:
    """(training examples, held-out examples): distinct prompts, none of the held-out ones among the training ones."""
    unique = list({example.prompt: example for example in examples}.values())
    if num_held_out < 1 or num_held_out >= len(unique):
        raise ValueError(f"num_held_out={num_held_out}: allowed values are 1..{len(unique) - 1} "
                         f"({len(unique)} distinct prompts)")
    return unique[:-num_held_out], unique[-num_held_out:]


@dataclass
class PreferenceData:
    """Pairs of answers to one prompt, as rows ``[left-padded prompt | answer EOS EOS ...]`` of one canvas."""

    chosen: torch.Tensor  # (N, P + G)
    rejected: torch.Tensor  # (N, P + G)
    answer_mask: torch.Tensor  # (N, P + G) bool, True on the answer canvas
    prompts: list[str] = field(default_factory=list)
    chosen_texts: list[str] = field(default_factory=list)
    rejected_texts: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.chosen.shape[0]

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.chosen[indices], self.rejected[indices], self.answer_mask[indices]


def sample_answers(model, tokenizer, examples: list, samples_per_prompt: int, *, batch_size: int = 256,
                   **sampler_kwargs) -> list[list[str]]:
    """``samples_per_prompt`` decoded answers for every example, from ``minimdm.mdm.answers.answer_prompts``."""
    prompts = [example.prompt for example in examples for _ in range(samples_per_prompt)]
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        texts += answer_prompts(model, tokenizer, prompts[start:start + batch_size], **sampler_kwargs).texts
    return [texts[i * samples_per_prompt:(i + 1) * samples_per_prompt] for i in range(len(examples))]


def mean_reward(model, tokenizer, examples: list, *, samples_per_prompt: int = 1,
                reward_fn: Callable = exact_match_reward, **sampler_kwargs) -> Estimate:
    """Mean reward of the model's answers on ``examples`` (e.g. held-out prompts), with its standard error."""
    answers = sample_answers(model, tokenizer, examples, samples_per_prompt, **sampler_kwargs)
    rewards = [reward_fn(example, text) for example, texts in zip(examples, answers) for text in texts]
    return Estimate.from_draws(torch.tensor(rewards))


def build_preference_data(model, tokenizer, examples: list, *, samples_per_prompt: int = 8, gen_length: int,
                          steps: int | None = None, temperature: float = 1.0, remasking: str = "random",
                          prompt_length: int | None = None, reward_fn: Callable = exact_match_reward,
                          seed: int = 0, **sampler_kwargs) -> PreferenceData:
    """Sample answers from the (SFT) model, score them with ``reward_fn``, keep one (best, worst) pair per prompt.

    A prompt gives a pair only when its samples disagree in reward; chosen and rejected are drawn at random
    among the best- and worst-rewarded distinct answers (our choice; the paper's data are human/AI-labelled).
    Answers are stored the way SFT rows are, answer + EOS up to ``gen_length`` (the text after the model's first
    EOS is dropped, as the decoder drops it), so the pairs line up with the sampler's canvas.
    """
    template = ChatTemplate.from_tokenizer(tokenizer)
    prompt_ids = [template.prompt([{"role": "user", "content": e.prompt}]) for e in examples]
    prompt_length = max(len(p) for p in prompt_ids) if prompt_length is None else prompt_length
    generator = torch.Generator(device=next(iter(model.state_dict().values())).device).manual_seed(seed)
    answers = sample_answers(model, tokenizer, examples, samples_per_prompt, gen_length=gen_length,
                             steps=steps or gen_length, temperature=temperature, remasking=remasking,
                             prompt_length=prompt_length, generator=generator, **sampler_kwargs)
    rng = random.Random(seed)
    chosen_pairs, rejected_pairs, prompts, chosen_texts, rejected_texts = [], [], [], [], []
    all_rewards = []
    for example, ids, texts in zip(examples, prompt_ids, answers):
        rewards = {text: reward_fn(example, text) for text in texts}
        all_rewards += [rewards[text] for text in texts]
        best, worst = max(rewards.values()), min(rewards.values())
        if best == worst:
            continue
        chosen = rng.choice(sorted(text for text, r in rewards.items() if r == best))
        rejected = rng.choice(sorted(text for text, r in rewards.items() if r == worst))
        chosen_pairs.append((ids, template.answer(chosen)[:gen_length]))
        rejected_pairs.append((ids, template.answer(rejected)[:gen_length]))
        prompts.append(example.prompt)
        chosen_texts.append(chosen)
        rejected_texts.append(rejected)
    if not prompts:
        raise ValueError("no prompt had samples of different reward: sample more per prompt or at a higher temperature")
    kwargs = dict(gen_length=gen_length, pad_id=tokenizer.pad_id, eos_id=tokenizer.eos_id,
                  mask_id=model.mask_id, prompt_length=prompt_length)
    chosen_batch = make_sft_batch(chosen_pairs, **kwargs)
    rejected_batch = make_sft_batch(rejected_pairs, **kwargs)
    stats = {"prompts": len(examples), "pairs": len(prompts), "samples": len(all_rewards),
             "sample_reward": sum(all_rewards) / len(all_rewards)}
    return PreferenceData(chosen_batch.tokens, rejected_batch.tokens, ~chosen_batch.prompt_mask, prompts,
                          chosen_texts, rejected_texts, stats)
