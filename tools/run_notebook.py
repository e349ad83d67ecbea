"""Execute notebooks in place (the committed outputs of a real run) and strip widget state.

    python tools/run_notebook.py notebooks/01_masked_diffusion_basics.ipynb [more.ipynb ...]

The preset follows the usual switch (MINIMDM_PRESET / MINIMDM_QUICK / the device), so
``MINIMDM_PRESET=cpu python tools/run_notebook.py ...`` gives the CPU-preset outputs. Widget state
is dropped so committed notebooks stay small; the static fallback figure carries the picture.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def strip_widget_state(nb) -> None:
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            data.pop("application/vnd.jupyter.widget-view+json", None)
            data.pop("application/vnd.jupyter.widget-state+json", None)


def run(path: Path, timeout: int = 3600) -> None:
    nb = nbformat.read(path, as_version=4)
    start = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    strip_widget_state(nb)
    nbformat.write(nb, path)
    size_kb = path.stat().st_size / 1024
    print(f"{path}: executed in {time.time() - start:.0f} s, {size_kb:.0f} KB")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for arg in sys.argv[1:]:
        run(Path(arg))
