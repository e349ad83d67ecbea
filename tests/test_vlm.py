"""LLaDA-V in miniature: splice, masks, loss, dialogues and errors, each against an exact answer."""
import math
import random
from types import SimpleNamespace

import pytest
import torch

from minimdm.nn import Transformer, TransformerConfig
from minimdm.vlm.dialogues import (IMAGE_TOKENS, SLOT, Dialogue, DialogueTokenizer, Turn, batch_sampler,
                                   encode_dialogue, encode_dialogues, encode_question, evaluation_dialogues,
                                   load_digit_images, make_dialogue, make_dialogues)
from minimdm.vlm.encoder import DigitEncoder
from minimdm.vlm.loss import ar_dialogue_loss, mask_answers, masked_answer_loss, mdm_dialogue_loss
from minimdm.vlm.model import VisionLanguageModel, attention_mask, bind_images, turn_ids
from minimdm.vlm.sampling import accuracy_by_kind, answer_forbidden, converse
from minimdm.vlm.stages import freeze, scale_learning_rate, train_only

TOKENIZER = DialogueTokenizer()


def tiny_vlm(attention="bidirectional", dtype=torch.float64):
    torch.manual_seed(0)
    lm = Transformer(TransformerConfig(vocab_size=TOKENIZER.vocab_size, n_layers=2, d_model=32, n_heads=4,
                                       causal=attention == "causal", mask_token=attention != "causal"))
    model = VisionLanguageModel(DigitEncoder(16), lm, image_id=TOKENIZER.image_id, user_id=TOKENIZER.user_id,
                                pad_id=TOKENIZER.pad_id, attention=attention)
    return model.to(dtype).eval()


def two_turn(image=0):
    return Dialogue(image, [Turn("digit", "digit?", "7"), Turn("then_plus", "that +2?", "9")])


def batch_of(dialogues, dtype=torch.float64):
    pool = encode_dialogues(TOKENIZER, dialogues)
    images = torch.rand(len(dialogues), 1, 8, 8, dtype=dtype)
    return pool.ids, pool.answer_mask, images


# --- dialogues ------------------------------------------------------------------------------------------

def test_dialogue_layout_and_answer_slots():
    ids, is_answer = encode_dialogue(TOKENIZER, two_turn())
    expected = ([TOKENIZER.bos_id, TOKENIZER.user_id] + [TOKENIZER.image_id] * IMAGE_TOKENS
                + TOKENIZER.encode("digit?") + [TOKENIZER.eot_id, TOKENIZER.assistant_id]
                + TOKENIZER.encode("7") + [TOKENIZER.eot_id] + [TOKENIZER.eos_id] * (SLOT - 2)
                + [TOKENIZER.user_id] + TOKENIZER.encode("that +2?") + [TOKENIZER.eot_id, TOKENIZER.assistant_id]
                + TOKENIZER.encode("9") + [TOKENIZER.eot_id] + [TOKENIZER.eos_id] * (SLOT - 2))
    assert ids == expected
    assert sum(is_answer) == 2 * SLOT  # only the two answer slots are supervised
    answer_ids = [i for i, a in zip(ids, is_answer) if a]
    assert TOKENIZER.answer_text(answer_ids[:SLOT]) == "7" and TOKENIZER.answer_text(answer_ids[SLOT:]) == "9"
    assert not any(a for i, a in zip(ids, is_answer) if i == TOKENIZER.image_id)


def test_digits_split_is_stratified_and_answers_are_exact():
    data = load_digit_images()
    assert data.images.shape == (1797, 1, 8, 8) and float(data.images.max()) <= 1.0
    assert set(data.train_index.tolist()).isdisjoint(data.test_index.tolist())
    assert len(data.train_index) + len(data.test_index) == 1797
    for digit in range(10):
        total = int((data.digits == digit).sum())
        assert int((data.digits[data.test_index] == digit).sum()) == round(0.2 * total)
    rng = random.Random(0)
    for image in range(0, 1797, 97):
        digit = int(data.digits[image])
        for _ in range(5):
            dialogue = make_dialogue(image, digit, data.caption(image), rng, 3)
            value = digit + int(dialogue.turns[0].question[5:-1]) if dialogue.turns[0].kind == "plus" else digit
            assert dialogue.turns[0].answer == str(value)
            value += int(dialogue.turns[1].question[6:-1])  # the middle turn of three adds k
            assert dialogue.turns[1].answer == str(value)
            last = dialogue.turns[2]
            expected = str(value + int(last.question[6:-1])) if last.kind == "then_plus" else \
                ("yes" if value % 2 == 0 else "no")
            assert last.answer == expected
    evaluation = evaluation_dialogues(data, data.test_index[:3])
    assert [len(d.turns) for d in evaluation] == [1, 1, 1, 1, 2] * 3
    assert all(int(d.image) in set(data.test_index.tolist()) for d in evaluation)


