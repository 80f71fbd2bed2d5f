"""One acquisition: what ``memdump [options] > image`` does, as one call.

``acquire(DumpOptions(...))`` checks the settings, chooses and opens the source before the first
byte is written, plans the regions (``-s``, RAM the source cannot serve), walks them into the
format's writer, and accounts for everything: the ``-m`` map as regions close, the manifest and
the digest sidecars at the end -- or, when the output fails or the dump is interrupted, a
manifest that says the image is incomplete and where it stops (and no sidecars: a digest of a
broken stream proves nothing). The manifest is valid JSON at every instant: written when the
dump starts, replaced atomically at checkpoints (between regions and every few seconds) and at
the end, so after SIGKILL or a power loss it still says "incomplete". SIGTERM, SIGHUP and
SIGINT end the dump through the same failure accounting (``memdump.interrupts``). Every
failure a user can cause is a MemdumpError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

from memdump import manifest as records
from memdump import progress
from memdump.errors import MemdumpError, OutputError, Terminated, UsageError
from memdump.facts import NO_FACTS
from memdump.formats import format_class
from memdump.formats.base import FormatWriter, Placed, back_to_back, plan_regions
from memdump.host import Host
from memdump.interrupts import SignalGuard
from memdump.iomem import Range
from memdump.maps import MapFile
from memdump.remarks import Remark, no_remark
from memdump.sink import Sink, open_output
from memdump.sources import open_source
from memdump.sources.base import DevMemory, Hole
from memdump.walk import DEFAULT_READ_SIZE, RegionWalk, ScanWalk, WalkResult

GIB = 1 << 30


@dataclass(frozen=True)
class DumpOptions:
    """A dump's settings: the original's flags and memdump's own, as one value.

    Sizes are bytes (0 keeps the default: ``buffer_size`` and ``page_size`` the system page size,
    ``dump_size`` all of memory). ``output`` None writes to ``acquire``'s ``stdout`` descriptor;
    ``map_path`` "-" writes the map to stderr; ``load_module`` "" loads the installed (or built)
    module for this dump, a path loads that one, None loads nothing.
    """

    source: str = "auto"
    format: str = "raw"
    output: Optional[str] = None
    map_path: Optional[str] = None
    manifest: Optional[str] = None
    hashes: Tuple[str, ...] = ()
    dump_size: int = 0
    buffer_size: int = 0
    page_size: int = 0
    kernel: bool = False
    scan: bool = False
    root: Optional[str] = None
    verbose: int = 0
    no_progress: bool = False
    load_module: Optional[str] = None

    def flags(self) -> Dict[str, object]:
        """The settings as the command line spells them (the manifest's ``flags``)."""
        return {"-b": self.buffer_size, "-k": self.kernel, "-m": self.map_path, "-p": self.page_size,
                "-s": self.dump_size, "-v": self.verbose, "--source": self.source,
                "--scan": self.scan, "--root": self.root, "-o": self.output,
                "--format": self.format, "--manifest": self.manifest, "--hash": tuple(self.hashes),
                "--no-progress": self.no_progress, "--load-module": self.load_module}


@dataclass
class DumpResult:
    """What a finished dump wrote: the source and format, the output's regions and where each
    sits in it, the spans that could not be read (raw: left out; structured: zero-filled), RAM
    the source cannot serve at all, the bytes written, why the walk stopped, and the digests."""

    source: str
    format: str
    regions: List[Placed] = field(default_factory=list)
    holes: List[Hole] = field(default_factory=list)
    unserved: List[Hole] = field(default_factory=list)
    bytes_written: int = 0
    stopped: str = ""
    digests: Dict[str, str] = field(default_factory=dict)
    manifest: Optional[str] = None


def acquire(options: DumpOptions, *, remark: Remark = no_remark, stdout: int = 1) -> DumpResult:
    """Dump memory as ``options`` say. ``remark(level, text)`` hears what the dump does
    (level 0: warnings; 1 and 2: ``-v`` and ``-vv``).

    While it runs (called from the main thread), SIGTERM, SIGHUP and SIGINT raise Terminated
    (exit status 128 + the signal) after the manifest records where the dump stopped; the
    handlers that were there before are put back when it returns."""
    with SignalGuard() as guard:
        if options.load_module is None:
            return _acquire(options, remark, stdout, guard)
        from memdump.module.kernel import module_loaded  # only a dump that loads the module needs it

        with module_loaded(Host.at(options.root), options.load_module, remark):
            return _acquire(options, remark, stdout, guard)


def _outputs(options: DumpOptions) -> List[Tuple[str, str]]:
    """(option, path) for every file this dump creates."""
    named = [("-o", options.output), ("-m", None if options.map_path == "-" else options.map_path),
             ("--manifest", options.manifest)]
    if options.output:
        named += [(f"--hash {algorithm}: digest file", f"{options.output}.{algorithm}")
                  for algorithm in records.hash_names(options.hashes, False)]
    return [(what, path) for what, path in named if path]


def _check_outputs(options: DumpOptions) -> None:
    """No output may name another one, nor an existing file: refused before anything is created
    (each is still created O_EXCL, so a file appearing meanwhile is not overwritten either)."""
    seen: Dict[str, Tuple[str, str]] = {}
    for what, path in _outputs(options):
        parent, base = os.path.split(os.path.abspath(path))
        key = os.path.join(os.path.realpath(parent), base)
        if key in seen:
            other, other_path = seen[key]
            raise UsageError(f"{what} {path}: the same file as {other} {other_path} (every output "
                             "needs its own file)")
        seen[key] = (what, path)
    for what, path in _outputs(options):
        if os.path.lexists(path):
            raise UsageError(f"{what} {path}: file exists (memdump never overwrites it)")


def _check(options: DumpOptions, host: Host) -> Tuple[int, int, bool]:
    """(page size, read size, whether -b was given), or UsageError."""
    page_size = options.page_size or host.page_size()
    explicit_read_size = options.buffer_size != 0
    buffer_size = options.buffer_size or page_size
    if buffer_size > GIB:
        raise UsageError(f"-b {buffer_size}: read size above 1 GiB")
    if page_size > GIB:
        raise UsageError(f"-p {page_size}: page size above 1 GiB")
    if options.page_size and (page_size < 512 or page_size & (page_size - 1)):
        raise UsageError(f"-p {page_size}: the page size must be a power of two of at least 512")
    structured = format_class(options.format).structured
    if structured and options.scan:
        raise UsageError(f"--format {options.format}: --scan writes the original raw stream only")
    if structured and options.kernel:
        raise UsageError(f"--format {options.format} records physical addresses; -k works with --format raw")
    return page_size, buffer_size, explicit_read_size


def _acquire(options: DumpOptions, remark: Remark, stdout: int, guard: SignalGuard) -> DumpResult:
    host = Host.at(options.root)
    page_size, buffer_size, explicit_read_size = _check(options, host)
    digests = records.hash_names(options.hashes, options.manifest is not None)
    _check_outputs(options)

    # Everything that can be refused is refused before the first byte is written.
    manifest = None
    if options.manifest:
        manifest = records.Manifest(format=options.format, output=options.output,
                                    flags=options.flags(), map_path=options.map_path)
    files = records.Records(options.manifest, options.output, records.hash_names(options.hashes, False),
                            initial=manifest.render() if manifest else b"")
    try:
        out_fd = open_output(options.output) if options.output else stdout
        try:
            sink = Sink(out_fd, hashes=digests, name=options.output or "stdout")
        except OSError as exc:
            raise UsageError(f"cannot write the image: {exc.strerror} (is stdout closed?)") from None
        if sink.is_terminal:
            raise UsageError("refusing to write a memory image to a terminal; redirect stdout or use -o PATH")
        guard.sink = sink
        source = open_source(options.source, host, options.kernel, warn=lambda text: remark(1, text))
    except BaseException:
        files.discard()
        raise
    started = False
    try:
        for value, what in ((buffer_size, "-b"), (page_size, "-p")):
            if value % source.granularity:
                raise UsageError(f"{what} {value}: {source.name} needs multiples of {source.granularity} bytes")
        map_file = MapFile(options.map_path)
        remark(1, f"source {source.name}")
        remark(1, f"dump size {options.dump_size:#x}")
        remark(1, f"page size {page_size:#x}")
        remark(1, f"buffer size {buffer_size:#x}")
        plan = _Plan.make(options, source, sink, map_file, page_size, buffer_size,
                          explicit_read_size, remark)
        if manifest is not None:
            manifest.describe_source(source, page_size)
            manifest.set_planned(plan.planned)
            manifest.set_unserved(plan.unserved)
            if plan.elf_record is not None:
                manifest.set(elf=plan.elf_record)
            files.write_manifest(manifest)  # the record of a dump that has started
        show = progress.wanted(options.no_progress) and options.map_path != "-"
        started = True
        result = _Run(plan, sink, files, manifest, show, remark, guard).run()
        map_file.close()
        remark(1, f"wrote {result.bytes_written:#x} bytes in {len(result.regions)} regions, "
                  f"{len(result.holes)} {'zero-filled spans' if plan.structured else 'holes'}; "
                  f"stopped: {result.stopped}")
        return DumpResult(source.name, options.format, plan.output_regions(result), result.holes,
                          plan.unserved, result.bytes_written, result.stopped, sink.digests(),
                          options.manifest)
    except BaseException:
        if not started:
            files.discard()
        raise
    finally:
        source.close()
        if options.output:
            os.close(out_fd)


@dataclass
class _Plan:
    """The walk chosen before the first byte: the scan, or the region walk into a writer."""

    walk: Union[RegionWalk, ScanWalk]
    writer: Optional[FormatWriter]     # None for the scan, which writes the raw stream itself
    progress_total: int
    unserved: List[Hole]
    limited: bool                      # -s leaves memory out
    planned: List[Range]               # the memory the walk means to cover
    elf_record: Optional[dict] = None

    @property
    def structured(self) -> bool:
        return self.writer is not None and self.writer.structured

    def output_regions(self, result: Optional[WalkResult]) -> List[Placed]:
        if self.writer is not None:
            return self.writer.output_regions()
        return back_to_back(result.regions if result else [])

    @classmethod
    def make(cls, options: DumpOptions, source: DevMemory, sink: Sink, map_file: MapFile,
             page_size: int, buffer_size: int, explicit_read_size: bool, remark: Remark) -> "_Plan":
        dump_size = options.dump_size
        limited = bool(dump_size) and sum(r.size for r in source.ranges()) > dump_size
        if options.scan:
            walk = ScanWalk(source, sink, page_size=page_size, read_size=buffer_size,
                            exact_reads=explicit_read_size, limit=dump_size, on_region=map_file,
                            remark=remark)
            return cls(walk, None, dump_size or source.scan_end(), [], limited,
                       [Range(0, source.scan_end())])
        ranges = source.ranges()
        if not ranges:
            raise UsageError(f"{source.name} publishes no map of what to read here; use --scan")
        read_size = buffer_size if explicit_read_size else max(DEFAULT_READ_SIZE, page_size)
        planned = plan_regions(ranges, dump_size)
        fmt = format_class(options.format)
        facts, elf_record = NO_FACTS, None
        if options.format == "elf":  # its headers carry the machine's facts: find them first
            facts = source.machine_facts(remark)
            if facts.vmcoreinfo is None:
                remark(1, "no VMCOREINFO: the ELF core's note segment is empty")
            elf_record = facts.record()
        # raw keeps the original's -s: a cap on the bytes written, holes not counted; structured
        # formats describe whole regions in their headers, so the cap is planned into them
        writer = fmt(sink, planned if fmt.structured else ranges, facts, map_file)
        walk = RegionWalk(source, writer, page_size=page_size, read_size=read_size,
                          budget=0 if fmt.structured else dump_size, remark=remark)
        total = writer.total_size() if fmt.structured else sum(r.size for r in planned)
        # with -s, only what lies below where the dump stops concerns this image
        unserved = [h for h in source.unserved() if not dump_size or h.start < planned[-1].end]
        for hole in unserved:
            remark(1, f"{hole.start:#x}-{hole.end:#x}: {hole.reason}")
        return cls(walk, writer, total, unserved, limited, list(writer.regions), elf_record)


def failure_text(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, MemdumpError) else f"{type(exc).__name__}: {text}"


class _Run:
    """Runs the planned walk with its records: progress and checkpoints while it runs, then the
    manifest and the sidecars, or the record of a failure."""

    def __init__(self, plan: _Plan, sink: Sink, files: records.Records,
                 manifest: Optional[records.Manifest], show_progress: bool, remark: Remark,
                 guard: Optional[SignalGuard] = None):
        self.plan, self.sink, self.files, self.manifest = plan, sink, files, manifest
        self.show_progress = show_progress
        self.remark = remark
        self.guard = guard or SignalGuard()
        self.checkpoint_failed = False
        if manifest is not None:
            plan.walk.checkpoint = self.checkpoint

    def _account(self, result: Optional[WalkResult]) -> None:
        if self.manifest is None:
            return
        self.manifest.set_regions(self.plan.output_regions(result))
        self.manifest.set_unread(result.holes if result else [], zero_filled=self.plan.structured)

    def _address(self) -> Optional[int]:
        """The memory address the output has reached."""
        if self.plan.writer is not None:
            return self.plan.writer.position()
        return self.plan.walk.position()

    def checkpoint(self) -> None:
        """The manifest as the dump stands, replacing the last one in one step (never cut in two
        by a signal). A manifest that cannot be rewritten is a warning: the last one stays."""
        if self.manifest is None:
            return
        with self.guard.deferred():
            self._account(self.plan.walk.result)
            self.manifest.progress(bytes_written=self.sink.written, address=self._address())
            try:
                self.files.write_manifest(self.manifest)
            except MemdumpError as exc:
                if not self.checkpoint_failed:
                    self.remark(0, f"manifest checkpoint not written: {exc}")
                self.checkpoint_failed = True

    def run(self) -> WalkResult:
        plan, sink = self.plan, self.sink
        ticker = progress.Progress(plan.progress_total, lambda: sink.written) if self.show_progress else None
        try:
            if ticker:
                ticker.start()
            try:
                result = plan.walk.run()
                sink.close()
            finally:
                if ticker:
                    ticker.stop()
            self.guard.hold()  # the image is out: a signal now waits for its records
        except BaseException as exc:
            self.guard.hold()
            self._failed(exc)
            raise
        if plan.structured and plan.limited:
            result.stopped = "size limit (-s)"
        digests = sink.digests()
        if self.manifest is not None:
            self._account(result)
            self.manifest.finish(bytes_written=sink.written, digests=digests, stopped=result.stopped,
                                 address=self._address())
            self.files.write_manifest(self.manifest)
        sidecars = self.files.sidecars()
        self.files.write_sidecars(digests)
        if digests and self.manifest is None and not sidecars:
            for algorithm, digest in digests.items():
                self.remark(0, f"{algorithm} {digest} ({sink.name})")
        return result

    def _failed(self, exc: BaseException) -> None:
        written = self.sink.offset()
        address = self._address()
        if isinstance(exc, Terminated):
            exc.where = f" at output offset {written}" + (f" (address {address:#x})" if address is not None else "")
        elif isinstance(exc, OutputError) and address is not None:
            exc.where = f" (address {address:#x})"
        self.files.discard(keep_manifest=True)
        if self.manifest is None:
            return
        self._account(self.plan.walk.result)
        stopped = ("output failed" if isinstance(exc, OutputError)
                   else "interrupted" if isinstance(exc, (KeyboardInterrupt, Terminated)) else "error")
        self.manifest.finish(bytes_written=written, digests={}, stopped=stopped,
                             error=failure_text(exc), address=address)
        try:
            self.files.write_manifest(self.manifest)
        except MemdumpError as second:
            self.remark(0, f"manifest not written: {second}")
