"""Progress on stderr: on a terminal only, off with --no-progress, a few redraws a second."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import time

import pytest

from conftest import REPO
from memdump import progress


def test_render_says_bytes_rate_and_time_left():
    line = progress.render(16 << 20, 64 << 20, 2.0)
    assert line == "16.0 MiB of 64.0 MiB (25%), 8.0 MiB/s, 0:00:06 left"
    assert progress.render(64 << 20, 64 << 20, 4.0).endswith("0:00:04 elapsed")
    assert progress.render(0, 0, 0.0) == "0 B, 0 B/s"


def test_progress_thread_redraws_a_few_times_a_second_and_ends_the_line():
    stream = io.StringIO()
    done = [0]
    with progress.Progress(100 << 20, lambda: done[0], stream=stream, interval=0.05):
        for _ in range(6):
            done[0] += 10 << 20
            time.sleep(0.05)
    text = stream.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    draws = text.count("\r")
    assert 2 <= draws <= 12  # one per interval (0.3 s / 0.05 s) plus the final one
    assert "60.0 MiB of 100.0 MiB (60%)" in text.splitlines()[-1]


def test_progress_only_on_a_terminal():
    assert not progress.wanted(False, io.StringIO())
    parent, child = pty.openpty()
    try:
        with os.fdopen(os.dup(child), "w") as terminal:
            assert progress.wanted(False, terminal)
            assert not progress.wanted(True, terminal)
    finally:
        os.close(parent)
        os.close(child)


def run_on_terminal(args):
    """Run memdump with stderr on a pseudo-terminal; returns (exit code, what the terminal got)."""
    parent, child = pty.openpty()
    env = dict(os.environ, PYTHONPATH=REPO)
    process = subprocess.Popen([sys.executable, "-m", "memdump", *args], stdout=subprocess.DEVNULL,
                               stderr=child, env=env)
    os.close(child)
    chunks = []
    while True:
        try:
            piece = os.read(parent, 4096)
        except OSError:
            break
        if not piece:
            break
        chunks.append(piece)
    os.close(parent)
    return process.wait(timeout=60), b"".join(chunks).decode()


@pytest.fixture(scope="module")
def small_root(root_factory):
    return root_factory("progress", seed=3, ram=8 << 20)


def test_cli_shows_progress_on_a_terminal(small_root, tmp_path):
    root, machine = small_root
    code, seen = run_on_terminal(["--root", root, "--source", "emulator", "--format", "lime",
                                  "-o", str(tmp_path / "a.lime")])
    assert code == 0
    assert "\r" in seen and "memdump: " in seen and "MiB" in seen and "/s" in seen
    assert "100%" in seen  # the final line: every byte of the image


def test_no_progress_flag_and_non_terminals_stay_quiet(small_root, tmp_path):
    root, _ = small_root
    code, seen = run_on_terminal(["--root", root, "--source", "emulator", "--format", "padded",
                                  "--no-progress", "-o", str(tmp_path / "b.padded")])
    assert code == 0 and seen == ""
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-m", "memdump", "--root", root, "--source", "emulator",
                           "-o", str(tmp_path / "c.raw")], capture_output=True, env=env, timeout=60)
    assert done.returncode == 0 and done.stderr == b""