def test_parity_and_captions_of_every_image_follow_the_rule():
    """For all 1,797 images: parity -> "even"/"odd" by digit % 2; describe -> "thick 7" / "thin 7", thick meaning
    more pixels >= 8 (of sklearn's 0..16 integers) than the lower median of its digit's training images, recounted
    in plain Python from sklearn's arrays."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    data = load_digit_images()
    assert data.digits.tolist() == bunch.target.tolist()
    assert torch.equal(data.images[:, 0] * 16, torch.tensor(bunch.images, dtype=torch.float32))
    ink = [sum(1 for value in image.flatten().tolist() if value >= 8) for image in bunch.images]  # "half dark"
    train = set(data.train_index.tolist())
    median = {}
    for digit in range(10):
        counts = sorted(ink[i] for i in train if bunch.target[i] == digit)
        median[digit] = counts[(len(counts) - 1) // 2]
    rng = random.Random(0)
    thick_in_train = [0] * 10
    for image, digit in enumerate(bunch.target.tolist()):
        thick = ink[image] > median[digit]  # a tie with the median is thin
        assert bool(data.thick[image]) == thick, image
        thick_in_train[digit] += thick and image in train
        parity = make_dialogue(image, digit, data.caption(image), rng, 1, first_kind="parity").turns[0]
        describe = make_dialogue(image, digit, data.caption(image), rng, 1, first_kind="describe").turns[0]
        assert (parity.question, parity.answer) == ("parity?", "even" if digit % 2 == 0 else "odd")
        assert (describe.question, describe.answer) == ("describe", f"{'thick' if thick else 'thin'} {digit}")
    for digit in range(10):  # the docstring's "34-49 % thick" per digit
        share = thick_in_train[digit] / sum(1 for i in train if bunch.target[i] == digit)
        assert 0.335 <= share < 0.495, (digit, share)


def test_batches_cut_padding_and_respect_the_fraction():
    data = load_digit_images()
    pool = encode_dialogues(TOKENIZER, make_dialogues(data, data.train_index, 50, seed=3))
    torch.manual_seed(0)
    ids, answer_mask, images = batch_sampler(pool, data, 16, fraction=0.1)(0)
    assert images.shape == (16, 1, 8, 8) and ids.shape == answer_mask.shape
    assert (ids[:, -1] != TOKENIZER.pad_id).any()  # no column of padding only
    rows_used = {tuple(r.tolist()) for r in ids}
    first_five = {tuple(r[: ids.shape[1]].tolist()) for r in pool.ids[:5]}
    assert rows_used <= first_five


# --- splice ---------------------------------------------------------------------------------------------

def test_splice_puts_features_exactly_at_the_placeholders():
    model = tiny_vlm()
    ids, _, images = batch_of([two_turn(), Dialogue(1, [Turn("parity", "parity?", "odd")])])
    embeds = model.embed(ids, images)
    features = model.image_features(images)  # (B, 16, d)
    plain = model.lm.embed(ids)
    for row in range(2):
        where = torch.nonzero(ids[row] == TOKENIZER.image_id).flatten()
        assert where.tolist() == list(range(2, 2 + IMAGE_TOKENS))
        assert torch.equal(embeds[row, where], features[row])  # in order, bit for bit
        others = torch.ones(ids.shape[1], dtype=torch.bool)
        others[where] = False
        assert torch.equal(embeds[row, others], plain[row, others])  # and nowhere else


def test_two_images_per_row_fill_their_placeholders_in_order():
    model = tiny_vlm()
    ids, _, images = batch_of([two_turn()])
    ids = torch.cat([ids[:, :2 + IMAGE_TOKENS], ids[:, 2:]], dim=1)  # a second run of 16 placeholders
    pair = torch.rand(1, 2, 1, 8, 8, dtype=torch.float64)
    embeds = model.embed(ids, pair)
    where = torch.nonzero(ids[0] == TOKENIZER.image_id).flatten()
    both = model.image_features(pair)[0]  # (32, d): image 0's 16 features, then image 1's
    assert torch.equal(embeds[0, where], both)
    assert torch.allclose(both[:IMAGE_TOKENS], model.image_features(pair[:, 0])[0], atol=1e-12)
    assert torch.allclose(both[IMAGE_TOKENS:], model.image_features(pair[:, 1])[0], atol=1e-12)


def test_image_tokens_read_the_4x4_grid_row_by_row():
    """Grid cell (i, j) sees pixel rows 2i-4..2i+5 and columns 2j-4..2j+5 (three 3x3 convolutions, one 2x2 pool).
    Changing pixel (row 0, column 7) changes cells with i <= 2 and j >= 1 only: tokens 4i + j when read row by row
    ({1, 2, 3, 5, 6, 7, 9, 10, 11}; column by column it would be {4, 5, 6, 8, 9, 10, 12, 13, 14})."""
    model = tiny_vlm()
    image = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    poked = image.clone()
    poked[0, 0, 0, 7] += 1.0
    expected = [4 * i + j for i in range(3) for j in range(1, 4)]
    for features in (model.encoder, model.image_features):
        changed = (features(image)[0] != features(poked)[0]).any(-1)  # (16,) one flag per image token
        assert torch.nonzero(changed).flatten().tolist() == expected


# --- image positions: never masked, never scored ----------------------------------------------------------

def test_image_and_prompt_positions_are_never_masked():
    ids, answer_mask, _ = batch_of([two_turn()] * 64)
    torch.manual_seed(0)
    xt, is_masked, p = mask_answers(ids, answer_mask, mask_id=TOKENIZER.vocab_size, eps=0.0)
    assert bool(is_masked[~answer_mask].any()) is False
    assert torch.equal(xt[~answer_mask], ids[~answer_mask])
    assert bool((xt[ids == TOKENIZER.image_id] == TOKENIZER.image_id).all())
    assert bool(is_masked.any())  # and the answers are masked at all


def test_answers_are_masked_with_the_stratified_probability():
    """eps = 0: p_b = t_b = (u + b/B) mod 1, and an answer token is masked exactly when its uniform draw is < p_b
    (the same draws replayed from the seed); eps = 0.2: p = 0.8 t + 0.2, so sorted p steps by exactly 0.8/B."""
    ids, answer_mask, _ = batch_of([two_turn()] * 64)
    torch.manual_seed(0)
    xt, is_masked, p = mask_answers(ids, answer_mask, mask_id=TOKENIZER.vocab_size, eps=0.0)
    torch.manual_seed(0)
    t = (torch.rand(()) + torch.arange(64) / 64) % 1.0
    assert torch.equal(p, t)
    assert torch.equal(is_masked, (torch.rand(ids.shape) < t[:, None]) & answer_mask)
    assert torch.equal(xt, ids.masked_fill(is_masked, TOKENIZER.vocab_size))
    _, _, p = mask_answers(ids, answer_mask, mask_id=TOKENIZER.vocab_size, eps=0.2)
    steps = p.sort().values.diff()
    assert torch.allclose(steps, torch.full_like(steps, 0.8 / 64), atol=1e-6) and 0.2 <= float(p.min()) < 0.2 + 0.8 / 64


def test_image_positions_receive_no_loss():
    """Changing the model's prediction at image (and prompt) positions leaves the loss unchanged."""
    model = tiny_vlm()
    ids, answer_mask, images = batch_of([two_turn(), two_turn(3)])
    torch.manual_seed(5)
    xt, is_masked, p = mask_answers(ids, answer_mask, TOKENIZER.vocab_size)
    logits = model(xt, images)
    scrambled = logits.clone()
    scrambled[~answer_mask] = torch.randn_like(scrambled[~answer_mask]) * 50
    assert masked_answer_loss(logits, ids, is_masked, answer_mask, p) == \
        masked_answer_loss(scrambled, ids, is_masked, answer_mask, p)
    ar = tiny_vlm("causal")
    targets_are_answers = answer_mask[:, 1:]
    assert not bool(targets_are_answers[ids[:, 1:] == TOKENIZER.image_id].any())
    logits = ar(ids, images)  # AR: scrambling every output whose next token is not an answer changes nothing
    predicts_answer = torch.zeros_like(answer_mask)
    predicts_answer[:, :-1] = answer_mask[:, 1:]
    scrambled = logits.clone()
    scrambled[~predicts_answer] = torch.randn_like(scrambled[~predicts_answer]) * 50
    loss = ar_dialogue_loss(lambda x, *_: logits, (ids, answer_mask, images))
    assert loss == ar_dialogue_loss(lambda x, *_: scrambled, (ids, answer_mask, images)) and torch.isfinite(loss)
    assert loss == ar_dialogue_loss(ar, (ids, answer_mask, images))


