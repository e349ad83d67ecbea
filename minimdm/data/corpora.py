"""Text corpora, all reachable without a network by default.

* ``python_docs`` (the default): the English reference prose that ships inside Python itself
  (``pydoc_data.topics``, ~0.45 MB), written to the data cache at first use.
* ``python_stdlib``: the source of Python's standard library, every ``.py`` file in path order (~30 MB of
  code, 31.5M characters for Python 3.11), for runs that would repeat a small corpus hundreds of times.
  Both Python corpora depend on the Python version that builds them.
* ``tinyshakespeare``: the nanoGPT reference corpus (1,115,394 chars). Looked up in the data cache; with
  ``download=True`` fetched from its canonical URL and checked against its sha256; otherwise a clear error.
* a path to any local UTF-8 text file, or ``hf:NAME[:SPLIT]`` for a Hugging Face dataset with a ``text`` column
  (loaded through ``datasets``, which uses its own local cache). Offline (no route to the Hub within 3 s, or
  ``HF_HUB_OFFLINE=1``) a dataset comes from that cache or fails at once with a ValueError saying so.

The data cache is ``$MINIMDM_DATA`` if set, else ``data/cache`` of the repository checkout, else
``~/.cache/minimdm``.
"""
from __future__ import annotations

import codecs
import hashlib
import os
import socket
import urllib.parse
import urllib.request
from pathlib import Path

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
BUILTIN = ("python_docs", "python_stdlib", "tinyshakespeare")


def data_dir() -> Path:
    if os.environ.get("MINIMDM_DATA"):
        path = Path(os.environ["MINIMDM_DATA"])
    else:
        repo_data = Path(__file__).resolve().parents[2] / "data"
        path = repo_data / "cache" if repo_data.is_dir() else Path.home() / ".cache" / "minimdm"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cached_text(name: str, build) -> str:
    """The text of ``data_dir()/name``, written there by ``build()`` at first use."""
    path = data_dir() / name
    if not path.exists():
        tmp = path.with_suffix(f".tmp{os.getpid()}")  # one per process: parallel workers may build it at once
        tmp.write_text(build(), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a half-written corpus never appears
    return path.read_text(encoding="utf-8")


def python_docs() -> str:
    """Python's own reference topics (the text of `help('topics')`), sorted by topic for a stable corpus."""
    def build():
        from pydoc_data.topics import topics

        return "\n\n".join(topics[key].strip() for key in sorted(topics)) + "\n"

    return _cached_text("python_docs.txt", build)


def python_stdlib() -> str:
    """Every ``.py`` file of the standard library (third-party site-packages excluded), sorted by path."""
    def build():
        import sysconfig

        root = Path(sysconfig.get_paths()["stdlib"])
        files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.relative_to(root).parts)
        return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)

    return _cached_text("python_stdlib.txt", build)


def tinyshakespeare(download: bool = False) -> str:
    path = data_dir() / "tinyshakespeare.txt"
    if not path.exists():
        if not download:
            raise FileNotFoundError(
                f"tinyshakespeare is not in the data cache ({path}). Either copy input.txt from "
                f"{TINYSHAKESPEARE_URL} to that path, or call load_corpus('tinyshakespeare', download=True) "
                "(CLI: --download) when online."
            )
        tmp = path.with_suffix(".tmp")
        try:
            urllib.request.urlretrieve(TINYSHAKESPEARE_URL, tmp)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            raise FileNotFoundError(f"could not download tinyshakespeare ({error}); copy it to {path} by hand") from error
        os.replace(tmp, path)
    digest = sha256_of(path)
    if digest != TINYSHAKESPEARE_SHA256:
        raise ValueError(f"{path} has sha256 {digest}, expected {TINYSHAKESPEARE_SHA256}: delete it and fetch it again")
    return path.read_text(encoding="utf-8")


def _offline_declared() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub opens within ``timeout`` s (behind a proxy: assumed, datasets decides)."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def huggingface_text(source: str) -> str:
    """``hf:NAME[:SPLIT]`` -> the dataset's ``text`` column joined by newlines."""
    import datasets

    _, name, *rest = source.split(":")
    split = rest[0] if rest else "train"
    if not name:
        raise ValueError(f"corpus={source!r}: write hf:NAME or hf:NAME:SPLIT, e.g. hf:roneneldan/TinyStories")
    offline = _offline_declared() or not hub_reachable()
    # datasets reads HF_HUB_OFFLINE once, at import: if it thinks it is online it would retry the network for minutes
    if offline and not datasets.config.HF_HUB_OFFLINE:
        raise ValueError(f"corpus={source!r} needs the Hugging Face Hub, but this machine is offline: connect, or "
                         "set HF_HUB_OFFLINE=1 before starting Python to use a copy in the datasets cache, or "
                         "pass a local text file")
    try:
        dataset = datasets.load_dataset(name, split=split)
    except ConnectionError as error:
        where = "is not in the local datasets cache and this machine is offline" if offline else "could not be downloaded"
        raise ValueError(f"corpus={source!r} {where} ({error}); connect, or pass a local text file") from error
    if "text" not in dataset.column_names:
        raise ValueError(f"dataset {name!r} has no 'text' column (columns: {dataset.column_names})")
    return "\n".join(dataset["text"])


def check_utf8(path: Path, chunk_size: int = 1 << 20) -> None:
    """Raise a ValueError naming the first byte that is not UTF-8 (read in chunks: corpora can be large)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes before the decoder's pending ones
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(chunk_size)
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                position = offset - pending + error.start
                raise ValueError(f"{path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset "
                                 f"{position}): convert it, e.g. `iconv -f latin1 -t utf-8`, or pick another file"
                                 ) from None
            if not chunk:
                return
            offset += len(chunk)


def local_text_file(path: Path) -> str:
    """A local text file, read through ``datasets`` (one line per row) so large files stream from its cache."""
    import datasets

    check_utf8(path)

    dataset = datasets.load_dataset("text", data_files=str(path), split="train", keep_linebreaks=True)
    return "".join(dataset["text"])


def load_corpus(name: str = "python_docs", download: bool = False) -> str:
    if name == "python_docs":
        text = python_docs()
    elif name == "python_stdlib":
        text = python_stdlib()
    elif name == "tinyshakespeare":
        text = tinyshakespeare(download)
    elif name.startswith("hf:"):
        text = huggingface_text(name)
    elif Path(name).is_file():
        text = local_text_file(Path(name))
    else:
        raise ValueError(f"corpus={name!r} is neither a built-in corpus {BUILTIN}, an existing file, nor 'hf:NAME[:SPLIT]'")
    if not text.strip():
        raise ValueError(f"corpus {name!r} is empty")
    return text
