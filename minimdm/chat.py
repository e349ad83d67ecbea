"""Ask a fine-tuned MDM questions: batched answers, their exact-match score, and a small interactive chat.

    python -m minimdm sample --chat --checkpoint runs/llada_sft

Answers come from ``minimdm.mdm.answers`` (LLaDA's canvas and sampler); this module scores them and talks.
"""
from __future__ import annotations

import json
from pathlib import Path

from minimdm.mdm.answers import Answers, answer_conversations, answer_prompts

__all__ = ["Answers", "answer_conversations", "answer_prompts", "exact_match_report", "run_chat",
           "save_chat_settings", "chat_with", "chat_from_checkpoint", "CHAT_SETTINGS_FILE"]


def exact_match_report(model, tokenizer, examples, *, batch_size: int = 128, **kwargs) -> dict:
    """Generate an answer to every example (``.prompt``, ``.answer``) and measure:

    * ``accuracy``: exact match of the decoded answer;
    * ``eos_fraction``: share of the generated canvas that is EOS, against ``eos_fraction_reference`` (the share
      the correct answers would leave);
    * ``truncated``: share of answers shorter than the reference (an EOS committed too early);
    * ``overlong``: share of answers longer than the reference (an EOS committed too late, or not at all);
    * ``early_eos``: share of EOS among the tokens committed in the first quarter of the steps (the "EOS flood");
    * ``accuracy_by_task``: exact match per ``.task``, when the examples have one.
    """
    gen_length = kwargs["gen_length"]
    correct = eos = truncated = overlong = early_eos = early_total = 0
    task_counts: dict[str, list[int]] = {}  # task -> [correct, total]
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        answers = answer_prompts(model, tokenizer, [ex.prompt for ex in batch], record_history=True, **kwargs)
        result = answers.result
        generated = result.generated.cpu()
        eos += int((generated == tokenizer.eos_id).sum())
        quarter = max(1, (len(result.frames) - 1) // 4)
        committed_early = result.frames[quarter][:, result.prompt_length:]
        committed_early_mask = committed_early != result.mask_id
        early_eos += int((committed_early == tokenizer.eos_id).sum())
        early_total += int(committed_early_mask.sum())
        for text, ex in zip(answers.texts, batch):
            correct += text == ex.answer
            truncated += len(text) < len(ex.answer)
            overlong += len(text) > len(ex.answer)
            counts = task_counts.setdefault(getattr(ex, "task", "all"), [0, 0])
            counts[0] += text == ex.answer
            counts[1] += 1
    n = len(examples)
    reference_eos = sum(gen_length - len(tokenizer.encode(ex.answer)) for ex in examples) / (n * gen_length)
    return {"accuracy": correct / n, "eos_fraction": eos / (n * gen_length), "eos_fraction_reference": reference_eos,
            "truncated": truncated / n, "overlong": overlong / n, "early_eos": early_eos / max(early_total, 1),
            "accuracy_by_task": {task: c / total for task, (c, total) in sorted(task_counts.items())}}


def run_chat(model, tokenizer, *, gen_length: int = 16, steps: int | None = None, block_length: int | None = None,
             remasking: str = "low_confidence", temperature: float = 0.0, read=None, write=None) -> list[dict]:
    """A read-answer loop that keeps the conversation (multi-turn); '/reset' forgets it, '/quit' or EOF ends.
    ``read`` and ``write`` default to ``input`` and ``print``, looked up when called."""
    read, write = read or input, write or print
    messages: list[dict] = []
    write("minimdm chat: ask e.g. 'reverse: abcd', '12+7', 'sort: dcba', 'a=3 b=71 ?b'. /reset, /quit")
    while True:
        try:
            line = read("you> ").strip()
        except EOFError:
            break
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            messages = []
            continue
        if not line:
            continue
        try:
            question = messages + [{"role": "user", "content": line}]
            reply = answer_conversations(model, tokenizer, [question], gen_length=gen_length,
                                         steps=steps or gen_length, block_length=block_length, remasking=remasking,
                                         temperature=temperature).texts[0]
        except ValueError as error:  # a character outside the vocabulary, a conversation too long, ...
            write(f"error: {error}")
            continue
        messages = question + [{"role": "assistant", "content": reply}]
        write(f"mdm> {reply}")
    return messages


CHAT_SETTINGS_FILE = "chat.json"


def save_chat_settings(directory, **settings) -> None:
    """Store the sampler settings a fine-tuned model was made for (gen_length = its SFT canvas, ...)."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / CHAT_SETTINGS_FILE).write_text(json.dumps(settings, indent=2))


def chat_with(model, settings: dict | None = None, where: str = "this model", **overrides) -> list[dict]:
    """Chat with a model fine-tuned on ``minimdm.data.tasks``: sampler ``settings`` (a chat.json's or a model
    card's), then ``overrides``. ``where`` names the model in the error for any other vocabulary."""
    from minimdm.data.tasks import TaskTokenizer

    tokenizer = TaskTokenizer()
    if model.config.vocab_size != tokenizer.vocab_size:
        raise ValueError(f"{where} has vocab_size={model.config.vocab_size}, but the chat vocabulary "
                         f"(minimdm.data.tasks.TaskTokenizer) has {tokenizer.vocab_size}: "
                         "fine-tune on minimdm.data.tasks first (notebook 05)")
    settings = {**(settings or {}), **{k: v for k, v in overrides.items() if v is not None}}
    return run_chat(model, tokenizer, **settings)


def chat_from_checkpoint(directory, device: str = "cpu", **overrides) -> list[dict]:
    """Load a model fine-tuned on ``minimdm.data.tasks`` (a ``minimdm.train`` checkpoint) and chat with it.

    The sampler settings come from the checkpoint's chat.json (written by notebook 05), then ``overrides``.
    """
    from minimdm.train import load_model

    model = load_model(directory, device=device)
    settings_path = Path(directory) / CHAT_SETTINGS_FILE
    settings = json.loads(settings_path.read_text()) if settings_path.exists() else {}
    return chat_with(model, settings, where=f"the checkpoint in {directory}", **overrides)