# --- the loss against a hand computation -----------------------------------------------------------------

def test_loss_equals_a_hand_computation_on_two_samples():
    vocab = 3
    ids = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 0]])
    answer_mask = torch.tensor([[False, True, True, True], [False, False, True, True]])
    is_masked = torch.tensor([[False, True, False, True], [False, False, True, False]])
    p = torch.tensor([0.5, 0.25], dtype=torch.float64)
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8], [0.25, 0.5, 0.25]],
                                    dtype=torch.float64))[None].expand(2, 4, vocab)
    # row 0: masked positions 1 (target 1, prob 0.2) and 3 (target 1, prob 0.5); 3 answer tokens; t = 0.5
    # row 1: masked position 2 (target 0, prob 0.1); 2 answer tokens; t = 0.25
    row0 = (-math.log(0.2) - math.log(0.5)) / 0.5 / 3
    row1 = -math.log(0.1) / 0.25 / 2
    loss = masked_answer_loss(logits, ids, is_masked, answer_mask, p)
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)


def test_ar_loss_equals_a_hand_computation_on_two_samples():
    """Position i-1 predicts answer token i; each row's sum is divided by its number of answer tokens, then the rows
    are averaged: LLaDA's SFT normalisation with every answer token scored at p = 1 on logits moved one place right."""
    ids = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 0]])
    answer_mask = torch.tensor([[False, True, True, True], [False, False, True, True]])
    probs = torch.tensor([[[0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8], [0.25, 0.5, 0.25]],
                          [[0.5, 0.25, 0.25], [0.4, 0.4, 0.2], [0.7, 0.2, 0.1], [0.3, 0.3, 0.4]]], dtype=torch.float64)
    seen = []

    def causal_model(x):  # fixed outputs; records what the loss fed it
        seen.append(x)
        return torch.log(probs)

    # row 0: tokens 1, 2, 1 at positions 1-3, read from positions 0-2: probs 0.3, 0.2, 0.1; 3 answer tokens
    # row 1: tokens 0, 0 at positions 2-3, read from positions 1-2: probs 0.4, 0.7; 2 answer tokens
    row0 = (-math.log(0.3) - math.log(0.2) - math.log(0.1)) / 3
    row1 = (-math.log(0.4) - math.log(0.7)) / 2
    loss = ar_dialogue_loss(causal_model, (ids, answer_mask))
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-12)
    assert len(seen) == 1 and torch.equal(seen[0], ids)  # clean ids in, no mask
    moved = torch.cat([torch.zeros(2, 1, 3, dtype=torch.float64), torch.log(probs)[:, :-1]], dim=1)
    assert loss.item() == pytest.approx(masked_answer_loss(moved, ids, answer_mask, answer_mask,
                                                           torch.ones(2, dtype=torch.float64)).item(), rel=1e-12)


