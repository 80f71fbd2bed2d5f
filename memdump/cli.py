"""The command line: the classic ``memdump [options] > image`` plus subcommands.

A thin layer over the library: parse and check flags, choose the source before the first byte,
run a walk, and turn every failure a user can cause into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import os
import sys

import click

from memdump import __version__
from memdump.errors import MemdumpError, OutputError, UsageError
from memdump.formats import FORMATS, ImageMeta, plan_regions, writer_for
from memdump.formats.acquire import Acquisition, StructuredWalk
from memdump.host import Host
from memdump.module_cli import module_command, run_with_module
from memdump.sink import Sink, open_output
from memdump.sizes import parse_size
from memdump.sources import NAMES, open_source, probe_all
from memdump.walk import DEFAULT_READ_SIZE, RamWalk, ScanWalk

PROG = "memdump"


def remark(text: str) -> None:
    """One line on stderr, prefixed like the original's remarks."""
    click.echo(f"{PROG}: {text}", err=True)


class SizeType(click.ParamType):
    """SIZE with k/m/g suffixes (powers of 1024); 0 keeps the documented default."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_size(value, f"{param.opts[0]} value" if param else "size")
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeType()


class MapFile:
    """``-m FILE`` or ``-m -`` (stderr): one ``0x%lx 0x%lx`` line per region, written as each
    region closes. The file is created before the first byte is dumped, so a bad path costs
    nothing."""

    def __init__(self, target: str | None):
        self.target = target
        self.stream = None
        if target is None:
            return
        if target == "-":
            self.stream = sys.stderr
            return
        try:
            self.stream = open(target, "w")
        except OSError as exc:
            raise UsageError(f"create map file {target}: {exc.strerror}") from None

    def __call__(self, start: int, end: int) -> None:
        if self.stream is None:
            return
        try:
            self.stream.write(f"0x{start:x} 0x{end:x}\n")
            self.stream.flush()
        except OSError as exc:
            raise OutputError(f"map file write error: {exc.strerror}") from None

    def close(self) -> None:
        if self.stream is not None and self.stream is not sys.stderr:
            try:
                self.stream.close()
            except OSError as exc:
                raise OutputError(f"map file write error: {exc.strerror}") from None


def run_dump(*, buffer_size: int, kernel: bool, map_target: str | None, page_size: int,
             dump_size: int, verbose: int, source_name: str, scan: bool, root: str | None,
             output: str | None, image_format: str = "raw", manifest_path: str | None = None,
             hashes: tuple[str, ...] = (), no_progress: bool = False, flags: dict | None = None) -> None:
    from memdump import manifest as records_mod
    from memdump import progress

    host = Host.at(root)
    say = (lambda level, text: remark(text) if verbose >= level else None)
    if page_size == 0:
        page_size = host.page_size()
    explicit_read_size = buffer_size != 0
    if buffer_size == 0:
        buffer_size = page_size
    if buffer_size > 1 << 30:
        raise UsageError(f"-b {buffer_size}: read size above 1 GiB")
    if page_size > 1 << 30:
        raise UsageError(f"-p {page_size}: page size above 1 GiB")
    structured = image_format != "raw"
    if structured and scan:
        raise UsageError(f"--format {image_format}: --scan writes the original raw stream only")
    if structured and kernel:
        raise UsageError(f"--format {image_format} records physical addresses; -k works with --format raw")
    digests = records_mod.hash_names(hashes, manifest_path is not None)

    # Everything that can be refused is refused before the first byte is written.
    records = records_mod.Records(manifest_path, output, records_mod.hash_names(hashes, False))
    try:
        out_fd = open_output(output) if output else 1
        try:
            sink = Sink(out_fd, hashes=digests, name=output or "stdout")
        except OSError as exc:
            raise UsageError(f"cannot write the image: {exc.strerror} (is stdout closed?)") from None
        if sink.is_terminal:
            raise UsageError("refusing to write a memory image to a terminal; redirect stdout or use -o PATH")
        source = open_source(source_name, host, kernel, warn=lambda text: say(1, text))
    except BaseException:
        records.discard()
        raise
    started = False
    try:
        for value, what in ((buffer_size, "-b"), (page_size, "-p")):
            if value % source.granularity:
                raise UsageError(f"{what} {value}: {source.name} needs multiples of {source.granularity} bytes")
        map_file = MapFile(map_target)
        say(1, f"source {source.name}")
        say(1, f"dump size {dump_size:#x}")
        say(1, f"page size {page_size:#x}")
        say(1, f"buffer size {buffer_size:#x}")
        common = dict(page_size=page_size, on_region=map_file, remark=lambda level, text: say(level, text))
        writer = None
        planned = []
        if scan:
            walk = ScanWalk(source, sink, read_size=buffer_size, exact_reads=explicit_read_size,
                            limit=dump_size, **common)
            total = dump_size or source.scan_end()
        else:
            if not source.ranges():
                raise UsageError(f"{source.name} publishes no map of what to read here; use --scan")
            read_size = buffer_size if explicit_read_size else max(DEFAULT_READ_SIZE, page_size)
            planned = plan_regions(source.ranges(), dump_size)
            total = sum(r.size for r in planned)
            if structured:
                writer, walk, elf_record = structured_walk(image_format, source, sink, planned,
                                                           read_size=read_size, **common)
                total = writer.total_size()
            else:
                walk = RamWalk(source, sink, read_size=read_size, limit=dump_size, **common)
        unserved = []
        if not scan and planned:
            # with -s, only what lies below where the dump stops concerns this image
            unserved = [h for h in source.unserved() if not dump_size or h.start < planned[-1].end]
        for hole in unserved:
            say(1, f"{hole.start:#x}-{hole.end:#x}: {hole.reason}")
        manifest = None
        if manifest_path:
            manifest = records_mod.Manifest(format=image_format, output=output, flags=dict(flags or {}),
                                            map_path=map_target)
            manifest.describe_source(source, page_size)
            manifest.set_unserved(unserved)
            if writer is not None and image_format == "elf":
                manifest.set(elf=elf_record)
        show = progress.wanted(no_progress) and map_target != "-"
        started = True
        result = Acquisition(walk, sink, records=records, manifest=manifest, writer=writer,
                             progress_total=total, progress=show,
                             limited=bool(dump_size) and total_memory(source) > dump_size,
                             remark=say).run()
        map_file.close()
        say(1, f"wrote {result.bytes_written:#x} bytes in {len(result.regions)} regions, "
               f"{len(result.holes)} {'zero-filled spans' if structured else 'holes'}; stopped: {result.stopped}")
    except BaseException:
        if not started:
            records.discard()
        raise
    finally:
        source.close()
        if output:
            os.close(out_fd)


def total_memory(source) -> int:
    return sum(r.size for r in source.ranges())


def structured_walk(image_format: str, source, sink: Sink, planned, *, read_size: int, page_size: int,
                    on_region, remark):
    """The writer and walk for padded, lime or elf; the ELF's machine facts are found first,
    because its headers carry them."""
    meta, record = ImageMeta(), None
    if image_format == "elf":
        from memdump.formats.meta import machine_meta

        meta, record = machine_meta(source, remark)
    writer = writer_for(image_format, sink, planned, meta)
    walk = StructuredWalk(source, writer, page_size=page_size, read_size=read_size,
                          on_region=on_region, remark=remark)
    return writer, walk, record


CONTEXT = dict(help_option_names=["--help"], max_content_width=100)


@click.group(invoke_without_command=True, context_settings=CONTEXT)
@click.option("-b", "buffer_size", type=SIZE, default="0", metavar="SIZE",
              help="Bytes per read operation (default 0: the page size, which memdump serves with 1 MiB "
                   "reads and the same output).")
@click.option("-k", "kernel", is_flag=True, help="Dump kernel (virtual) memory instead of physical memory.")
@click.option("-m", "map_target", metavar="FILE",
              help="Write the memory map: one '0x<start> 0x<end>' line per dumped region; '-' is stderr.")
@click.option("-p", "page_size", type=SIZE, default="0", metavar="SIZE",
              help="Memory page size, the step over a hole (default 0: the system page size).")
@click.option("-s", "dump_size", type=SIZE, default="0", metavar="SIZE",
              help="Number of memory bytes to dump (default 0: all).")
@click.option("-v", "verbose", count=True, help="Verbose remarks on stderr; repeat for more.")
@click.option("--source", "source_name", type=click.Choice(("auto",) + NAMES), default="auto",
              show_default=True, help="Where memory is read from; auto picks the first usable source.")
@click.option("--scan", is_flag=True,
              help="The original blind walk from address 0 (reads MMIO too); default: RAM ranges only.")
@click.option("--root", metavar="DIR", help="Resolve /dev, /proc, /sys and /boot under DIR (a fake machine).")
@click.option("-o", "--output", metavar="PATH", help="Write the image to PATH (created, never overwritten).")
@click.option("--format", "image_format", type=click.Choice(FORMATS), default="raw", show_default=True,
              help="raw: the original's stream, holes left out; padded: file offset = physical address; "
                   "lime: LiME v1; elf: ELF64 core. padded, lime and elf zero-fill unreadable pages.")
@click.option("--manifest", "manifest_path", metavar="PATH",
              help="Write a JSON manifest: source, kernel, times, regions, unread pages, digests.")
@click.option("--hash", "hashes", metavar="ALG", multiple=True,
              help="Digest the output with ALG (any hashlib name; repeatable); with -o also writes "
                   "PATH.ALG. The manifest always has sha256.")
@click.option("--no-progress", is_flag=True, help="No progress line on stderr (shown only on a terminal).")
@click.option("--load-module", "load_module", metavar="[PATH]", is_flag=False, flag_value="", default=None,
              help="Load memdump's kernel module for this dump (PATH, else the one installed or built for "
                   "this kernel) and unload it afterwards if this run loaded it.")
@click.version_option(__version__, prog_name=PROG)
@click.pass_context
def cli(ctx, **options):
    """Dump system memory to standard output, skipping holes in memory maps.

    SIZE takes k, m and g suffixes (case-insensitive, powers of 1024). Run 'memdump sources' to
    see which memory sources work on this machine and why the others do not; 'memdump info',
    'convert' and 'verify' inspect, convert and check images.
    """
    if ctx.invoked_subcommand is not None:
        # Options written before a subcommand belong to the dump; only --root and -k carry over
        # (to 'sources'). Anything else would be silently ignored: refuse it instead.
        given = [param.opts[0] for param in ctx.command.params
                 if ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE
                 and param.name not in ("root", "kernel")]
        if given:
            raise UsageError(f"{', '.join(given)}: dump options do not apply to "
                             f"'{ctx.invoked_subcommand}' (put a subcommand's options after it)")
        ctx.obj = {"root": options["root"], "kernel": options["kernel"]}
        return
    if ctx.invoked_subcommand is None:
        flags = {param.opts[0]: options[param.name] for param in ctx.command.params
                 if param.name in options}
        load_module = options.pop("load_module")
        if load_module is None:
            run_dump(flags=flags, **options)
        else:
            run_with_module(load_module, lambda: run_dump(flags=flags, **options),
                            root=options["root"], verbose=options["verbose"])


@cli.command("sources")
@click.option("-k", "kernel", is_flag=True, help="Probe for kernel (virtual) memory instead.")
@click.option("--root", metavar="DIR", help="Probe the fake machine under DIR.")
@click.pass_context
def sources_command(ctx, kernel: bool, root: str | None):
    """List every memory source: usable or not, and why."""
    inherited = ctx.obj or {}
    host = Host.at(root or inherited.get("root"))
    kernel = kernel or inherited.get("kernel", False)
    for probe in probe_all(host, kernel):
        click.echo(probe.line())


@cli.command("info")
@click.argument("image", metavar="IMAGE")
@click.option("--map", "map_path", metavar="MAP", help="The image's map (raw or padded); default IMAGE.map if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def info_command(image: str, map_path: str | None, as_json: bool):
    """Detect an image's format, list its regions and check its structure (non-zero exit on damage)."""
    import json

    from memdump.image import open_image, summary

    with open_image(image, map_path) as opened:
        if as_json:
            click.echo(json.dumps(opened.describe(), indent=1))
        else:
            for line in summary(opened):
                click.echo(line)


