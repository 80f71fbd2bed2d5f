"""Evidence under faults: what a dump leaves when it is signalled, killed, or its output fails,
and the refusals that keep an output from destroying another file or a read from blocking.

Dumps run as real ``python -m memdump`` subprocesses on emulated machines. A dump is caught
mid-way without timing assumptions: it writes into a pipe this test does not read, so it blocks
after the first region's checkpoint until the test has acted; a dump into a file runs on a large
machine and is signalled once its manifest shows a checkpoint with progress. Bytes are compared
with the emulator's truth.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

import pytest

from memdump import walk as walk_mod
from memdump.acquisition import DumpOptions, SignalGuard, acquire
from memdump.manifest import Records

from conftest import REPO, run_main, run_subprocess

ENV = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
LIMIT = 120  # seconds before a hung subprocess fails the test (a regression, never a slow machine)


@pytest.fixture(scope="module")
def small(root_factory):
    """A 16 MiB machine read through the emulator source (no device files needed)."""
    return root_factory("faults-small", seed=7, ram=16 << 20, devmem=False, kcore=False)


@pytest.fixture(scope="module")
def large(root_factory):
    return root_factory("faults-large", seed=3, ram=512 << 20, devmem=False, kcore=False)


def truth_prefix(machine, count: int) -> bytes:
    """The first ``count`` bytes of the machine's raw stream (every RAM byte in address order)."""
    parts, left = [], count
    for r in machine.ram:
        if left <= 0:
            break
        take = min(r.end - r.start, left)
        parts.append(machine.contents(r.start, r.start + take))
        left -= take
    return b"".join(parts)


def dump(root, *args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "memdump", "--root", root, "--source", "emulator",
                             "--no-progress", *args], env=ENV, **kwargs)


def read_manifest(path):
    """The manifest as it is on disk now (None before it exists); it must always parse."""
    try:
        with open(path, "rb") as handle:
            blob = handle.read()
    except FileNotFoundError:
        return None
    return json.loads(blob)


def wait_for(proc, path, condition):
    """Poll the manifest until ``condition(record)``; the dump must still be running then."""
    while True:
        record = read_manifest(path)
        if record is not None and condition(record):
            return record
        assert proc.poll() is None, f"the dump ended before the test could act: {proc.returncode}"
        time.sleep(0.002)


def blocked_pipe():
    """A pipe that holds the first region and its checkpoint (1 MiB), read only when the test says."""
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, F_SETPIPE_SZ, 1 << 20)
        progressed = True
    except OSError:
        progressed = False  # a 64 KiB pipe fills before the first checkpoint: wait for the start
    return read_end, write_end, progressed


def drain(fd) -> bytes:
    parts = []
    while True:
        piece = os.read(fd, 1 << 20)
        if not piece:
            return b"".join(parts)
        parts.append(piece)


def one_line(err: bytes) -> str:
    text = err.decode()
    assert text.count("\n") == 1 and "Traceback" not in text, text
    return text