def test_mdm_dialogue_loss_equals_a_hand_computation_on_scripted_masks(monkeypatch):
    """torch.rand scripted: u = 1/4 gives t = (1/4, 3/4), p = 0.999 t + 0.001, and an answer token is masked when its
    uniform is < p (prompts never, whatever their uniform). The loss is each row's sum of -log q / p over its number of
    answer tokens (3, 2), rows averaged, with q read off the fixed table below; the model sees x_t and the images."""
    ids = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 0]])
    answer_mask = torch.tensor([[False, True, True, True], [False, False, True, True]])
    probs = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8], [0.25, 0.5, 0.25]], dtype=torch.float64)
    images, seen = object(), []

    class Table:  # the same distribution at each position of every row, whatever the input
        mask_id = 3

        def __call__(self, xt, *extra):
            seen.append((xt, extra))
            return probs.log().expand(len(xt), -1, -1)

    draws = [torch.tensor(0.25, dtype=torch.float64),  # 0.7501: masked at p = 0.75025, not at t = 0.75
             torch.tensor([[0.1, 0.2, 0.9, 0.05], [0.0, 0.5, 0.7, 0.7501]], dtype=torch.float64)]

    def scripted_rand(size, **_):
        assert tuple(size) == tuple(draws[0].shape)
        return draws.pop(0)

    monkeypatch.setattr(torch, "rand", scripted_rand)
    loss = mdm_dialogue_loss(Table(), (ids, answer_mask, images))
    p0, p1 = 0.999 * 0.25 + 0.001, 0.999 * 0.75 + 0.001
    # row 0 masks positions 1, 3 (targets 1, 1: q = 0.2, 0.5); row 1 masks positions 2, 3 (targets 0, 0: q = 0.1, 0.25)
    row0 = -math.log(0.2 * 0.5) / p0 / 3
    row1 = -math.log(0.1 * 0.25) / p1 / 2
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6) and not draws  # p is float32 (t is)
    assert len(seen) == 1 and torch.equal(seen[0][0], torch.tensor([[0, 3, 2, 3], [2, 2, 3, 3]]))
    assert seen[0][1] == (images,)


