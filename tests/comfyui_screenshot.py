"""Remake docs/assets/comfyui_workflow.png: the example UI workflow in ComfyUI's page, after a run, in headless Chromium
(Debian's ``chromium``; no browser is downloaded). ComfyUI comes from the test's cached install.

    python tests/comfyui_screenshot.py [OUT.png]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from comfyui_server import NODE_PACKAGE, REPO, prepared_install, running_comfyui
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
WORKFLOW = NODE_PACKAGE / "workflows" / "relax_long_video.json"
SHOT = REPO / "docs" / "assets" / "comfyui_workflow.png"
VIEWPORT = {"width": 1600, "height": 960}


def screenshot(url: str, out: Path) -> None:
    """Open the page, load the UI workflow, run it, and capture the canvas once every output is shown."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            page.wait_for_function("window.app && window.app.graph", timeout=60_000)
            page.evaluate(
                "ui => window.app.loadGraphData(ui, true, true, 'relax_long_video')", json.loads(WORKFLOW.read_text())
            )
            page.evaluate("window.app.queuePrompt(0, 1)")
            page.wait_for_function("document.querySelectorAll('video').length >= 2", timeout=120_000)
            page.evaluate("document.querySelectorAll('video').forEach(v => { v.currentTime = 2.0; })")
            page.wait_for_timeout(3000)  # the preview frames, and the videos at 2 s
            page.screenshot(path=str(out))
        finally:
            browser.close()


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else SHOT
    install = prepared_install(REPO / ".pytest_cache" / "d" / "comfyui")
    with tempfile.TemporaryDirectory() as base, running_comfyui(install, Path(base)) as server:
        screenshot(server.url, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
