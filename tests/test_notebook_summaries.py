"""Every notebook's "What we saw" summary is rendered from the run, never typed by hand.

A summary that quotes numbers in markdown goes stale the moment a preset, a seed or a library changes, and nobody
notices. The course's rule: the section's markdown cells hold no result (no digits, apart from a heading's own text
and arXiv identifiers), and a code cell of the section renders the summary from the variables that hold the numbers
(``display(Markdown(f"..."))``), so its committed outputs carry the rendered text.

``PENDING`` lists notebooks known to break the rule, with the reason. The test asserts that each of them *still*
fails, so the list can only shrink: a fixed notebook must leave it, and no passing notebook can hide in it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))

# notebook file name -> why it fails today (being fixed elsewhere; remove the entry when it passes)
PENDING: dict[str, str] = {}

HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
SUMMARY_HEADING = re.compile(r"what we saw", re.IGNORECASE)
ALLOWED = [  # citation apparatus and names, not results
    re.compile(r"arXiv[:\s]\s*\d{4}\.\d{4,5}(v\d+)?", re.IGNORECASE),
    re.compile(r"§\s*\d+(\.\d+)*"),
    re.compile(r"\b(eq|eqs|equation|table|fig|figure|section|appendix|theorem|thm|prop|proposition|lemma|algorithm|alg)"
               r"\.?\s*\(?[A-Z]?\d+(\.\d+)*\)?", re.IGNORECASE),
    re.compile(r"\b(CIFAR-10+|text8|MNIST|ImageNet-?\d*)\b"),
    re.compile(r"\bnotebook\s+\d{2}\b", re.IGNORECASE),
]
DIGIT = re.compile(r"\d")
MIN_RENDERED_CHARS = 80  # a rendered summary is a few sentences; a stray "done" or an empty string is not


def _source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _rendered_markdown(cell) -> str:
    """The text/markdown that a code cell's committed outputs display."""
    texts = []
    for output in cell.get("outputs", []):
        data = output.get("data", {})
        if "text/markdown" in data:
            markdown = data["text/markdown"]
            texts.append("".join(markdown) if isinstance(markdown, list) else markdown)
    return "\n".join(texts)


def summary_section(notebook: dict) -> list[tuple[str, dict, str]] | None:
    """The cells of the "What we saw" section as (cell type, cell, the part of its text inside the section).

    The section starts at the heading and ends at the next heading of the same or a higher level, which may sit
    inside the same markdown cell (e.g. "## Exercises" after the summary). None if there is no such heading.
    """
    section, level = [], None
    for cell in notebook["cells"]:
        text = _source(cell)
        if cell["cell_type"] != "markdown":
            if level is not None:
                section.append((cell["cell_type"], cell, text))
            continue
        kept = []
        for line in text.splitlines():
            match = HEADING.match(line)
            if level is None:
                if match and SUMMARY_HEADING.search(match.group(2)):
                    level = len(match.group(1))
                continue
            if match and len(match.group(1)) <= level:
                if kept:
                    section.append(("markdown", cell, "\n".join(kept)))
                return section
            kept.append(line)
        if level is not None and kept:
            section.append(("markdown", cell, "\n".join(kept)))
    return section if level is not None else None


def summary_problems(notebook: dict) -> list[str]:
    """What breaks the rule in one notebook (an empty list when it follows it)."""
    section = summary_section(notebook)
    if section is None:
        return ["no 'What we saw' heading"]
    problems = []
    for cell_type, _, text in section:
        if cell_type != "markdown":
            continue
        for line in text.splitlines():
            if HEADING.match(line):
                continue  # a sub-heading's own number ("### 2. ...") is not a result
            stripped = line
            for pattern in ALLOWED:
                stripped = pattern.sub("", stripped)
            if DIGIT.search(stripped):
                problems.append(f"hand-typed number in the summary's markdown: {line.strip()[:100]!r}")
    rendered = [_rendered_markdown(cell) for cell_type, cell, _ in section if cell_type == "code"]
    if not any(cell_type == "code" for cell_type, _, _ in section):
        problems.append("no code cell renders the summary (display(Markdown(...)) from the run's variables)")
    elif not any(len(text.strip()) >= MIN_RENDERED_CHARS and DIGIT.search(text) for text in rendered):
        problems.append("the section's code cells have no committed rendered summary (text/markdown output with the "
                        "run's numbers): execute the notebook")
    return problems