def test_a_frozen_encoder_gets_no_gradient_and_the_connector_gets_one():
    """Stages 2-3 keep the encoder frozen or slowed; frozen means no gradient at all, while the connector trains."""
    model = tiny_vlm()
    batch = batch_of([two_turn(), Dialogue(2, [Turn("describe", "describe", "thin 4")])])
    freeze(model.encoder)
    mdm_dialogue_loss(model, batch).backward()
    assert all(q.grad is None for q in model.encoder.parameters())
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in model.connector.parameters())


def test_each_stage_trains_what_the_paper_trains():
    model = tiny_vlm()
    head = set(model.encoder.classifier.parameters())
    parts = {"lm": list(model.lm.parameters()), "connector": list(model.connector.parameters()),
             "encoder features": [q for q in model.encoder.parameters() if q not in head], "classifier head": head}
    expected = {"text": {"lm"}, "alignment": {"connector"}, "tuning": {"lm", "connector", "encoder features"}}
    for stage, trained in expected.items():
        train_only(model, stage)
        for name, params in parts.items():
            assert params and all(q.requires_grad == (name in trained) for q in params), (stage, name)
    with pytest.raises(ValueError, match="stage='pretraining'"):
        train_only(model, "pretraining")


# --- attention masks --------------------------------------------------------------------------------------

def test_dialogue_causal_mask_by_hand():
    u, a, x, pad = TOKENIZER.user_id, TOKENIZER.assistant_id, 40, TOKENIZER.pad_id
    ids = torch.tensor([[1, u, x, a, x, u, x, a, x, pad]])
    assert turn_ids(ids, u).tolist() == [[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]]
    allowed = attention_mask(ids, "dialogue_causal", u, pad)[0]
    for i in range(10):
        for j in range(10):
            expected = (j < 5 or i >= 5) and j != 9  # turn 0 never sees turn 1; nobody sees padding
            assert bool(allowed[i, j]) == expected, (i, j)
    assert attention_mask(ids, "bidirectional", u, pad)[0].sum(0).tolist() == [10] * 9 + [0]
    causal = attention_mask(ids, "causal", u, pad)[0]
    assert torch.equal(causal[:, :9], torch.ones(10, 9, dtype=torch.bool).tril()[:, :9])


def test_dialogue_causal_outputs_of_turn_one_ignore_turn_two():
    """Change the second turn: turn-one logits stay bit-identical with the dialogue-causal mask, not with bidirectional."""
    other = Dialogue(0, [Turn("digit", "digit?", "7"), Turn("then_even", "that even?", "no")])
    (ids_a, _, images), (ids_b, _, _) = batch_of([two_turn()]), batch_of([other])
    first_turn = int(torch.nonzero(ids_a[0] == TOKENIZER.user_id).flatten()[1])  # where turn 2 starts
    assert torch.equal(ids_a[0, :first_turn], ids_b[0, :first_turn]) and not torch.equal(ids_a, ids_b)
    for attention, same in (("dialogue_causal", True), ("bidirectional", False)):
        model = tiny_vlm(attention)
        logits_a, logits_b = model(ids_a, images), model(ids_b, images)
        assert torch.equal(logits_a[0, :first_turn], logits_b[0, :first_turn]) is same, attention


def test_padding_is_invisible():
    model = tiny_vlm()
    ids, _, images = batch_of([two_turn()])
    padded = torch.cat([ids, torch.full((1, 5), TOKENIZER.pad_id)], dim=1)
    assert torch.allclose(model(ids, images), model(padded, images)[:, : ids.shape[1]], atol=1e-12)


