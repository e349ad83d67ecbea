"""The course is self-contained: no tracked file points a reader at documents they cannot open.

The course was written from private development notes. What a reader meets must cite the papers (arXiv id,
section, theorem or algorithm) or a page of ``docs/`` instead. This test scans every tracked text file (notebooks:
sources and outputs) for the notes' file names, "the spec" used as a source, their provenance tags (a "P?" or a capital
letter in square brackets), "recalled, verify" remarks and their lettered or numbered section pointers ("§B.3", "§0.2", "§7.2 E").
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = (".py", ".md", ".ipynb", ".txt", ".yml", ".yaml", ".toml", ".json", ".cfg", ".ini")
EXTRA_FILES = (".ci/run",)

# (what it is, pattern). Each pattern is written so that ordinary words do not match: "specific", "special",
# "spectral", importlib's find_spec, a notebook's kernelspec, an index x[A], a paper's "App. A.3".
# The notes' file names, assembled from parts so that this file does not itself name them.
NOTE_FILES = ("mdm" "_core", "bfn" "_energy", "multimodal" "_long_rid")
POINTERS = [
    ("a development-note file", re.compile(r"\b(?:" + "|".join(NOTE_FILES) + r")(?:\.md)?\b"
                                           r"|\b(?:DESIGN|STYLE)\.md\b")),
    ("'the spec' as a source", re.compile(r"\b(?:the|this|our|course|its)\s+spec(?:s|ification)?\b"
                                          r"|\bspecs?\s*(?:§|\(\s*§|:\s*[<>=≥≤]|\[(?:P\?|[A-D])\])|\bspec's\b", re.IGNORECASE)),
    ("a provenance tag", re.compile(r"(?<![\w\]\)\[\"'])\[(?:P\?|A|B|C|D|R|D-verified|reconstruction)\](?![(\[])")),
    ("an unverified recollection", re.compile(r"recall(?:ed)?\W{0,3}(?:and\s+not\s+re-?)?verif", re.IGNORECASE)),
    ("a lettered note section", re.compile(r"(?<!App\. )(?<!Appendix )§\s?[A-D](?:\.\d+)?\b")),
    ("a note section number", re.compile(r"§\s?0\.\d|§\s?\d\.\d+\s+[A-K](?:-[A-K])?\b(?![\w'])")),
]
# A paper's section is cited with the paper ("LLaDA §2.4", "arXiv 2502.09992, §2.4"), on the line or the one before.
PAPER = re.compile(r"arXiv|LLaDA|SMDM|RADD|VRPO|SEDD|BFN|DPO|Chinchilla|\bRID\b|et al\.|[Pp]aper|Graves|Xue|\bNie\b"
                   r"|\bOu\b|\bZhu\b|\bChen\b")


def pointers_in(line: str, previous: str = "") -> list[str]:
    """The kinds of pointer found in one line of text (``previous``: the line before it, for a wrapped citation)."""
    kinds = [kind for kind, pattern in POINTERS if pattern.search(line)]
    if "§" in line and not PAPER.search(previous + " " + line):
        kinds.append("a section sign without its paper")
    return kinds


def tracked_text_files() -> list[Path]:
    listing = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    names = [n for n in listing.split("\0") if n]
    return [ROOT / n for n in names if (n.endswith(TEXT_SUFFIXES) or n in EXTRA_FILES) and (ROOT / n).is_file()]


def notebook_lines(path: Path):
    """(place, line) for every line of every cell's source and text outputs."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    for index, cell in enumerate(notebook.get("cells", [])):
        for number, line in enumerate("".join(cell.get("source", "")).splitlines(), 1):
            yield f"cell {index} source line {number}", line
        for output in cell.get("outputs", []):
            texts = [output.get("text", "")] + [output.get("data", {}).get(kind, "")
                                                for kind in ("text/plain", "text/markdown", "text/html")]
            for text in texts:
                for number, line in enumerate("".join(text).splitlines(), 1):
                    yield f"cell {index} output line {number}", line


def file_lines(path: Path):
    if path.suffix == ".ipynb":
        yield from notebook_lines(path)
        return
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        yield f"line {number}", line


@pytest.mark.parametrize("line", [
    f"({NOTE_FILES[0]}.md §0.2)", "see DESIGN" ".md", "spec " "§7.2 E pass criteria:", "the spec's reference values",
    "written from the spec, and", "a far smaller learning rate [" "P?].", "reports gains [A]: +4.7",
    "recall—verify", "(§A.2)", "exactly the grid of §B.3", "(§0.3)", "(spec: >= 32)", "as in the course spec",
    "The sampler (§2.4) proposes a token", "as you see in §3.2 of our notes",
])
def test_the_scanner_finds_each_kind_of_pointer(line):
    assert pointers_in(line), line


@pytest.mark.parametrize("line", [
    "a specific example", "special tokens", "spectral norm", 'if importlib.util.find_spec("minimdm") is None:',
    '"kernelspec": {', "x = table[A]", "(App. A.3)", "(arXiv 2502.09992, Sec. 2.4)", "Theorem 4.1 of arXiv 2404.15766",
    "respecting the order", "see section 2", "a list [A, B]", "The sampler (LLaDA §2.4) proposes",
    "the paper's §3.2", 'CharTokenizer(spec["chars"])', "def load(spec: str) -> dict:",
])
def test_the_scanner_leaves_ordinary_text_alone(line):
    assert not pointers_in(line), line


def test_a_wrapped_citation_names_its_paper_on_the_line_before():
    assert not pointers_in("§3.3, Eq. 3) draws one t per dialogue", previous="LLaDA-V (You et al., arXiv 2505.16933,")
    assert pointers_in("§3.3, Eq. 3) draws one t per dialogue", previous="the loss of the course")


def test_no_tracked_file_points_at_the_development_notes():
    files = tracked_text_files()
    # not vacuous: the scan must see the package, the tests and the notebooks
    assert len(files) >= 60, f"only {len(files)} tracked text files found under {ROOT}"
    assert sum(f.suffix == ".ipynb" for f in files) >= 5
    this_file = Path(__file__).resolve()
    found = []
    for path in files:
        if path == this_file:  # its examples are pointers on purpose
            continue
        previous = ""
        for place, line in file_lines(path):
            for kind in pointers_in(line, previous):
                found.append(f"{path.relative_to(ROOT)}:{place}: {kind}: {line.strip()[:120]}")
            previous = line
    assert not found, f"{len(found)} pointers to documents a reader cannot open:\n" + "\n".join(found)
