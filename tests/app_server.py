"""Start ``rsfiqa serve`` on a free loopback port in a subprocess for a test module, and stop it reliably.

Also the browser set-up shared by the web app's tests: Debian's Chromium driven by Playwright (Playwright
cannot download its own browser here), launched with the flags a closed network needs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("RSFIQA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    port: int
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def serve(workdir: Path, *extra: str, timeout: float = 300.0) -> Iterator[Server]:
    """``rsfiqa serve --port FREE *extra`` (the real command line), yielding once the page answers."""
    port = free_port()
    log = workdir / "server.log"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(workdir / "gradio-cache"),
        "PYTHONUNBUFFERED": "1",
    }
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "modeling_rsfiqa.cli", "serve", "--port", str(port), *extra],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the teardown ends all of it
        )
    server = Server(process, f"http://127.0.0.1:{port}/", port, log)
    try:
        deadline = time.monotonic() + timeout
        while not _answers(server.url):
            if not server.alive():
                pytest.fail(f"rsfiqa serve exited with {process.returncode}:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"rsfiqa serve did not answer within {timeout:.0f} s:\n{server.log_tail()}")
            time.sleep(0.5)
        yield server
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses (hex, as in /proc/net/tcp*) with a socket listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                address, hex_port = fields[1].rsplit(":", 1)
                if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                    found.add(address)
    return found


def chromium_or_skip() -> str:
    """The Chromium binary, or a visible skip saying how to get it (never a silent pass)."""
    pytest.importorskip("playwright.sync_api", reason="the Python package 'playwright' is not installed")
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        pytest.skip(
            f"BROWSER TESTS SKIPPED: Chromium not found at {CHROMIUM} or on PATH "
            "(install Debian's package: apt-get install -y chromium; .ci/run does this when it can)"
        )
    return path