@pytest.mark.parametrize("attention", ["bidirectional", "dialogue_causal", "causal"])
def test_a_mask_is_built_only_where_the_pattern_needs_one(attention, monkeypatch):
    """Unpadded full or causal attention passes no mask (SDPA may then use its fused kernels) and gives the logits
    the explicit mask gives; dialogue-causal attention and padded rows pass the (B, T, T) mask."""
    model = tiny_vlm(attention)
    ids, _, images = batch_of([two_turn()])
    padded = torch.cat([ids, torch.full((1, 5), TOKENIZER.pad_id)], dim=1)
    masks, lm_forward = [], model.lm.forward
    monkeypatch.setattr(model.lm, "forward", lambda *a, **k: masks.append(k["attn_mask"]) or lm_forward(*a, **k))
    logits = model(ids, images)
    model(padded, images)
    assert (masks[0] is None) is (attention != "dialogue_causal") and masks[1].shape == (1,) + padded.shape[1:] * 2
    explicit = attention_mask(ids, attention, TOKENIZER.user_id, TOKENIZER.pad_id)
    assert torch.allclose(logits, lm_forward(None, attn_mask=explicit, input_embeds=model.embed(ids, images)), atol=1e-12)


# --- sampling ---------------------------------------------------------------------------------------------

def test_sampler_never_touches_image_positions_and_answers_turn_by_turn():
    data = load_digit_images()
    model = tiny_vlm().float()
    dialogues = evaluation_dialogues(data, data.test_index[:2])
    answers = converse(model, TOKENIZER, dialogues, data, steps=2)
    assert [len(a) for a in answers] == [len(d.turns) for d in dialogues]
    scores = accuracy_by_kind(dialogues, answers)
    assert set(scores) == {"digit", "parity", "plus", "describe", "turn 2"}
    from minimdm.mdm.sampler import generate

    prompt = torch.tensor([[TOKENIZER.bos_id] + encode_question(TOKENIZER, dialogues[0], 0)])
    result = generate(bind_images(model, data.images[:1]), prompt, gen_length=SLOT, steps=SLOT, mask_id=model.mask_id)
    for frame in result.frames:
        assert torch.equal(frame[:, : prompt.shape[1]], prompt)  # image placeholders stay as they are


def counting_stub(attention):
    """A VisionLanguageModel whose forward is replaced: after the last <assistant>, its logits spell the number
    written in the image's first pixel (value n / 16) on turn 1, and on turn 2 the digit read from its turn-1 answer
    slot plus 1 ("?" when that slot holds no digit); then <eot> and <eos>. A causal model's position i speaks for
    token i + 1."""
    model = tiny_vlm(attention).float()
    shift = 1 if attention == "causal" else 0

    def forward(canvas, images=None):
        logits = torch.zeros(*canvas.shape, TOKENIZER.vocab_size)
        for row in range(canvas.shape[0]):
            heads = torch.nonzero(canvas[row] == TOKENIZER.assistant_id).flatten().tolist()
            if len(heads) == 1:
                text = str(round(float(images[row, 0, 0, 0]) * 16))
            else:
                first = int(canvas[row, heads[0] + 1])
                digit = TOKENIZER.vocab[first] if first < TOKENIZER.vocab_size else "?"
                text = str(int(digit) + 1) if digit.isdigit() else "?"
            slot = TOKENIZER.encode(text) + [TOKENIZER.eot_id] + [TOKENIZER.eos_id] * SLOT
            for k in range(SLOT):
                position = heads[-1] + 1 + k - shift
                if position < canvas.shape[1]:
                    logits[row, position, slot[k]] = 10.0
        return logits

    model.forward = forward
    return model


@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_converse_feeds_each_turn_its_own_earlier_answer(attention):
    """Stub answers: turn 1 = the image's number, turn 2 = the model's own turn-1 answer + 1, so the exact answers
    are [["1"], ["3", "4"], ["5", "6"]] (the reference answers "7", "8", "9" are never what the stub reads)."""
    data = SimpleNamespace(images=torch.arange(8.0)[:, None, None, None].expand(8, 1, 8, 8) / 16)
    dialogues = [Dialogue(1, [Turn("digit", "digit?", "7")]),
                 Dialogue(3, [Turn("digit", "digit?", "7"), Turn("then_plus", "that +1?", "8")]),
                 Dialogue(5, [Turn("plus", "plus 2?", "9"), Turn("then_plus", "that +1?", "0")])]
    for steps in (1, SLOT):
        answers = converse(counting_stub(attention), TOKENIZER, dialogues, data, steps=steps, batch_size=1)
        assert answers == [["1"], ["3", "4"], ["5", "6"]], steps


