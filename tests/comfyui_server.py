"""A real ComfyUI for the node package's end-to-end test: its own venv (cached), a headless server on loopback, and
the ``/prompt``, ``/history`` and ``/interrupt`` calls the test makes.

ComfyUI's source comes from ``../shared/vendor/comfyui`` (read only: it is copied beside the venv). The venv is made
by that folder's ``install.sh`` (CPU torch kept), then this repository is installed into it editable without
changing anything already there; it is rebuilt only when one of its inputs changes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENDOR = REPO.parent / "shared" / "vendor" / "comfyui"
NODE_PACKAGE = REPO / "comfyui"
READY = "ready"


@dataclass(frozen=True)
class ComfyInstall:
    python: Path
    """The venv's interpreter."""
    source: Path
    """A writable copy of ComfyUI's source tree (``main.py``)."""


def install_key() -> str:
    """Changes when the venv would come out differently: ComfyUI's install inputs, this repo's place and metadata."""
    digest = hashlib.sha256(str(REPO).encode())
    for file in (
        VENDOR / "install.sh",
        VENDOR / "ComfyUI" / "requirements.txt",
        VENDOR / "ComfyUI" / "comfyui_version.py",
        REPO / "pyproject.toml",
    ):
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def prepared_install(cache: Path) -> ComfyInstall:
    """ComfyUI with its venv under ``cache/KEY`` (about 90 s the first time, then reused); one builder at a time."""
    cache.mkdir(parents=True, exist_ok=True)
    key = install_key()
    home = cache / key
    with open(cache / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / READY).is_file():
            for stale in cache.iterdir():  # older keys (1.7 GB each) and a build cut short
                if stale.is_dir():
                    shutil.rmtree(stale)
            build(home)
            (home / READY).write_text(key)
    return ComfyInstall(python=home / "venv" / "bin" / "python", source=home / "ComfyUI")


def build(home: Path) -> None:
    venv = home / "venv"
    run(["bash", str(VENDOR / "install.sh"), str(venv)])
    python = str(venv / "bin" / "python")
    constraints = home / "constraints.txt"  # everything ComfyUI installed stays as it is (CPU torch above all)
    constraints.write_text(run([python, "-m", "pip", "freeze", "--exclude-editable"]))
    run([python, "-m", "pip", "install", "-q", "-c", str(constraints), "-e", str(REPO)])
    shutil.copytree(VENDOR / "ComfyUI", home / "ComfyUI", ignore=shutil.ignore_patterns("__pycache__"))
    for folder, _, _ in os.walk(home / "ComfyUI"):  # the vendored tree is read only; ComfyUI writes its bytecode
        os.chmod(folder, 0o755)


def run(command: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if done.returncode:
        raise RuntimeError(
            f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ComfyServer:
    """A running ComfyUI (``--cpu``, loopback) whose ``custom_nodes`` links this repository's node package."""

    def __init__(self, install: ComfyInstall, base: Path):
        self.install, self.base, self.port = install, base, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = base / "output"
        self.log = base / "comfyui.log"
        (base / "custom_nodes").mkdir(parents=True)
        (base / "custom_nodes" / "relaxforcing").symlink_to(NODE_PACKAGE, target_is_directory=True)
        settings = base / "user" / "default" / "comfy.settings.json"
        settings.parent.mkdir(parents=True)
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}))
        command = [
            str(install.python),
            "main.py",
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--disable-auto-launch",
            "--base-directory",
            str(base),
            "--database-url",
            "sqlite:///:memory:",
        ]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=install.source,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({self.process.returncode}):\n{self.log_text()[-4000:]}")
            try:
                self.get("/system_stats")
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.load(response)

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        """``(HTTP status, JSON answer)``; an error status is returned, not raised."""
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
                return response.status, json.loads(text) if text else {}
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def queue(self, graph: dict) -> str:
        """Queue an API-format graph; its prompt id (AssertionError with ComfyUI's answer when refused)."""
        status, answer = self.post("/prompt", {"prompt": graph, "client_id": "relaxforcing-test"})
        assert status == 200, f"/prompt refused the graph ({status}): {answer}"
        return answer["prompt_id"]

    def finished(self, prompt_id: str, timeout: float = 120.0) -> dict:
        """The prompt's ``/history`` entry once it has succeeded, failed or been interrupted."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and (entry["status"].get("completed") or entry["status"].get("status_str") == "error"):
                return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} still running after {timeout:.0f} s:\n{self.log_text()[-4000:]}")


@contextmanager
def running_comfyui(install: ComfyInstall, base: Path) -> Iterator[ComfyServer]:
    server = ComfyServer(install, base)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
