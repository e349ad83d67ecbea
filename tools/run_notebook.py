"""Execute notebooks in place (the committed outputs of a real run) and strip widget state.

    python tools/run_notebook.py notebooks/01_masked_diffusion_basics.ipynb [more.ipynb ...]
    python tools/run_notebook.py --record bench/results/notebooks_gpu.json notebooks/07_*.ipynb

The preset follows the usual switch (MINIMDM_PRESET / MINIMDM_QUICK / the device), so
``MINIMDM_PRESET=cpu python tools/run_notebook.py ...`` gives the CPU-preset outputs. Widget state
is dropped so committed notebooks stay small; the static fallback figure carries the picture.
``--record FILE`` adds one entry per notebook (wall time, preset, device, torch, date) to a JSON file,
replacing an earlier entry for the same notebook and preset.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
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


def run(path: Path, timeout: int = 3600) -> float:
    """Execute one notebook in place; returns its wall time in seconds."""
    nb = nbformat.read(path, as_version=4)
    start = time.time()
    last = [start]

    def log_cell(cell, cell_index, execute_reply):  # one line per code cell, so a run stopped early still shows where time went
        now = time.time()
        if cell.cell_type == "code":
            print(f"{path.name} cell {cell_index}: {now - last[0]:.1f} s (total {now - start:.0f} s)", flush=True)
        last[0] = now

    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                   on_cell_executed=log_cell).execute()
    seconds = time.time() - start
    strip_widget_state(nb)
    nbformat.write(nb, path)
    print(f"{path}: executed in {seconds:.0f} s, {path.stat().st_size / 1024:.0f} KB", flush=True)
    return seconds


def record(results_file: Path, notebook: Path, seconds: float) -> None:
    import torch

    from minimdm.presets import default_device, preset_name

    device = default_device()
    entry = {"notebook": notebook.name, "preset": preset_name(), "wall_s": round(seconds, 1),
             "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
             "torch": torch.__version__, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    entries = json.loads(results_file.read_text()) if results_file.exists() else []
    entries = [e for e in entries if (e["notebook"], e["preset"]) != (entry["notebook"], entry["preset"])]
    results_file.write_text(json.dumps(sorted(entries + [entry], key=lambda e: e["notebook"]), indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--record", type=Path, default=None, help="JSON file to add each notebook's wall time to")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell (default 3600)")
    args = parser.parse_args()
    for notebook in args.notebooks:
        if not notebook.is_file():
            parser.error(f"{notebook}: no such notebook")
    for notebook in args.notebooks:
        wall = run(notebook, args.timeout)
        if args.record is not None:
            record(args.record, notebook, wall)