def test_accuracy_by_kind_on_hand_built_answers():
    """Single questions are scored per kind on their one answer; multi-turn dialogues on their second answer only."""
    def one(kind, answer):
        return Dialogue(0, [Turn(kind, "?", answer)])

    def two(first, second):
        return Dialogue(0, [Turn("digit", "digit?", first), Turn("then_plus", "that +1?", second)])

    dialogues = [one("digit", "3"), one("digit", "4"), one("parity", "odd"), one("plus", "9"),
                 one("describe", "thin 2"), two("3", "4"), two("5", "6"), two("7", "8"),
                 Dialogue(0, [Turn("plus", "plus 1?", "2"), Turn("then_plus", "that +1?", "3"),
                              Turn("then_even", "that even?", "no")])]
    answers = [["3"], ["5"], ["odd"], ["10"], ["thin 2"],
               ["0", "4"], ["0", "6"], ["7", "9"], ["0", "0", "no"]]  # turns 1/2/last right: 1/2/3 of 4
    scores = accuracy_by_kind(dialogues, answers)
    assert scores == {"digit": 0.5, "parity": 1.0, "plus": 0.0, "describe": 1.0, "turn 2": 0.5}
    assert list(scores) == ["digit", "parity", "plus", "describe", "turn 2"]
    assert accuracy_by_kind(dialogues[5:8], answers[5:8]) == {"turn 2": 2 / 3}


