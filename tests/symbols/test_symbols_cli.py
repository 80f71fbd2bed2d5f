"""``memdump symbols``: the command writes what the library builds, and refuses in one line."""

from __future__ import annotations

import json
import lzma

from conftest import run_main
from test_symbols_kallsyms import BANNER, bundle, machine


def test_symbols_for_a_root_and_a_bundle(tmp_path, capfdbinary):
    root = machine(tmp_path / "root")
    out = tmp_path / "kernel.json.xz"
    code, stdout, err = run_main(capfdbinary, "symbols", "--root", root, "-o", str(out))
    assert code == 0, err
    isf = json.loads(lzma.decompress(out.read_bytes()))
    assert isf["symbols"]["init_task"]["type"] == {"kind": "struct", "name": "task_struct"}
    assert isf["user_types"]["task_struct"]["fields"]["tasks"]["offset"] == 8
    line = stdout.decode()
    assert line.startswith(f"{out}: ") and BANNER.decode().strip() in line and line.count("\n") == 1
    again = tmp_path / "from-bundle.json"
    code, _, err = run_main(capfdbinary, "symbols", "--bundle", bundle(tmp_path / "b"), "-o", str(again))
    assert code == 0, err
    assert json.loads(again.read_text())["symbols"]["linux_banner"]["address"] == 0xFFFFFFFF82000000


def test_symbols_refusals_are_one_line(tmp_path, capfdbinary):
    root = machine(tmp_path / "root", btf=False)
    code, _, err = run_main(capfdbinary, "symbols", "--root", root, "-o", str(tmp_path / "x.json"))
    assert code != 0 and "CONFIG_DEBUG_INFO_BTF" in err and err.count("\n") == 1
    assert not (tmp_path / "x.json").exists()
    existing = tmp_path / "existing.json"
    existing.write_text("keep")
    code, _, err = run_main(capfdbinary, "symbols", "--root", machine(tmp_path / "r2"), "-o", str(existing))
    assert code != 0 and err.count("\n") == 1 and existing.read_text() == "keep"
    code, _, err = run_main(capfdbinary, "symbols", "--root", root, "--bundle", root, "-o", str(tmp_path / "y"))
    assert code == 2 and "give one" in err
