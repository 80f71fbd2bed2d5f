"""The fast paths give the same bytes as the slow ones: zero-copy into a pipe and into a file, the
read loop, hashing on a thread or inline, an explicit read size, the page-aligned buffer.

Correctness only: nothing here is timed (bench/run measures speed).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import random
import subprocess
import sys
import threading

import pytest

from conftest import REPO, expected_ram_walk, raw_walk, run_subprocess
from emulator.device import EmulatedMemory, Faults
from emulator.machine import Machine, random_bytes
from memdump.host import Host
from memdump.sink import PIPE_SIZE, Sink
from memdump.sources.devmem import DevMem
from memdump.walk import DEFAULT_READ_SIZE, Reader, ScanWalk

F_GETPIPE_SZ = 1032
PAGE = 4096


@pytest.fixture(scope="module")
def speed_root(tmp_path_factory):
    """A fake root whose dev/mem is a regular file: the zero-copy source."""
    from emulator.rootfs import write_root

    machine = Machine(seed=21, ram_size=24 << 20)
    path = str(tmp_path_factory.mktemp("speed"))
    truth = write_root(machine, path, kcore=False)
    return path, machine, truth


class PipeReader:
    """Drains the read end of a pipe on a thread, so a walk can write the other end."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        while True:
            block = os.read(self.read_fd, 1 << 20)
            if not block:
                break
            self.chunks.append(block)

    def finish(self) -> bytes:
        os.close(self.write_fd)
        self.thread.join()
        os.close(self.read_fd)
        return b"".join(self.chunks)


class CountingSink(Sink):
    """A Sink that counts how its bytes travelled."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sent_calls = 0
        self.write_calls = 0

    def sendfile(self, src_fd, offset, count):
        moved = super().sendfile(src_fd, offset, count)
        if moved:
            self.sent_calls += 1
        return moved

    def write(self, data):
        self.write_calls += 1
        super().write(data)


class RecordingSource(EmulatedMemory):
    """The emulator, remembering the size of every read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sizes: list[int] = []

    def readinto(self, address, view):
        self.sizes.append(len(view))
        return super().readinto(address, view)


def devmem(root: str) -> DevMem:
    return DevMem(Host.at(root))


def walk_into(sink: Sink, source, **options):
    regions = []
    result = raw_walk(source, sink, page_size=PAGE, on_region=lambda s, e: regions.append((s, e)),
                      **options)
    return result, regions


# -- the raw walk's transports ------------------------------------------------------------------


def test_zero_copy_into_a_pipe_gives_the_truth(speed_root):
    root, machine, truth = speed_root
    pipe = PipeReader()
    sink = CountingSink(pipe.write_fd)
    with devmem(root) as source:
        result, regions = walk_into(sink, source)
    data = pipe.finish()
    want, want_regions = expected_ram_walk(machine)
    assert data == want and regions == want_regions
    assert hashlib.sha256(data).hexdigest() == truth["sha256_ram"]
    assert sink.sent_calls > 0 and sink.write_calls == 0, "a regular file into a pipe must splice"
    assert result.bytes_written == sink.written == len(want)


def test_read_loop_into_a_pipe_gives_the_truth(speed_root):
    """What a real /dev/mem gets (its driver cannot splice): reads into the aligned buffer."""
    root, machine, _ = speed_root
    pipe = PipeReader()
    sink = CountingSink(pipe.write_fd)
    with devmem(root) as source:
        source.disable_zero_copy()
        _, regions = walk_into(sink, source)
    data = pipe.finish()
    want, want_regions = expected_ram_walk(machine)
    assert data == want and regions == want_regions
    assert sink.sent_calls == 0 and sink.write_calls > 0


def test_zero_copy_into_a_file_gives_the_truth(speed_root, tmp_path):
    root, machine, _ = speed_root
    path = tmp_path / "image"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        sink = CountingSink(fd)
        with devmem(root) as source:
            _, regions = walk_into(sink, source)
        sink.close()
    finally:
        os.close(fd)
    want, want_regions = expected_ram_walk(machine)
    assert path.read_bytes() == want and regions == want_regions
    assert sink.sent_calls > 0