def test_lower_learning_rate_by_a_parameter_multiplier():
    """Adam's first step moves every weight by lr; under W = s W' it moves W by s * lr, and W is unchanged at start."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    before = layer.weight.detach().clone()
    scale_learning_rate(layer, 0.1)
    assert torch.allclose(layer.weight, before)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.01)
    layer(torch.randn(4, 3)).square().sum().backward()
    optimizer.step()
    assert torch.allclose((layer.weight - before).abs(), torch.full_like(before, 0.001), rtol=1e-3)


def test_the_multiplier_is_set_once_and_tuning_moves_the_encoder_s_times_slower():
    """build_model scales the encoder once (stored W' = W / s, used W = s W'). visual_tuning works on a copy: the
    text model is left as it was, and tuning's first AdamW step (lr = tune_lr, no warmup) moves each encoder bias by
    at most s * lr, the largest by s * lr to 2 %, and the LM's final gain by lr (Adam's first step is
    lr g / (|g| + eps), a little under lr where |g| is tiny)."""
    from torch.nn.utils import parametrize

    from minimdm.vlm.stages import RecipeConfig, build_model, visual_tuning

    cfg = RecipeConfig(d_model=16, n_layers=1, n_heads=2, encoder_width=8, batch_size=4, align_steps=1, tune_steps=1)
    encoder = freeze(DigitEncoder(8).eval())
    model = build_model(encoder, TOKENIZER, cfg, "bidirectional")
    assert parametrize.is_parametrized(model.encoder.conv1) and not parametrize.is_parametrized(encoder.conv1)
    for path, original in encoder.named_modules():
        module = model.encoder.get_submodule(path)
        for name, weight in original.named_parameters(recurse=False):
            assert torch.allclose(getattr(module, name), weight)
            stored = module.parametrizations[name].original
            assert torch.allclose(stored, weight / cfg.encoder_lr_scale)
    before = {name: q.detach().clone() for name, q in model.state_dict().items()}
    data = load_digit_images()
    pool = encode_dialogues(TOKENIZER, make_dialogues(data, data.train_index[:8], 8, seed=0))
    tuned, _, _ = visual_tuning(model, TOKENIZER, data, pool, cfg)
    assert all(torch.equal(q, before[name]) for name, q in model.state_dict().items())  # the text model is untouched
    lr, s = cfg.tune_lr, cfg.encoder_lr_scale
    for conv in ("conv1", "conv2", "conv3"):
        moved = float((getattr(tuned.encoder, conv).bias - getattr(model.encoder, conv).bias).detach().abs().max())
        assert moved == pytest.approx(s * lr, rel=0.02) and moved <= s * lr * (1 + 1e-3), conv
    gain = float((tuned.lm.norm.weight - model.lm.norm.weight).detach().abs().max())
    assert gain == pytest.approx(lr, rel=0.02) and gain <= lr * (1 + 1e-3)


# --- errors -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("images, message", [
    (torch.rand(1, 1, 7, 8), "8x8 pixels"),
    (torch.rand(1, 3, 8, 8), "1 channel"),
    (torch.rand(1, 8, 8), "shape (batch, 1, 8, 8)"),
])
def test_bad_images_are_named(images, message):
    model = tiny_vlm().float()
    ids, _, _ = batch_of([two_turn()])
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        model(ids, images)
    assert "\n" not in str(error.value)


def test_placeholder_errors_are_named():
    model = tiny_vlm().float()
    ids, _, images = batch_of([two_turn()], dtype=torch.float32)
    no_placeholder = ids.masked_fill(ids == TOKENIZER.image_id, TOKENIZER.pad_id)
    with pytest.raises(ValueError, match="no <image> placeholder"):
        model(no_placeholder, images)
    with pytest.raises(ValueError, match="more images than placeholders"):
        model(ids, torch.rand(1, 2, 1, 8, 8))
    with pytest.raises(ValueError, match="no images were given"):
        model(ids)
    with pytest.raises(ValueError, match="one entry per row"):
        model(ids, torch.rand(2, 1, 8, 8))


def test_empty_and_bad_answers_are_named():
    with pytest.raises(ValueError, match="answer is empty"):
        encode_dialogue(TOKENIZER, Dialogue(0, [Turn("digit", "digit?", "")]))
    with pytest.raises(ValueError, match="at most 7 fit a slot"):
        encode_dialogue(TOKENIZER, Dialogue(0, [Turn("describe", "describe", "very thick 7")]))
    ids, answer_mask, images = batch_of([two_turn()])
    with pytest.raises(ValueError, match="row 0 has no answer token"):
        mdm_dialogue_loss(tiny_vlm(), (ids, torch.zeros_like(answer_mask), images))
    with pytest.raises(ValueError, match="attention='sideways'"):
        attention_mask(ids, "sideways", TOKENIZER.user_id, TOKENIZER.pad_id)
    with pytest.raises(ValueError, match="needs a language model with causal=True"):
        VisionLanguageModel(DigitEncoder(16), tiny_vlm().lm, image_id=TOKENIZER.image_id,
                            user_id=TOKENIZER.user_id, pad_id=TOKENIZER.pad_id, attention="causal")


def test_switch_and_sampler_arguments_are_checked():
    from minimdm.vlm.stages import RecipeConfig, visual_tuning

    data = load_digit_images()
    with pytest.raises(ValueError, match="can switch only between 'bidirectional' and 'dialogue_causal'"):
        visual_tuning(tiny_vlm("causal"), TOKENIZER, data, None, RecipeConfig(), attention="bidirectional")
    with pytest.raises(ValueError, match="steps=9 must lie in 1..8"):
        converse(tiny_vlm(), TOKENIZER, evaluation_dialogues(data, data.test_index[:1]), data, steps=9)


@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_answers_never_hold_an_image_placeholder_or_a_role_header(attention):
    """A model that prefers <image> everywhere must still answer with text, <eot> or <eos>: a placeholder in an
    answer would break the next turn's prompt (one placeholder too many for its image)."""
    data = load_digit_images()
    model = tiny_vlm(attention).float()
    preference = torch.zeros(TOKENIZER.vocab_size)
    preference[TOKENIZER.image_id], preference[TOKENIZER.user_id] = 100.0, 90.0
    model.lm.head.register_forward_hook(lambda module, inputs, logits: logits + preference)
    dialogues = evaluation_dialogues(data, data.test_index[:4])
    prompt = torch.tensor([[TOKENIZER.bos_id] + encode_question(TOKENIZER, dialogues[0], 0)])
    unguarded = model(prompt, data.images[[dialogues[0].image]])[0].argmax(-1)
    assert (unguarded == TOKENIZER.image_id).all()  # the bias works: without the rule, answers would be placeholders
    answers = converse(model, TOKENIZER, dialogues, data, steps=2)  # two turns: fails if turn 1 wrote a placeholder
    allowed = set(TOKENIZER.vocab[i] for i in range(TOKENIZER.vocab_size) if i not in TOKENIZER.special_ids)
    assert all(set(answer) <= allowed for turns in answers for answer in turns)
    forbidden = set(answer_forbidden(TOKENIZER))
    assert forbidden == TOKENIZER.special_ids - {TOKENIZER.eot_id, TOKENIZER.eos_id} and TOKENIZER.image_id in forbidden
