"""``workbench serve``: the TUI through textual-serve starts and answers on localhost."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cli_project import TINY_TOML

pytest.importorskip("textual_serve", reason="textual-serve is not installed (pip install 'workbench[serve]')")



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_starts_and_answers_on_localhost(tmp_path: Path) -> None:
    (tmp_path / "experiments.toml").write_text(TINY_TOML)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        page = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    page = (response.status, response.read().decode())
                    break
            except OSError:
                time.sleep(0.3)
        assert page is not None, f"no answer; exit {proc.poll()}"
        status, body = page
        assert status == 200
        assert "workbench" in body and "/ws" in body  # the page opens a websocket to run the TUI
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out = proc.communicate(timeout=20)[0]
    assert f"serving the workbench TUI on http://127.0.0.1:{port}" in out
