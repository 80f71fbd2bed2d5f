"""``memdump sources``, ``info``, ``convert`` and ``verify``: each a thin wrapper over the library
(``memdump.sources``, ``memdump.image``, ``memdump.conversion``, ``memdump.verification``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Tuple

import click

from memdump.formats import FORMATS
from memdump.host import Host
from memdump.sources import probe_all

if TYPE_CHECKING:
    from memdump.image import Image


def remark(text: str) -> None:
    click.echo(f"memdump: {text}", err=True)


@click.command("sources")
@click.option("-k", "kernel", is_flag=True, help="Probe for kernel (virtual) memory instead.")
@click.option("--root", metavar="DIR", help="Probe the fake machine under DIR.")
@click.pass_context
def sources_command(ctx, kernel: bool, root: Optional[str]):
    """List every memory source: usable or not, and why."""
    inherited = ctx.obj or {}
    host = Host.at(root or inherited.get("root"))
    kernel = kernel or inherited.get("kernel", False)
    for probe in probe_all(host, kernel):
        click.echo(probe.line())


@click.command("info")
@click.argument("image", metavar="IMAGE")
@click.option("--map", "map_path", metavar="MAP", help="The image's map (raw or padded); default IMAGE.map if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def info_command(image: str, map_path: Optional[str], as_json: bool):
    """Detect an image's format, list its regions and check its structure (non-zero exit on damage)."""
    import json

    from memdump.image import open_image

    with open_image(image, map_path) as opened:
        if as_json:
            click.echo(json.dumps(opened.describe(), indent=1))
        else:
            for line in summary(opened):
                click.echo(line)


@click.command("convert")
@click.argument("source_image", metavar="IN")
@click.argument("target", metavar="OUT")
@click.option("--to", "to_format", type=click.Choice(FORMATS), required=True, help="The format to write.")
@click.option("--map", "map_path", metavar="MAP", help="IN's map when IN is raw (or padded); default IN.map.")
@click.option("--out-map", "out_map", metavar="PATH", help="Also write OUT's map (one '0x<start> 0x<end>' line per region).")
@click.option("--hash", "hashes", metavar="ALG", multiple=True, help="Also write OUT.ALG, the digest of OUT.")
@click.option("--no-progress", is_flag=True, help="No progress line on stderr.")
def convert_command(source_image: str, target: str, to_format: str, map_path: Optional[str],
                    out_map: Optional[str], hashes: Tuple[str, ...], no_progress: bool):
    """Convert IN (raw + map, padded, lime or elf) to OUT in another format; OUT is created, never
    overwritten ('-' is stdout)."""
    from memdump.conversion import convert

    convert(source_image, target, to_format, map_path=map_path, out_map=out_map, hashes=hashes,
                 no_progress=no_progress, remark=remark)


@click.command("verify")
@click.argument("image", metavar="IMAGE")
@click.option("--manifest", "manifest_path", metavar="PATH", required=True, help="The manifest written with the image.")
def verify_command(image: str, manifest_path: str):
    """Recompute IMAGE's digests and check its regions against its manifest."""
    from memdump.verification import verify

    for line in verify(image, manifest_path):
        click.echo(line)


def summary(image: "Image") -> List[str]:
    """What ``memdump info`` prints."""
    from memdump.sizes import format_size

    label = {"unknown": "unknown format (padded, or raw without its map)"}.get(image.format,
                                                                               f"{image.format} image")
    lines = [f"{image.path}: {label}, {len(image.regions)} regions, {image.memory_bytes} bytes of memory "
             f"({format_size(image.memory_bytes)}), file {image.file_size} bytes"
             + (f", map {image.map_path}" if image.map_path else "")]
    lines.append(f"  {'start':<18}  {'end':<18}  {'size':<12}  offset")
    for p in image.regions:
        lines.append(f"  {p.start:#018x}  {p.end:#018x}  {p.size:<#12x}  {p.offset:#x}")
    from memdump.recover import find_vmcoreinfo, parse_vmcoreinfo

    meta = image.facts()
    vmcoreinfo = meta.vmcoreinfo
    if image.format == "elf":
        if vmcoreinfo:
            fields = parse_vmcoreinfo(vmcoreinfo)
            lines.append(f"VMCOREINFO: {len(fields)} entries, OSRELEASE={fields.get('OSRELEASE', '?')}")
        else:
            lines.append("VMCOREINFO: none")
        if meta.direct_map_base is not None:
            lines.append(f"direct map base: {meta.direct_map_base:#x}")
    else:
        # the kernel's own note, in its RAM: which kernel this is, and how it pages
        found = find_vmcoreinfo(image)
        if found is not None:
            address, vmcoreinfo = found
            fields = parse_vmcoreinfo(vmcoreinfo)
            lines.append(f"VMCOREINFO: in RAM at {address:#x}, OSRELEASE={fields.get('OSRELEASE', '?')}")
    if vmcoreinfo and parse_vmcoreinfo(vmcoreinfo).get("NUMBER(pgtable_l5_enabled)") == "1":
        lines.append("warning: the kernel ran with 5-level page tables, which Volatility 3 cannot "
                     "walk (its plugins list nothing); drgn and crash can")
    lines += [f"note: {text}" for text in image.remarks]
    return lines




def add_to(group: click.Group) -> None:
    for command in (sources_command, info_command, convert_command, verify_command):
        group.add_command(command)