def test_the_notebooks_are_all_there():
    # not vacuous: the parametrised test below sees every numbered notebook, and each has the section
    assert len(NOTEBOOKS) >= 13, [p.name for p in NOTEBOOKS]
    assert set(PENDING) <= {p.name for p in NOTEBOOKS}, "PENDING names a notebook that does not exist"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_summary_is_rendered_from_the_run(path):
    problems = summary_problems(json.loads(path.read_text(encoding="utf-8")))
    if path.name in PENDING:
        assert problems, f"{path.name} now follows the rule: remove it from PENDING"
        return
    assert not problems, f"{path.name}: {len(problems)} problem(s): " + "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")


# --- the checker itself catches what it should ------------------------------------------------------------------

def _notebook(*cells):
    return {"cells": [dict(cell) for cell in cells]}


def _markdown(text):
    return {"cell_type": "markdown", "source": text}


def _code(source, rendered=None):
    outputs = [] if rendered is None else [{"output_type": "display_data", "data": {"text/markdown": rendered}}]
    return {"cell_type": "code", "source": source, "outputs": outputs}


GOOD_RENDER = "* Accuracy rose from 0.22 ± 0.04 at w = 0 to 0.38 ± 0.05 at w = 8, as the run above printed.\n"


def test_a_rendered_summary_passes():
    notebook = _notebook(_markdown("## 3. Results\nSome text with 12 numbers is fine here."),
                         _markdown("## What we saw"),
                         _code('display(Markdown(f"..."))', GOOD_RENDER),
                         _markdown("## Exercises\n1. Predict, then run: 3 steps."))
    assert summary_problems(notebook) == []
    cited_result = _notebook(_markdown("## What we saw\nSMDM (arXiv 2410.18514, §3) reports 16x; we got 37.9x."),
                             _code("display(Markdown(...))", GOOD_RENDER))
    assert any("37.9x" in p for p in summary_problems(cited_result))  # a citation does not excuse the line


def test_a_planted_hand_typed_number_is_caught():
    notebook = _notebook(_markdown("## What we saw\n\n* Guidance lifts accuracy from 0.22 to 0.38.\n\n## Exercises\n1. x"),
                         _code('display(Markdown(f"..."))', GOOD_RENDER))
    problems = summary_problems(notebook)
    assert len(problems) == 2  # the typed number, and the rendering cell lies after the section ended
    assert "0.22" in problems[0]


def test_a_summary_split_over_cells_is_read_to_its_end():
    notebook = _notebook(_markdown("## What we saw"), _code("display(Markdown(...))", GOOD_RENDER),
                         _markdown("One more remark: the MDM needed 16x the compute."), _markdown("## Exercises"))
    assert any("16x" in p for p in summary_problems(notebook))


def test_an_unexecuted_or_missing_rendering_is_caught():
    assert summary_problems(_notebook(_markdown("## What we saw"), _code("display(Markdown(...))"))) != []
    assert summary_problems(_notebook(_markdown("## What we saw"), _code("display(Markdown(...))", "done"))) != []
    assert summary_problems(_notebook(_markdown("## What we saw\nAll good, no numbers."))) != []
    assert summary_problems(_notebook(_markdown("## Results"), _code("x", GOOD_RENDER))) == ["no 'What we saw' heading"]


def test_headings_and_citations_are_not_results():
    notebook = _notebook(_markdown("## 9. What we saw (CPU preset)\n### 9.1 Guidance\nAs in SMDM (arXiv 2410.18514, §3.2, "
                                   "Eq. (4), Table 2) on CIFAR-10; see notebook 05."),
                         _code("display(Markdown(...))", GOOD_RENDER))
    assert summary_problems(notebook) == []
    cited_result = _notebook(_markdown("## What we saw\nSMDM (arXiv 2410.18514, §3) reports 16x; we got 37.9x."),
                             _code("display(Markdown(...))", GOOD_RENDER))
    assert any("37.9x" in p for p in summary_problems(cited_result))  # a citation does not excuse the line
