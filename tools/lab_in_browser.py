"""Run every notebook in JupyterLab inside headless Chromium, as a user clicking "Run All" would,
and report each notebook's errors, stderr outputs and a screenshot. A developer's check, not
CI: it needs Debian's `chromium` and `chromium-driver` and `pip install selenium`.

    .venv/bin/python tools/lab_in_browser.py [--out results/lab-check] [--full]

By default the Lab server runs with DPED_SMOKE=1 (DPED-main trains 2 iterations into a temporary
folder); --full runs the notebooks' own parameters. Lab autosaves the outputs into notebooks/;
git stores them stripped (the nbstripout filter), so `make test` passes afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What a notebook looks like once Run All has finished: every code cell has run, kernel idle.
STATE = """
const panel = window.jupyterapp.shell.currentWidget;
if (!panel || !panel.content || !panel.sessionContext.session) return null;
const cells = panel.content.widgets.filter(c => c.model.type === 'code');
return {
  status: panel.sessionContext.session.kernel.status,
  ran: cells.filter(c => c.model.executionCount !== null).length,
  cells: cells.length,
  stderr: [...panel.node.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')].map(n => n.innerText),
  errors: [...panel.node.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')].map(n => n.innerText),
};
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(port: int, token: str, smoke: bool) -> subprocess.Popen:
    env = {**os.environ, **({"DPED_SMOKE": "1"} if smoke else {})}
    cmd = [
        str(ROOT / ".venv" / "bin" / "jupyter"),
        "lab",
        "--no-browser",
        f"--port={port}",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={ROOT / 'notebooks'}",
        "--LabApp.expose_app_in_browser=True",
        "--allow-root",
    ]
    lab = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return lab
        time.sleep(0.5)
    lab.terminate()
    raise RuntimeError("JupyterLab did not start within 60 s")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1800"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def run_notebook(driver, url: str, name: str, timeout: float) -> dict:
    driver.get(url)
    deadline = time.time() + timeout
    while time.time() < deadline:  # the app, this notebook in front, its kernel started
        ready = driver.execute_script(
            "const p = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            "return !!(p && p.context && p.context.path === arguments[0] && p.sessionContext"
            " && p.sessionContext.session && p.sessionContext.session.kernel"
            " && p.sessionContext.session.kernel.status === 'idle');",
            name,
        )
        if ready:
            break
        time.sleep(1)
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
    state = None
    while time.time() < deadline:
        time.sleep(2)
        state = driver.execute_script(STATE)
        if state and state["status"] == "idle" and state["ran"] == state["cells"]:
            break
    driver.execute_script("window.jupyterapp.commands.execute('docmanager:save');")
    time.sleep(2)
    return state or {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/lab-check", help="screenshots and report.json")
    parser.add_argument("--full", action="store_true", help="the notebooks' own parameters")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per notebook")
    args = parser.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    port, token = free_port(), secrets.token_hex(16)
    lab = start_lab(port, token, smoke=not args.full)
    report, failed = {}, False
    try:
        driver = browser()
        try:
            for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
                url = f"http://127.0.0.1:{port}/lab/tree/{nb.name}?token={token}"
                state = run_notebook(driver, url, nb.name, args.timeout)
                driver.save_screenshot(str(out / f"{nb.stem}.png"))
                report[nb.name] = state
                ok = state.get("ran") == state.get("cells") and not state.get("errors")
                failed |= not ok or bool(state.get("stderr"))
                print(
                    f"{nb.name}: {state.get('ran')}/{state.get('cells')} cells run, "
                    f"{len(state.get('errors', []))} errors, "
                    f"{len(state.get('stderr', []))} stderr outputs",
                    flush=True,
                )
                for text in state.get("stderr", []) + state.get("errors", []):
                    print("   ", text.strip().splitlines()[0][:160])
        finally:
            driver.quit()
    finally:
        lab.terminate()
        lab.wait(30)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
