"""The unmasking lab in a real browser: JupyterLab + Debian's chromium, driven by Playwright (run by .ci/run).

    python tests/browser/lab_in_browser.py [--out DIR] [--notebook notebooks/00_welcome.ipynb]

1. copies the welcome notebook (which shows the lab with the shipped model) into a temporary directory and starts
   JupyterLab there on 127.0.0.1 with a random token;
2. opens it in headless chromium, runs all cells, types a prompt, presses Generate, checks that the frame changed,
   presses Play, checks that the frames move on;
3. builds the notebook's reveal.js slide deck with ``jupyter nbconvert --to slides``, opens it and checks that the
   title slide renders;
4. fails if the page logged a JavaScript error; saves screenshots in --out; stops JupyterLab by its own process id.

Not collected by pytest (its name does not start with ``test_``): it needs chromium, which CI installs with apt.
The whole run is bounded (``--timeout`` seconds, 180 by default).
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_chromium() -> str:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    sys.exit("no chromium found: apt-get install -y chromium (or set CHROMIUM=/path/to/chrome)")


def start_jupyterlab(root: Path, port: int, token: str, log) -> subprocess.Popen:
    env = dict(os.environ, MINIMDM_PRESET=os.environ.get("MINIMDM_PRESET", "cpu"), OMP_NUM_THREADS="1",
               JUPYTER_CONFIG_DIR=str(root / ".jupyter"), JUPYTER_RUNTIME_DIR=str(root / ".runtime"))
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--ServerApp.open_browser=False", "--allow-root", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
               "jupyterlab.NeverCheckForUpdate"]
    # its own session: stopping it by its process id also reaches the kernels it started
    return subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_server(port: int, token: str, process: subprocess.Popen, deadline: float) -> None:
    url = f"http://127.0.0.1:{port}/api/status?token={token}"
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError("JupyterLab did not answer in time")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to JupyterLab's process group (its own pid: it leads its session), then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def frame_state(page) -> tuple[str, str]:
    """(data-step, text) of the first panel's current frame."""
    frame = page.locator(".mdm-lab .mdm-frame").first  # the lab's first panel (a player elsewhere has frames too)
    return frame.get_attribute("data-step"), frame.inner_text()


def run_lab(page, base: str, notebook: str, out: Path, seconds: float) -> dict:
    timeout_ms = int(seconds * 1000)
    page.goto(f"{base}/lab/tree/{notebook}")
    page.locator(".jp-Notebook").first.wait_for(timeout=timeout_ms)
    # the kernel must be up before "Run All Cells", or the request can be lost
    page.get_by_text("Python 3 (ipykernel) | Idle").first.wait_for(timeout=timeout_ms)
    page.locator(".jp-Notebook .jp-Cell").first.click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.locator(".jp-InputPrompt", has_text="[1]:").first.wait_for(timeout=timeout_ms)  # the cells are running
    generate = page.locator("button.mdm-generate")
    generate.wait_for(timeout=timeout_ms)  # the lab cell has run and its widget rendered
    page.locator(".mdm-lab .mdm-frame").first.wait_for(timeout=timeout_ms)
    generate.scroll_into_view_if_needed()
    page.screenshot(path=str(out / "1_lab_loaded.png"))
    before = frame_state(page)
    runs_before = int(page.locator(".mdm-lab .mdm-status").inner_text().split(":")[0].split()[-1])  # "run N: generated ..."
    prompt = page.locator(".mdm-prompt textarea")
    prompt.fill("JULIET:\nO Romeo")
    generate.click()
    page.locator(".mdm-lab .mdm-status", has_text=f"run {runs_before + 1}:").wait_for(timeout=timeout_ms)
    page.locator(".mdm-lab .mdm-frame", has_text="JULIET").first.wait_for(timeout=timeout_ms)
    after_generate = frame_state(page)
    page.screenshot(path=str(out / "2_after_generate.png"))
    page.locator(".mdm-forward").click()  # one step forward
    page.locator(".mdm-lab .mdm-frame[data-step='1']").first.wait_for(timeout=timeout_ms)
    stepped = frame_state(page)
    page.locator(".mdm-play button").first.click()  # Play
    page.wait_for_function("() => { const f = document.querySelector('.mdm-lab .mdm-frame');"
                           " return f && Number(f.dataset.step) >= 3; }", polling=200, timeout=timeout_ms)
    playing = frame_state(page)
    page.screenshot(path=str(out / "3_playing.png"))
    checks = {
        "generate changed the frame": after_generate[1] != before[1],
        "the prompt is on the canvas": "JULIET" in after_generate[1],
        "the forward button moved to step 1": stepped[0] == "1" and stepped[1] != after_generate[1],
        "play moved on to step 3 or later": int(playing[0]) >= 3,
        "frames differ while playing": playing[1] != after_generate[1],
    }
    return checks


