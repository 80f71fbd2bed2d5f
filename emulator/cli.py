"""``memdump-emulator``: write an emulated machine as a fake root for ``memdump --root``."""

from __future__ import annotations

import sys

import click

from memdump.errors import UsageError
from memdump.sizes import parse_size
from emulator.device import BEHAVIOURS, Faults
from emulator.machine import Machine
from emulator.rootfs import write_root


def _size(ctx, param, value):
    try:
        return parse_size(value, param.opts[0])
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None


def _pages(ctx, param, value):
    try:
        return frozenset(int(v, 0) for v in value.split(",") if v) if value else frozenset()
    except ValueError:
        raise click.BadParameter("expected comma-separated page addresses such as 0x200000") from None


@click.command(context_settings=dict(max_content_width=100))
@click.option("--seed", type=int, default=1, show_default=True, help="The machine's seed (same seed, same machine).")
@click.option("--ram", "ram_size", default="64m", show_default=True, callback=_size, metavar="SIZE",
              help="About how much RAM (k/m/g suffixes).")
@click.option("--out", required=True, metavar="DIR", help="Directory to write the fake root into.")
@click.option("--strict-devmem", is_flag=True, help="Publish CONFIG_STRICT_DEVMEM=y in boot/config-*.")
@click.option("--lockdown", type=click.Choice(["none", "integrity", "confidentiality"]), default="none")
@click.option("--no-kcore", is_flag=True, help="Do not write proc/kcore (saves space for big machines).")
@click.option("--kcore-paddr", type=click.Choice(["real", "zero"]), default="real",
              help="'zero' writes p_paddr 0 everywhere, as kernels before 4.11 did.")
@click.option("--kmod", is_flag=True, help="Also write dev/memdump, as if memdump's module were loaded.")
@click.option("--hidden-iomem", is_flag=True, help="Write /proc/iomem as a non-root reader sees it (zeros).")
@click.option("--behaviour", type=click.Choice(BEHAVIOURS), default="module",
              help="What --source emulator does on this root.")
@click.option("--eio-pages", callback=_pages, default="", metavar="ADDR,...",
              help="Pages that fail with EIO under --source emulator.")
@click.option("--short-every", type=int, default=0, help="Every Nth read stops at a page boundary.")
@click.option("--granularity", type=click.IntRange(1), default=1,
              help="--source emulator takes only reads aligned to and sized in multiples of this.")
@click.option("--eintr-every", type=int, default=0, help="Every Nth read is interrupted (EINTR) once.")
def cli(seed, ram_size, out, strict_devmem, lockdown, no_kcore, kcore_paddr, kmod, hidden_iomem,
        behaviour, eio_pages, short_every, granularity, eintr_every):
    """Write an emulated machine with holes as a fake root directory."""
    try:
        machine = Machine(seed=seed, ram_size=ram_size)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ram") from None
    truth = write_root(machine, out, strict_devmem=strict_devmem,
                       lockdown=None if lockdown == "none" else lockdown, kcore=not no_kcore,
                       kcore_paddr=kcore_paddr, kmod=kmod, hidden_iomem=hidden_iomem, behaviour=behaviour,
                       faults=Faults(eio_pages, short_every, eintr_every), granularity=granularity)
    click.echo(f"{out}: {len(truth['ram'])} RAM ranges, {machine.ram_bytes} bytes of RAM, "
               f"address space ends at {machine.address_space_end:#x}")


def main(argv=None):
    try:
        cli.main(args=argv, prog_name="memdump-emulator", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"memdump-emulator: {exc.format_message()}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"memdump-emulator: {exc.filename or ''}: {exc.strerror}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