def test_a_source_that_refuses_splice_falls_back_to_reads(speed_root):
    """sendfile failing with EINVAL (a character device without splice) switches to the read loop
    for good, without losing or repeating a byte."""
    root, machine, _ = speed_root
    pipe = PipeReader()
    sink = CountingSink(pipe.write_fd)
    refusals = []

    def refuse(src_fd, offset, count):  # what Sink.sendfile does on EINVAL
        refusals.append(offset)
        sink.zero_copy = False
        return None

    sink.sendfile = refuse
    with devmem(root) as source:
        walk_into(sink, source)
    data = pipe.finish()
    assert data == expected_ram_walk(machine)[0]
    assert len(refusals) == 1


@pytest.mark.parametrize("limit", [1, PAGE + 1, 3 << 20, 1 << 40])
def test_size_limit_on_the_zero_copy_path(speed_root, limit):
    root, machine, _ = speed_root
    pipe = PipeReader()
    with devmem(root) as source:
        result, regions = walk_into(Sink(pipe.write_fd), source, limit=limit)
    want, want_regions = expected_ram_walk(machine, limit=limit)
    assert pipe.finish() == want and regions == want_regions


# -- hashing on a thread or inline --------------------------------------------------------------


def _pieces(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    sizes = [0, 1, 31, 4095, 4096, 1 << 20, (1 << 20) - 1, (1 << 20) + 1, 3 << 20, 5000, 2, 7 << 19]
    rng.shuffle(sizes)
    return [random_bytes(rng, size) for size in sizes]


@pytest.mark.parametrize("threaded", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_hashing_paths_agree_with_hashlib(threaded, seed):
    pieces = _pieces(seed)
    pipe = PipeReader()
    sink = Sink(pipe.write_fd, hashes=("sha256", "md5"), hash_thread=threaded)
    assert sink.threaded_hashing is threaded
    for index, piece in enumerate(pieces):
        sink.write(piece)
        if index % 4 == 0:
            sink.write_zeros(70001)
    digests = sink.digests()
    sink.close()
    data = pipe.finish()
    expected = b"".join(p + (bytes(70001) if i % 4 == 0 else b"") for i, p in enumerate(pieces))
    assert data == expected
    assert digests == {"sha256": hashlib.sha256(expected).hexdigest(), "md5": hashlib.md5(expected).hexdigest()}
    assert sink.written == len(expected)


@pytest.mark.parametrize("threaded", [True, False])
def test_skipped_zeros_are_hashed_in_order_and_the_file_stays_sparse(tmp_path, threaded):
    """A padded image's holes: seeks in the file, zeros in the digest, in stream order, also
    for runs longer than one step of the shared zero mapping."""
    import memdump.sink as sink_module

    path = tmp_path / "padded.img"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    sink = Sink(fd, hashes=("sha256",), hash_thread=threaded)
    rng = random.Random(5)
    plan = [("data", 5000), ("skip", sink_module.ZERO_STEP * 2 + 12345), ("data", 1 << 20),
            ("zeros", 3 * sink_module.ZERO_STEP + 1), ("data", 17), ("skip", 4096)]
    expected = hashlib.sha256()
    for kind, size in plan:
        if kind == "data":
            piece = random_bytes(rng, size)
            sink.write(piece)
            expected.update(piece)
        else:
            (sink.skip if kind == "skip" else sink.write_zeros)(size)
            expected.update(bytes(size))
    sink.end_sparse()
    digests = sink.digests()
    sink.close()
    os.close(fd)
    total = sum(size for _, size in plan)
    assert os.path.getsize(path) == sink.written == total
    assert digests["sha256"] == expected.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()
    # the skipped runs hold no blocks (the written zeros do)
    assert os.stat(path).st_blocks * 512 < total - 2 * sink_module.ZERO_STEP


def test_hash_thread_copies_so_the_caller_may_reuse_its_buffer():
    """The reader's buffer is overwritten by the next read as soon as write() returns."""
    import mmap

    buffer = mmap.mmap(-1, 1 << 20)
    view = memoryview(buffer)
    pipe = PipeReader()
    sink = Sink(pipe.write_fd, hashes=("sha256",), hash_thread=True)
    expected = hashlib.sha256()
    for n in range(9):
        buffer[:] = bytes([n]) * len(buffer)
        size = len(buffer) - n * 1000
        sink.write(view[:size])
        expected.update(view[:size])
    assert sink.digests()["sha256"] == expected.hexdigest()
    sink.close()
    pipe.finish()


def test_digests_after_close_and_twice():
    pipe = PipeReader()
    sink = Sink(pipe.write_fd, hashes=("sha256",), hash_thread=True)
    sink.write(b"x" * 3_000_000)
    sink.close()
    first = sink.digests()
    assert first == sink.digests() == {"sha256": hashlib.sha256(b"x" * 3_000_000).hexdigest()}
    pipe.finish()


def test_hashing_turns_zero_copy_off(speed_root):
    root, _, truth = speed_root
    pipe = PipeReader()
    sink = CountingSink(pipe.write_fd, hashes=("sha256",), hash_thread=True)
    assert not sink.zero_copy
    with devmem(root) as source:
        walk_into(sink, source)
    digest = sink.digests()["sha256"]
    data = pipe.finish()
    assert digest == truth["sha256_ram"] == hashlib.sha256(data).hexdigest()
    assert sink.sent_calls == 0


def test_threaded_hashing_is_the_default_only_with_two_cpus(monkeypatch):
    import memdump.sink as sink_module

    r, w = os.pipe()
    try:
        for cpus, expected in ((1, False), (2, True)):
            monkeypatch.setattr(sink_module, "usable_cpus", lambda cpus=cpus: cpus)
            sink = Sink(w, hashes=("sha256",))
            assert sink.threaded_hashing is expected
            sink.close()
        assert not Sink(w).threaded_hashing  # nothing to hash, no thread
    finally:
        os.close(r)
        os.close(w)


# -- read sizes, the buffer, the pipe -----------------------------------------------------------


@pytest.mark.parametrize("read_size", [PAGE, 64 << 10, 3 << 12, DEFAULT_READ_SIZE])
def test_the_read_size_is_honoured(read_size, tmp_path):
    machine = Machine(seed=5, ram_size=6 << 20)
    source = RecordingSource(machine=machine)
    fd = os.open(tmp_path / "image", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        raw_walk(source, Sink(fd), page_size=PAGE, read_size=read_size)
    finally:
        os.close(fd)
    assert max(source.sizes) == read_size
    assert (tmp_path / "image").read_bytes() == expected_ram_walk(machine)[0]


def test_explicit_read_size_is_the_sendfile_chunk(speed_root):
    root, machine, _ = speed_root
    chunks = []
    pipe = PipeReader()
    sink = Sink(pipe.write_fd)
    real = sink.sendfile
    sink.sendfile = lambda fd, offset, count: (chunks.append(count), real(fd, offset, count))[1]
    with devmem(root) as source:
        walk_into(sink, source, read_size=64 << 10)
    assert pipe.finish() == expected_ram_walk(machine)[0]
    assert max(chunks) == 64 << 10


@pytest.mark.parametrize("read_size", [PAGE, 3 << 12, 5000])
def test_small_reads_are_made_one_by_one_but_written_together(read_size, tmp_path):
    """An explicit small -b: every read is that size (the device sees what was asked for), the
    output goes out a buffer at a time, and the bytes are the same, faults included."""
    machine = Machine(seed=4, ram_size=6 << 20)
    bad = frozenset({machine.ram[1].start + 9 * PAGE, machine.ram[2].start + 100 * PAGE})
    source = RecordingSource(machine=machine, faults=Faults(eio_pages=bad, short_every=7, eintr_every=11))
    fd = os.open(tmp_path / "image", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        sink = CountingSink(fd)
        result = raw_walk(source, sink, page_size=PAGE, read_size=read_size)
    finally:
        os.close(fd)
    want, _ = expected_ram_walk(machine, bad_pages=bad)
    assert (tmp_path / "image").read_bytes() == want
    assert {h.start - h.start % PAGE for h in result.holes} == bad
    assert max(source.sizes) == read_size
    assert sink.write_calls < len(source.sizes) // 20


@pytest.mark.parametrize("read_size", [PAGE, 3 << 12])
def test_scan_with_small_reads_writes_in_batches(speed_root, read_size):
    root, machine, _ = speed_root
    pipe = PipeReader()
    sink = CountingSink(pipe.write_fd)
    with devmem(root) as source:
        sizes = []
        real = source.readinto
        source.readinto = lambda address, view: (sizes.append(len(view)), real(address, view))[1]
        regions = []
        result = ScanWalk(source, sink, page_size=PAGE, read_size=read_size, exact_reads=True,
                          on_region=lambda s, e: regions.append((s, e))).run()
    data = pipe.finish()
    with open(os.path.join(root, "dev", "mem"), "rb") as handle:
        assert data == handle.read()
    assert regions == [(0, machine.address_space_end)]
    assert set(sizes[:-1]) == {read_size}
    assert sink.write_calls <= machine.address_space_end // (1 << 20) + 2
    assert result.bytes_written == machine.address_space_end


def test_read_buffer_is_page_aligned():
    """Kernel copies into a buffer 16 bytes into a page run several times slower."""
    reader = Reader(EmulatedMemory(machine=Machine(seed=1, ram_size=4 << 20)), PAGE, DEFAULT_READ_SIZE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(reader.buffer))
    assert address % PAGE == 0


def test_pipe_buffer_is_raised():
    try:
        limit = int(open("/proc/sys/fs/pipe-max-size").read())
    except OSError:
        pytest.skip("no /proc/sys/fs/pipe-max-size")
    if limit < PIPE_SIZE:
        pytest.skip(f"pipe-max-size is {limit}")
    import fcntl

    r, w = os.pipe()
    try:
        Sink(w)
        assert fcntl.fcntl(w, F_GETPIPE_SZ) == PIPE_SIZE
    finally:
        os.close(r)
        os.close(w)


def test_scan_read_path_gives_the_device_bytes(speed_root):
    """--scan: the original's walk over the whole address space, through the read loop."""
    root, machine, _ = speed_root
    pipe = PipeReader()
    with devmem(root) as source:
        result = ScanWalk(source, Sink(pipe.write_fd), page_size=PAGE, read_size=PAGE, exact_reads=False).run()
    data = pipe.finish()
    with open(os.path.join(root, "dev", "mem"), "rb") as handle:
        assert data == handle.read()
    assert result.bytes_written == machine.address_space_end


def test_large_reads_fall_back_to_pages_only_where_they_fail(tmp_path):
    machine = Machine(seed=9, ram_size=6 << 20)
    r = machine.ram[1]
    bad = frozenset({r.start + 5 * PAGE, r.start + 6 * PAGE, r.start + 300 * PAGE})
    source = RecordingSource(machine=machine, faults=Faults(eio_pages=bad))
    fd = os.open(tmp_path / "image", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        result = raw_walk(source, Sink(fd), page_size=PAGE, read_size=DEFAULT_READ_SIZE)
    finally:
        os.close(fd)
    assert (tmp_path / "image").read_bytes() == expected_ram_walk(machine, bad_pages=bad)[0]
    assert {h.start for h in result.holes} == bad
    # only the two windows that start at a bad page are re-read page by page
    page_reads = sum(1 for size in source.sizes if size == PAGE)
    assert page_reads <= 2 * (DEFAULT_READ_SIZE // PAGE) + len(machine.ram)
    assert len(source.sizes) - page_reads < machine.ram_bytes // DEFAULT_READ_SIZE + 4 * len(machine.ram) + 8


# -- the command line, end to end ---------------------------------------------------------------


def test_cli_into_a_pipe_and_into_a_file(speed_root, tmp_path):
    root, _, truth = speed_root
    piped = run_subprocess("--root", root)
    assert piped.returncode == 0, piped.stderr
    assert hashlib.sha256(piped.stdout).hexdigest() == truth["sha256_ram"]
    image = tmp_path / "image"
    filed = run_subprocess("--root", root, "-o", str(image))
    assert filed.returncode == 0, filed.stderr
    assert hashlib.sha256(image.read_bytes()).hexdigest() == truth["sha256_ram"]


def test_cli_hash_on_the_fly(speed_root):
    root, _, truth = speed_root
    run = run_subprocess("--root", root, "--hash", "sha256")
    assert run.returncode == 0, run.stderr
    assert hashlib.sha256(run.stdout).hexdigest() == truth["sha256_ram"]
    assert truth["sha256_ram"] in run.stderr.decode()


def test_dump_path_modules_import_no_hashing_machinery():
    """Start-up is paid on every run: hashlib and threading load only when hashing is asked for."""
    code = ("import sys, memdump.sink, memdump.walk; "
            "print(' '.join(m for m in ('hashlib', '_hashlib', 'queue') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