def open_slides(page, deck: Path, out: Path, seconds: float) -> dict:
    page.goto(deck.as_uri())
    page.locator("section").first.wait_for(state="attached", timeout=int(seconds * 1000))
    page.wait_for_timeout(1500)
    reveal_loaded = page.evaluate("() => typeof Reveal !== 'undefined' && Reveal.isReady && Reveal.isReady()")
    page.screenshot(path=str(out / "4_slides.png"))
    title_visible = page.get_by_role("heading", name="Welcome to minimdm").first.is_visible()
    return {"slide deck shows its title": title_visible, "slides (reveal.js loaded)": reveal_loaded}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("BROWSER_ARTIFACTS", str(Path(tempfile.gettempdir()) / "minimdm-browser")))
    parser.add_argument("--notebook", default="notebooks/00_welcome.ipynb")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds for the whole run")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    start = time.time()
    deadline = start + args.timeout
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chromium = find_chromium()
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="minimdm-lab-") as tmp:
        root = Path(tmp)
        notebook = Path(args.notebook).name
        shutil.copy(REPO / args.notebook, root / notebook)
        subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "slides", str(root / notebook),
                        "--output-dir", str(root)], check=True, capture_output=True, timeout=120)
        deck = root / (Path(notebook).stem + ".slides.html")
        port, token = free_port(), secrets.token_hex(16)
        log = open(out / "jupyterlab.log", "w")
        server = start_jupyterlab(root, port, token, log)
        print(f"JupyterLab pid {server.pid} on 127.0.0.1:{port}")
        try:
            wait_for_server(port, token, server, min(deadline, time.time() + 60))
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, headless=True,
                                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
                page.on("console", lambda message: errors.append(f"console.{message.type}: {message.text}")
                        if message.type == "error" else None)
                page.goto(f"http://127.0.0.1:{port}/lab?token={token}")  # logs in (sets the cookie)
                try:
                    checks = run_lab(page, f"http://127.0.0.1:{port}", notebook, out, max(deadline - time.time(), 10))
                except Exception:
                    page.screenshot(path=str(out / "failure.png"), full_page=True)
                    print("\n".join(errors))
                    raise
                lab_errors, lab_error_count = list(errors), len(errors)
                checks.update(open_slides(page, deck, out, max(deadline - time.time(), 10)))
                browser.close()
        finally:
            stop(server)
            log.close()
    offline = [e for e in errors if "Failed to load resource" in e]  # e.g. JupyterLab's news feed without network
    # the deck loads reveal.js from a CDN: offline, its requests fail (console errors) and it shows as one page
    slide_errors = [e for e in errors[lab_error_count:] if e not in offline and "reveal" not in e.lower()
                    and "require" not in e.lower()]
    lab_errors = [e for e in lab_errors if e not in offline]
    checks["no JavaScript error in JupyterLab"] = not lab_errors
    checks["no JavaScript error in the deck (besides an unreachable CDN)"] = not slide_errors
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    for error in errors:
        print("  ", error)
    required = {k: v for k, v in checks.items() if k != "slides (reveal.js loaded)"}
    print(f"browser test {'passed' if all(required.values()) else 'FAILED'} in {time.time() - start:.0f} s; "
          f"screenshots in {out}")
    return 0 if all(required.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
