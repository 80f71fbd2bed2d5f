"""The command line, in-process (as the console script runs it) and as a subprocess."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest

from conftest import REPO, expected_ram_walk, map_lines, run_main, run_subprocess


def test_first_mib_and_map_equal_the_truth(plain_root, capfdbinary):
    """The first MiB and its map on stderr: memdump -s 1m -m - --root DIR."""
    root, machine = plain_root
    code, out, err = run_main(capfdbinary, "-s", "1m", "-m", "-", "--root", root)
    want_data, want_regions = expected_ram_walk(machine, limit=1 << 20)
    assert code == 0
    assert out == want_data and len(out) == 1 << 20
    assert err == map_lines(want_regions)


@pytest.mark.parametrize("source", ["devmem", "kcore", "kmod", "emulator", "auto"])
@pytest.mark.parametrize("flags", [[], ["-b", "4k"], ["-b", "64k", "-p", "8k"], ["-s", "3000001"]])
def test_sources_dump_the_truth_through_the_cli(source, flags, plain_root, capfdbinary, tmp_path):
    root, machine = plain_root
    mapfile = tmp_path / "map"
    code, out, err = run_main(capfdbinary, "--source", source, "--root", root, "-m", str(mapfile), *flags)
    assert code == 0, err
    limit = int(flags[1]) if flags[:1] == ["-s"] else 0
    want_data, want_regions = expected_ram_walk(machine, limit=limit)
    if source == "kcore":  # kcore publishes whole pages only: compare on its own ranges
        got_regions = [tuple(int(v, 16) for v in line.split()) for line in mapfile.read_text().splitlines()]
        assert out == b"".join(machine.contents(s, e) for s, e in got_regions)
        assert sum(e - s for s, e in got_regions) >= len(want_data) - 4 * 4096
    else:
        assert mapfile.read_text() == map_lines(want_regions)
        assert out == want_data


def test_kernel_memory_through_kcore(plain_root, capfdbinary, tmp_path):
    root, machine = plain_root
    code, out, err = run_main(capfdbinary, "-k", "--root", root, "-m", str(tmp_path / "map"), "-v")
    assert code == 0, err
    assert "source kcore" in err
    text = next(s for s in machine.kcore_segments() if s[0] == "text")
    regions = [tuple(int(v, 16) for v in line.split()) for line in (tmp_path / "map").read_text().splitlines()]
    assert (text[1], text[1] + text[3]) in regions or any(s <= text[1] and text[1] + text[3] <= e for s, e in regions)
    offset = 0
    for start, end in regions:
        if start <= text[1] < end:
            offset += text[1] - start
            break
        offset += end - start
    assert out[offset:offset + text[3]] == machine.contents(text[2], text[2] + text[3])


def test_output_file_option(plain_root, capfdbinary, tmp_path):
    root, machine = plain_root
    target = tmp_path / "image.raw"
    code, out, err = run_main(capfdbinary, "--root", root, "-o", str(target), "-s", "2m")
    assert code == 0 and out == b""
    assert target.read_bytes() == expected_ram_walk(machine, limit=2 << 20)[0]
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    code, out, err = run_main(capfdbinary, "--root", root, "-o", str(target), "-s", "2m")
    assert code != 0 and "exists" in err and err.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["-b", "4x"], "bad -b value"), (["-s", "-1"], "bad -s value"), (["-p", "1.5k"], "bad -p value"),
    (["-s", "12q"], "bad -s value"), (["-b", "2g"], "above 1 GiB"),
    (["-m", "/nonexistent/dir/map"], "-m /nonexistent/dir/map: No such file"), (["--root", "/nonexistent/root"], "no such directory"),
    (["--source", "nonsense"], "nonsense"), (["-x"], "-x"), (["extra"], "extra"),
])
def test_bad_input_gives_one_line_and_non_zero_exit(args, message, plain_root, capfdbinary):
    root, _ = plain_root
    full = args if "--root" in args else [*args, "--root", root]
    code, out, err = run_main(capfdbinary, *full)
    assert code != 0
    assert out == b""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_no_usable_source_lists_every_reason(tmp_path, capfdbinary):
    (tmp_path / "proc").mkdir()
    code, out, err = run_main(capfdbinary, "--root", str(tmp_path))
    assert code != 0 and err.count("\n") == 1
    assert "devmem: no /dev/mem" in err and "kcore: no /proc/kcore" in err


def test_sources_explain_refusals(root_factory, capfdbinary):
    root, _ = root_factory("strict", strict_devmem=True)
    code, out, _ = run_main(capfdbinary, "sources", "--root", root)
    lines = dict(line.split(None, 1) for line in out.decode().splitlines())
    assert lines["devmem"].startswith("limited") and "CONFIG_STRICT_DEVMEM" in lines["devmem"]
    assert lines["kcore"].startswith("usable")
    code, _, err = run_main(capfdbinary, "--root", root, "-s", "4k", "-v")
    assert code == 0 and "source kcore" in err  # auto passes over the limited /dev/mem

    root, _ = root_factory("locked", lockdown="confidentiality")
    code, out, _ = run_main(capfdbinary, "sources", "--root", root)
    text = out.decode()
    assert "lockdown (confidentiality) blocks /dev/mem" in text and "blocks /proc/kcore" in text

    root, _ = root_factory("hidden", hidden_iomem=True)
    code, out, _ = run_main(capfdbinary, "sources", "--root", root)
    assert "CAP_SYS_ADMIN" in out.decode()

    code, out, _ = run_main(capfdbinary, "sources", "-k", "--root", root)
    assert "removed in Linux 5.13" in out.decode()


def test_explicit_limited_source_runs_with_a_warning(root_factory, capfdbinary):
    root, machine = root_factory("strict", strict_devmem=True)
    code, out, err = run_main(capfdbinary, "--source", "devmem", "--scan", "-s", "1m", "--root", root, "-v")
    assert code == 0 and "warning: devmem: CONFIG_STRICT_DEVMEM" in err
    with open(os.path.join(root, "dev", "mem"), "rb") as image:
        assert out == image.read(1 << 20)


def test_subprocess_stdout_and_map(plain_root):
    root, machine = plain_root
    done = run_subprocess("-s", "1m", "-m", "-", "--root", root)
    want_data, want_regions = expected_ram_walk(machine, limit=1 << 20)
    assert done.returncode == 0
    assert done.stdout == want_data and done.stderr.decode() == map_lines(want_regions)


def test_stdout_closed_early_is_one_line(plain_root):
    root, _ = plain_root
    env = dict(os.environ, PYTHONPATH=REPO)
    reader = subprocess.Popen([sys.executable, "-m", "memdump", "--root", root], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env)
    reader.stdout.read(1000)
    reader.stdout.close()
    err = reader.stderr.read().decode()
    assert reader.wait() != 0
    assert "Broken pipe" in err and err.count("\n") == 1 and "Traceback" not in err


def test_refuses_to_write_to_a_terminal(plain_root):
    root, _ = plain_root
    parent, child = pty.openpty()
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-m", "memdump", "--root", root], stdout=child,
                          stderr=subprocess.PIPE, env=env)
    os.close(child)
    os.close(parent)
    assert done.returncode != 0 and b"terminal" in done.stderr and done.stderr.count(b"\n") == 1


def test_stdout_closed_before_start(plain_root):
    root, _ = plain_root
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run(f"{sys.executable} -m memdump --root {root} >&-", shell=True, capture_output=True,
                          env=env)
    assert done.returncode != 0 and done.stderr.count(b"\n") == 1 and b"Traceback" not in done.stderr


def test_verbose_remarks(plain_root, capfdbinary):
    root, _ = plain_root
    code, _, err = run_main(capfdbinary, "--root", root, "-s", "8k", "-vv")
    assert code == 0
    for text in ("page size 0x1000", "buffer size 0x1000", "dump size 0x2000", "range 0x1000-"):
        assert text in err


def test_builtin_emulator_needs_no_root(capfdbinary):
    from emulator.device import EmulatedMemory
    machine = EmulatedMemory().machine
    code, out, err = run_main(capfdbinary, "--source", "emulator", "-s", "256k", "-m", "-")
    assert code == 0 and out == expected_ram_walk(machine, limit=256 << 10)[0]


def test_read_size_must_suit_the_source(root_factory, capfdbinary):
    root, machine = root_factory("aligned", granularity=512)
    code, out, err = run_main(capfdbinary, "--source", "emulator", "--root", root, "-b", "1000")
    assert code != 0 and out == b"" and "multiples of 512" in err and err.count("\n") == 1
    code, out, err = run_main(capfdbinary, "--source", "emulator", "--root", root, "-b", "1k", "-s", "1m")
    assert code == 0 and out == expected_ram_walk(machine, limit=1 << 20)[0]


def test_click_runner_help_sources_and_dump(plain_root, tmp_path):
    from click.testing import CliRunner

    from memdump.cli import cli

    root, machine = plain_root
    runner = CliRunner()
    shown = runner.invoke(cli, ["--help"])
    assert shown.exit_code == 0
    for flag in ("-b SIZE", "-k", "-m FILE", "-p SIZE", "-s SIZE", "-v", "--source", "--scan", "--root"):
        assert flag in shown.output
    listed = runner.invoke(cli, ["sources", "--root", root])
    assert listed.exit_code == 0 and listed.output.splitlines()[0].split()[0] in ("kmod", "devmem")
    target = tmp_path / "runner.img"
    dumped = runner.invoke(cli, ["--root", root, "-s", "100k", "-o", str(target)])
    assert dumped.exit_code == 0
    assert target.read_bytes() == expected_ram_walk(machine, limit=100 << 10)[0]


def test_options_before_a_subcommand(root_factory, capfdbinary):
    """--root and -k before 'sources' carry over; dump options there are refused, not ignored."""
    root, _ = root_factory("strict", strict_devmem=True)
    code, out, _ = run_main(capfdbinary, "--root", root, "sources")
    assert code == 0 and b"CONFIG_STRICT_DEVMEM" in out
    code, out, err = run_main(capfdbinary, "-s", "1m", "--root", root, "sources")
    assert code == 2 and out == b"" and "-s" in err and err.count("\n") == 1
