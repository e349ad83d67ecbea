"""Tokenizers round-trip, the default corpus builds offline, the CLI's main job runs, the widget renders."""
import torch

from minimdm.__main__ import main
from minimdm.data import BPETokenizer, CharTokenizer, TokenStream, load_corpus
from minimdm.mdm.sampler import generate
from minimdm.toys import MarkovChain
from minimdm.widgets import frame_html, plot_unmasking, show_unmasking


def test_default_corpus_is_real_english_and_offline():
    text = load_corpus()
    assert len(text) > 300_000 and "the" in text and "statement" in text


def test_stdlib_corpus_is_python_source_built_once_and_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMDM_DATA", str(tmp_path))
    text = load_corpus("python_stdlib")
    assert len(text) > 5_000_000 and "def " in text and "import " in text
    assert [p.name for p in tmp_path.iterdir()] == ["python_stdlib.txt"]  # no temporary file left behind
    assert load_corpus("python_stdlib") == text  # the second call reads the cache


def test_tokenizers_round_trip(tmp_path):
    text = "It is a truth universally acknowledged.\nThe end."
    char = CharTokenizer.from_text(text)
    assert char.decode(char.encode(text)) == text
    char.save(tmp_path / "c.json")
    assert CharTokenizer.load(tmp_path / "c.json").encode("truth") == char.encode("truth")
    bpe = BPETokenizer.train(text * 20, vocab_size=300)
    assert bpe.decode(bpe.encode(text)) == text
    assert len(bpe.encode(text)) < len(text)


def test_token_stream_windows_are_held_out():
    stream = TokenStream(torch.arange(1000), seq_len=10)
    assert stream.batch(4).shape == (4, 10)
    assert int(stream.windows("val").min()) >= 900  # validation comes from the last 10%


def test_cli_train_then_sample(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIMDM_QUICK", "1")
    main(["train", "--out", str(tmp_path), "--samples", "1"])
    out = capsys.readouterr().out
    assert "validation NELBO" in out and "bits/char" in out and "sample 1" in out
    main(["sample", "--checkpoint", str(tmp_path), "--prompt", "The ", "--gen-length", "8", "--num", "1"])
    sample = capsys.readouterr().out.split("--- sample 1 ---\n", 1)[1].removesuffix("\n")
    assert sample.startswith("The ") and len(sample) == 4 + 8  # the prompt, then eight generated characters


def test_widget_and_static_figure_render_the_history():
    chain = MarkovChain(vocab_size=6, seed=0)
    result = generate(chain.oracle_denoiser(), torch.tensor([[1, 2]]), gen_length=8, steps=4, mask_id=6,
                      remasking="random", temperature=1.0)
    first, middle, last = (frame_html(result, s) for s in (0, 2, 4))
    assert first.count("background:#d9d9d9") == 8  # all eight generated positions masked
    assert middle.count("background:#d9d9d9") == 4 and middle.count("#ffd54f") == 2  # two new tokens highlighted
    assert "#d9d9d9" not in last
    box = show_unmasking(result)
    play, slider = box.children[0].children
    slider.value = 3
    assert box.children[1].value == frame_html(result, 3)
    assert plot_unmasking(result).axes