@cli.command("convert")
@click.argument("source_image", metavar="IN")
@click.argument("target", metavar="OUT")
@click.option("--to", "to_format", type=click.Choice(FORMATS), required=True, help="The format to write.")
@click.option("--map", "map_path", metavar="MAP", help="IN's map when IN is raw (or padded); default IN.map.")
@click.option("--out-map", "out_map", metavar="PATH", help="Also write OUT's map (one '0x<start> 0x<end>' line per region).")
@click.option("--hash", "hashes", metavar="ALG", multiple=True, help="Also write OUT.ALG, the digest of OUT.")
@click.option("--no-progress", is_flag=True, help="No progress line on stderr.")
def convert_command(source_image: str, target: str, to_format: str, map_path: str | None,
                    out_map: str | None, hashes: tuple[str, ...], no_progress: bool):
    """Convert IN (raw + map, padded, lime or elf) to OUT in another format; OUT is created, never
    overwritten ('-' is stdout)."""
    from memdump.formats.convert import convert_file

    convert_file(source_image, target, to_format, map_path=map_path, out_map=out_map, hashes=hashes,
                 no_progress=no_progress, remark=lambda text: remark(text))


@cli.command("verify")
@click.argument("image", metavar="IMAGE")
@click.option("--manifest", "manifest_path", metavar="PATH", required=True, help="The manifest written with the image.")
def verify_command(image: str, manifest_path: str):
    """Recompute IMAGE's digests and check its regions against its manifest."""
    from memdump.image import verify

    for line in verify(image, manifest_path):
        click.echo(line)


cli.add_command(module_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line on stderr and a non-zero exit for anything a user can cause."""
    try:
        cli.main(args=argv, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        remark("interrupted")
        sys.exit(130)
    except click.ClickException as exc:
        remark(exc.format_message().replace("\n", " "))
        sys.exit(2)
    except MemdumpError as exc:
        remark(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        remark("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        remark("output write error: Broken pipe")
        sys.exit(1)
    sys.exit(0)


def entry() -> None:
    """The installed command: ``main`` and then leave without the interpreter's teardown.

    Freeing every object at exit rewrites megabytes of the examined machine's RAM for nothing
    (measured in the real-kernel tier: about 10 MiB); the image and map are already written and
    closed, so the only buffers left to flush are Python's own stdout and stderr.
    """
    try:
        main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    else:
        code = 0
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None when the descriptor was closed at start
                stream.flush()
        except (OSError, ValueError):
            code = code or 1
    os._exit(code)