def raw_region_bytes(record) -> int:
    return sum(r["size"] for r in record["regions"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_mid_dump_into_a_pipe(small, tmp_path, signum):
    """SIGTERM/SIGHUP/SIGINT while the dump is blocked on a full pipe: exit 128+signal, one line
    naming the signal and the offset, and a final manifest that says where the image stops --
    exactly the bytes the pipe got, the truth's first N bytes."""
    root, machine = small
    manifest = tmp_path / "m.json"
    read_end, write_end, progressed = blocked_pipe()
    proc = dump(root, "--manifest", str(manifest), "--hash", "md5", stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    wait_for(proc, manifest, (lambda r: r["bytes_written"] > 0) if progressed else (lambda r: r["source"]))
    proc.send_signal(signum)
    data = drain(read_end)
    os.close(read_end)
    err = proc.stderr.read()
    proc.wait(LIMIT)
    assert proc.returncode == 128 + signum
    name = signal.Signals(signum).name
    line = one_line(err)
    record = read_manifest(manifest)
    offset = record["stopped_at"]["output_offset"]
    assert line.startswith(f"memdump: {'interrupted' if signum == signal.SIGINT else 'terminated'} by {name} "
                           f"at output offset {offset}")
    assert record["complete"] is False and record["stopped"] == "interrupted" and name in record["error"]
    assert record["digests"] == {} and record["bytes_written"] == offset == len(data)
    assert data == truth_prefix(machine, len(data))
    assert raw_region_bytes(record) == len(data)
    assert record["stopped_at"]["address"] == record["regions"][-1]["end"]
    assert sorted(os.listdir(tmp_path)) == ["m.json"]  # no temporary left behind


def test_sigterm_mid_dump_into_a_file(large, tmp_path):
    """-o: the manifest's offset is the image file's size, the file is the truth's first N bytes,
    no digest sidecar exists (during the dump or after it), and verify refuses the image."""
    root, machine = large
    image, manifest = tmp_path / "img", tmp_path / "m.json"
    proc = dump(root, "-o", str(image), "--manifest", str(manifest), "--hash", "md5",
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(proc, manifest, lambda r: r["bytes_written"] > 0)
    assert not (tmp_path / "img.md5").exists()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=LIMIT)
    assert proc.returncode == 143
    record = read_manifest(manifest)
    size = image.stat().st_size
    assert f"terminated by SIGTERM at output offset {size} " in one_line(err)
    assert record["complete"] is False and record["stopped_at"]["output_offset"] == size == record["bytes_written"]
    assert "SIGTERM" in record["error"]
    assert not (tmp_path / "img.md5").exists()
    with open(image, "rb") as handle:
        assert handle.read() == truth_prefix(machine, size)
    code = run_subprocess("verify", str(image), "--manifest", str(manifest), timeout=LIMIT)
    assert code.returncode == 1 and b"incomplete image" in code.stderr and b"SIGTERM" in code.stderr


def test_sigkill_leaves_a_checkpoint_that_says_incomplete(small, tmp_path):
    root, machine = small
    manifest = tmp_path / "m.json"
    read_end, write_end, progressed = blocked_pipe()
    proc = dump(root, "--manifest", str(manifest), stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    seen = wait_for(proc, manifest, (lambda r: r["bytes_written"] > 0) if progressed else (lambda r: r["source"]))
    proc.kill()
    data = drain(read_end)
    os.close(read_end)
    proc.wait(LIMIT)
    record = read_manifest(manifest)
    assert record == seen  # the last checkpoint, as it was
    assert record["complete"] is False and record["finished"] is None and record["stopped"] is None
    assert record["checkpoint"] and record["source"] == "emulator" and record["planned"]
    assert record["bytes_written"] <= len(data)
    assert data == truth_prefix(machine, len(data))
    image = tmp_path / "img"
    image.write_bytes(data)
    code = run_subprocess("verify", str(image), "--manifest", str(manifest), timeout=LIMIT)
    assert code.returncode == 1 and b"did not finish" in code.stderr


def test_manifest_parses_at_every_checkpoint(small, tmp_path):
    """Read the manifest between every slow read of the pipe: it always parses; it says
    incomplete until the end, its progress only grows, and the end is complete."""
    root, machine = small
    manifest = tmp_path / "m.json"
    proc = dump(root, "--manifest", str(manifest), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    records, data = [], []
    while True:
        record = read_manifest(manifest)
        if record is not None:
            records.append(record)
        piece = proc.stdout.read(64 << 10)
        if not piece:
            break
        data.append(piece)
    proc.wait(LIMIT)
    records.append(read_manifest(manifest))
    assert proc.returncode == 0
    written = [r["bytes_written"] for r in records]
    assert written == sorted(written)
    complete = [r["complete"] for r in records]
    assert complete[0] is False and complete[-1] is True
    assert complete == sorted(complete)  # incomplete until the final record, complete from then on
    assert any(0 < r["bytes_written"] < len(b"".join(data)) for r in records)
    assert records[-1]["bytes_written"] == sum(map(len, data))


def test_checkpoints_from_the_walk_are_valid_json(small, tmp_path, monkeypatch):
    """With a zero interval every event is a checkpoint: each record written parses, says
    incomplete, and its progress grows; the last is complete."""
    root, _ = small
    monkeypatch.setattr(walk_mod, "CHECKPOINT_INTERVAL", 0.0)
    rendered = []
    original = Records.write_manifest

    def capture(self, manifest):
        rendered.append(json.loads(manifest.render()))
        original(self, manifest)

    monkeypatch.setattr(Records, "write_manifest", capture)
    out = tmp_path / "img"
    result = acquire(DumpOptions(root=root, source="emulator", output=str(out),
                                                 manifest=str(tmp_path / "m.json")))
    assert len(rendered) > 10
    assert [r["complete"] for r in rendered] == [False] * (len(rendered) - 1) + [True]
    progress = [r["bytes_written"] for r in rendered]
    assert progress == sorted(progress) and progress[-1] == result.bytes_written == out.stat().st_size
    assert rendered[-1]["address_reached"] == rendered[-1]["regions"][-1]["end"]


def test_signal_handlers_are_restored_and_ignored_signals_stay_ignored(small, tmp_path):
    root, _ = small
    mine = lambda signum, frame: None  # noqa: E731
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        signal.signal(signal.SIGTERM, mine)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        acquire(DumpOptions(root=root, source="emulator", output=str(tmp_path / "a")))
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is before[signal.SIGINT]
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    # from another thread nothing is installed (Python would refuse), and the dump still works
    done = []
    worker = threading.Thread(target=lambda: done.append(acquire(
        DumpOptions(root=root, source="emulator", output=str(tmp_path / "b")))))
    worker.start()
    worker.join()
    assert done and done[0].bytes_written == (tmp_path / "b").stat().st_size


def test_file_size_limit_is_a_full_output(small, tmp_path):
    """EFBIG (RLIMIT_FSIZE, as ENOSPC would): exit 1, one line, the manifest says output failed
    at the file's size, the file is the truth's first N bytes, no sidecar."""
    root, machine = small
    limit = (1 << 20) + 12345
    image, manifest = tmp_path / "img", tmp_path / "m.json"

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "memdump", "--root", root, "--source", "emulator",
                           "-o", str(image), "--manifest", str(manifest), "--hash", "md5"],
                          env=ENV, capture_output=True, preexec_fn=cap, timeout=LIMIT)
    assert proc.returncode == 1
    assert "File too large" in one_line(proc.stderr)
    record = read_manifest(manifest)
    assert record["complete"] is False and record["stopped"] == "output failed"
    assert record["stopped_at"]["output_offset"] == image.stat().st_size == limit
    assert image.read_bytes() == truth_prefix(machine, limit)
    assert raw_region_bytes(record) == limit
    assert sorted(os.listdir(tmp_path)) == ["img", "m.json"]


def test_closed_pipe_is_said_and_recorded(small, tmp_path):
    root, _ = small
    manifest = tmp_path / "m.json"
    read_end, write_end = os.pipe()
    proc = dump(root, "--manifest", str(manifest), stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    os.read(read_end, 4096)
    os.close(read_end)
    _, err = proc.communicate(timeout=LIMIT)
    assert proc.returncode == 1
    line = one_line(err)
    assert "Broken pipe" in line and "the reader of the output went away" in line
    record = read_manifest(manifest)
    assert record["complete"] is False and record["stopped"] == "output failed"
    assert "Broken pipe" in record["error"] and record["stopped_at"]["output_offset"] == record["bytes_written"]


def test_map_never_overwrites(small, tmp_path, capfdbinary):
    root, _ = small
    existing = tmp_path / "keep.img"
    existing.write_bytes(b"evidence")
    code, out, err = run_main(capfdbinary, "--root", root, "--source", "emulator", "-m", str(existing),
                              "-o", str(tmp_path / "new.img"), "--manifest", str(tmp_path / "m.json"))
    assert code == 2 and out == b""
    assert err == f"memdump: -m {existing}: file exists (memdump never overwrites it)\n"
    assert existing.read_bytes() == b"evidence"
    assert sorted(os.listdir(tmp_path)) == ["keep.img"]


def test_map_file_is_private(small, tmp_path, capfdbinary):
    root, _ = small
    code, _, _ = run_main(capfdbinary, "--root", root, "--source", "emulator", "-s", "1m",
                          "-m", str(tmp_path / "map"), "-o", str(tmp_path / "img"))
    assert code == 0 and (os.stat(tmp_path / "map").st_mode & 0o777) == 0o600


@pytest.mark.parametrize("flags", [
    ["-o", "{d}/x", "-m", "{d}/x"],
    ["-o", "{d}/x", "--manifest", "{d}/x"],
    ["-m", "{d}/x", "--manifest", "{d}/x"],
    ["-o", "{d}/x", "--hash", "md5", "--manifest", "{d}/x.md5"],
    ["-o", "{d}/x", "-m", "{d}/link/x"],
    ["-o", "{d}/x", "-m", "{d}/sub/../x"],
])
def test_two_outputs_naming_one_file_are_refused(small, tmp_path, capfdbinary, flags):
    root, _ = small
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path)
    args = [f.format(d=tmp_path) for f in flags]
    code, out, err = run_main(capfdbinary, "--root", root, "--source", "emulator", *args)
    assert code == 2 and out == b""
    assert err.count("\n") == 1 and "the same file as" in err
    assert sorted(os.listdir(tmp_path)) == ["link", "sub"]


@pytest.mark.parametrize("command", [
    ["info", "{fifo}"],
    ["info", "{file}", "--map", "{fifo}"],
    ["convert", "{fifo}", "{d}/out.lime", "--to", "lime"],
    ["verify", "{fifo}", "--manifest", "{file}"],
    ["verify", "{file}", "--manifest", "{fifo}"],
])
def test_readers_never_block_on_a_fifo(tmp_path, command):
    fifo, file = tmp_path / "fifo", tmp_path / "file"
    os.mkfifo(fifo)
    # a file that is at once an image (unknown format), a map and a manifest would be refused
    # for what it holds; here it only has to get past the FIFO
    file.write_text(json.dumps({"tool": "memdump", "format": "raw", "complete": True, "regions": [],
                                "digests": {}, "bytes_written": 0}))
    args = [c.format(fifo=fifo, file=file, d=tmp_path) for c in command]
    proc = run_subprocess(*args, timeout=LIMIT)  # a regression fails here instead of hanging
    assert proc.returncode != 0
    assert "not a regular file" in one_line(proc.stderr)
    assert not (tmp_path / "out.lime").exists()


@pytest.mark.parametrize("value, ok", [("3", False), ("256", False), ("4097", False), ("12k", False),
                                       ("512", True), ("8k", True)])
def test_page_size_must_be_a_power_of_two_of_at_least_512(small, capfdbinary, value, ok):
    root, _ = small
    code, out, err = run_main(capfdbinary, "--root", root, "--source", "emulator", "-s", "64k", "-p", value)
    if ok:
        assert code == 0 and len(out) == 64 << 10
    else:
        assert code == 2 and out == b""
        assert err.count("\n") == 1 and "power of two of at least 512" in err


def test_checkpoint_interval_is_a_module_constant():
    assert 0 < walk_mod.CHECKPOINT_INTERVAL <= 10
    assert SignalGuard is not None
