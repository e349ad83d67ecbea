"""Every notebook opens the same way: a Colab badge and an install cell, both built from ``minimdm.course``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from minimdm.course import COURSE_REPOSITORY, colab_badge, colab_url, install_cell_source

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks_to_check():
    assert len(NOTEBOOKS) >= 5


def test_the_addresses_come_from_the_repository_constant():
    expected = f"https://colab.research.google.com/github/{COURSE_REPOSITORY}/blob/main/notebooks/05_x.ipynb"
    assert colab_url("05_x.ipynb") == expected
    assert f"\"https://github.com/{COURSE_REPOSITORY}\"" in install_cell_source()
    assert colab_url("05_x.ipynb") in colab_badge("05_x.ipynb")


@pytest.mark.parametrize("name", ["05_x", "notebooks/05_x.ipynb", ""])
def test_colab_url_names_a_bad_notebook(name):
    with pytest.raises(ValueError, match="notebook="):
        colab_url(name)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_notebook_opens_with_badge_and_install_cell(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    first = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and colab_badge(path.name) in first, \
        f"{path.name}: the first cell lacks the badge {colab_badge(path.name)}"
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code and "".join(code[0]["source"]).strip() == install_cell_source(), \
        f"{path.name}: the first code cell is not minimdm.course.install_cell_source()"
