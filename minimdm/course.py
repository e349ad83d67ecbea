"""Where the course lives: the one place that names its repository.

Every notebook opens with a Colab badge and an install cell built from ``COURSE_REPOSITORY``; a test
(``tests/test_notebook_headers.py``) checks that each notebook's badge and install cell match these strings, so
moving the course means changing one line here and regenerating those two cells.
"""
from __future__ import annotations

COURSE_REPOSITORY = "minimdm/minimdm"  # owner/name on GitHub
COURSE_BRANCH = "main"


def colab_url(notebook: str) -> str:
    """The Colab address that opens ``notebooks/<notebook>`` (a file name such as ``05_llada_....ipynb``)."""
    if not notebook.endswith(".ipynb") or "/" in notebook:
        raise ValueError(f"notebook={notebook!r}: give the file name of a notebook, e.g. '05_name.ipynb'")
    return f"https://colab.research.google.com/github/{COURSE_REPOSITORY}/blob/{COURSE_BRANCH}/notebooks/{notebook}"


def colab_badge(notebook: str) -> str:
    """The Markdown badge line of a notebook's first cell."""
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)})"


def install_cell_source() -> str:
    """The install cell every notebook runs first. Where minimdm is missing (Colab), it clones the course and installs
    the clone in editable mode: the package then finds ``data/`` (the shipped models) next to its code, which a pip
    install from GitHub would leave out. The path is added by hand because the kernel started before the install."""
    return ("# On Colab (or anywhere minimdm is not installed yet), clone the course and install it first; the clone\n"
            "# brings data/ (the shipped models) along, which a pip install from GitHub would leave out.\n"
            "import importlib.util, os, subprocess, sys\n"
            "if importlib.util.find_spec(\"minimdm\") is None:\n"
            "    if not os.path.isdir(\"minimdm-course\"):\n"
            f"        subprocess.run([\"git\", \"clone\", \"-q\", \"--depth\", \"1\", \"https://github.com/{COURSE_REPOSITORY}\", "
            "\"minimdm-course\"], check=True)\n"
            "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\", \"-e\", \"minimdm-course\"], check=True)\n"
            "    sys.path.insert(0, os.path.abspath(\"minimdm-course\"))  # this kernel started before the install")
