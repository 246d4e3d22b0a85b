"""emit-final, inspect and verify on bad input: one line naming the file and the problem,
exit 2 (1 for a rejected pair or a table that does not verify), no traceback, nothing written,
inputs untouched."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pehotpatch.cli import main
from pehotpatch.image.headers import (
    DATA_DIRECTORY,
    DOS_HEADER,
    FILE_HEADER,
    OPTIONAL_HEADER64,
    SECTION_HEADER,
)
from pehotpatch.image.pe_reader import load_pe

ROOT = Path(__file__).resolve().parents[1]
S = ROOT / "samples" / "x64" / "fix_globals"
HP = ["--functions-file", str(S / "hotpatch_functions.txt")]


def offsets(data: bytes) -> tuple[int, int, int]:
    """(optional header, data directories, section table end) file offsets."""
    fh = (DOS_HEADER.read(data, "e_lfanew") or 0) + 4
    oh = fh + FILE_HEADER.size
    nsec = FILE_HEADER.read(data, "NumberOfSections", fh) or 0
    opt_size = FILE_HEADER.read(data, "SizeOfOptionalHeader", fh) or 0
    return oh, oh + OPTIONAL_HEADER64.size, oh + opt_size + nsec * SECTION_HEADER.size


def crafted(tmp_path: Path, edit) -> Path:
    data = bytearray((S / "intermediate.dll").read_bytes())
    edit(data)
    p = tmp_path / "in" / "intermediate.dll"
    p.parent.mkdir()
    p.write_bytes(bytes(data))
    (p.parent / "intermediate.pdb").write_bytes((S / "intermediate.pdb").read_bytes())
    return p


def run_emit(capsys, tmp_path: Path, intermediate: Path, *extra: str) -> tuple[int, str, str, Path]:
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    before = intermediate.read_bytes()
    out = out_dir / "final.dll"
    code = main(["emit-final", str(S / "base.dll"), str(intermediate), "-o", str(out), *HP, *extra])
    cap = capsys.readouterr()
    assert intermediate.read_bytes() == before
    assert list(out_dir.iterdir()) == [] or code == 0, "a failed run left a file"
    return code, cap.out, cap.err, out


def no_load_config(d: bytearray) -> None:
    _, dirs, _ = offsets(d)
    DATA_DIRECTORY.pack_into(d, dirs + 8 * 10, {"VirtualAddress": 0, "Size": 0})


def small_load_config(d: bytearray) -> None:
    _, dirs, _ = offsets(d)
    img = load_pe(S / "intermediate.dll")
    lc = img.load_config
    assert lc is not None
    off = img.rva_to_offset(lc.rva)
    struct.pack_into("<I", d, off, 0x70)
    DATA_DIRECTORY.pack_into(d, dirs + 8 * 10, {"Size": 0x70})


def full_headers(d: bytearray) -> None:
    _, _, end = offsets(d)
    d[end:end + 40] = b"\xAA" * 40


@pytest.mark.parametrize("edit, words", [
    (no_load_config, "no load config directory"),
    (small_load_config, "does not reach HotPatchTableOffset"),
    (full_headers, "no room for one more section header"),
], ids=["no-load-config", "load-config-too-small", "no-room-for-header"])
def test_emit_refuses_unwritable_intermediate(tmp_path, capsys, edit, words):
    code, _out, err, out = run_emit(capsys, tmp_path, crafted(tmp_path, edit))
    assert code == 2 and not out.exists()
    assert err.count("\n") == 1 and err.startswith("pehp: error: ") and "Traceback" not in err
    assert words in err and "intermediate.dll" in err
    if "load config" in words:
        assert "_load_config_used" in err  # the link-time fix


def signed(d: bytearray) -> None:
    _, dirs, _ = offsets(d)
    while len(d) % 8:
        d.append(0)
    off = len(d)
    d += struct.pack("<IHH", 16, 0x0200, 0x0002) + b"\x30\x82\x00\x00\x00\x00\x00\x00"  # WIN_CERTIFICATE
    DATA_DIRECTORY.pack_into(d, dirs + 8 * 4, {"VirtualAddress": off, "Size": 16})


def test_signed_intermediate(tmp_path, capsys):
    inter = crafted(tmp_path, signed)
    assert load_pe(inter).has_signature
    code, _out, err, out = run_emit(capsys, tmp_path, inter, "--keep-signature")
    assert code == 2 and not out.exists() and "--keep-signature" in err and err.count("\n") == 1
    code, text, _err, out = run_emit(capsys, tmp_path, inter)
    assert code == 0 and "signature was removed" in text
    img = load_pe(out)
    assert not img.has_signature and img.directory(4) == (0, 0)
    assert img.data[: len(inter.read_bytes()) - 16][:0x200] != b""  # parsed, and the certificate is gone:
    assert b"\x30\x82\x00\x00\x00\x00\x00\x00" not in img.data[-64:]


def test_output_equal_to_an_input(tmp_path, capsys):
    inter = crafted(tmp_path, lambda d: None)
    before = inter.read_bytes()
    code = main(["emit-final", str(S / "base.dll"), str(inter), "-o", str(inter), *HP, "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and inter.read_bytes() == before


def test_base_of_another_machine(tmp_path, capsys):
    out = tmp_path / "final.dll"
    code = main(["emit-final", str(ROOT / "samples" / "x86" / "fix_globals" / "base.dll"),
                 str(S / "intermediate.dll"), "-o", str(out), *HP])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists() and err.count("\n") == 1 and "Traceback" not in err


def test_intermediate_that_already_has_a_table(tmp_path, capsys):
    first = tmp_path / "final.dll"
    assert main(["emit-final", str(S / "base.dll"), str(S / "intermediate.dll"), "-o", str(first), *HP]) == 0
    capsys.readouterr()
    again = tmp_path / "again.dll"
    code = main(["emit-final", str(S / "base.dll"), str(first), "-o", str(again), *HP, "--pdb",
                 str(S / "intermediate.pdb")])
    err = capsys.readouterr().err
    assert code == 2 and not again.exists() and "already carries a hot-patch table" in err


def test_verify_against_another_base(tmp_path, capsys):
    """A final image checked against a base it was not made for: exit 1, the identity named."""
    final = tmp_path / "final.dll"
    assert main(["emit-final", str(S / "base.dll"), str(S / "intermediate.dll"), "-o", str(final), *HP]) == 0
    capsys.readouterr()
    other = ROOT / "samples" / "x64" / "fix_globals" / "intermediate.dll"  # same machine, other image
    code = main(["verify", str(final), "--base", str(other), "--intermediate", str(S / "intermediate.dll"), *HP])
    out = capsys.readouterr().out
    assert code == 1 and "base-timestamp" in out


def test_verify_and_inspect_bad_files(tmp_path, capsys):
    junk = tmp_path / "junk.dll"
    junk.write_bytes(b"MZ" + b"\0" * 10)
    for argv in (["inspect", str(junk)], ["verify", str(junk), "--base", str(S / "base.dll")],
                 ["inspect", str(tmp_path / "missing.dll")]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith("pehp: error: "), argv


def test_plan_refusal_is_named(tmp_path, capsys):
    """A sequence number of 0 is a usage error; plan and emit-final say so in one line."""
    out = tmp_path / "final.dll"
    code = main(["emit-final", str(S / "base.dll"), str(S / "intermediate.dll"), "-o", str(out), *HP,
                 "--sequence", "0"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists() and "--sequence" in err


def bad_section_alignment(d: bytearray) -> None:
    oh, _, _ = offsets(d)
    OPTIONAL_HEADER64.pack_into(d, oh, {"SectionAlignment": 0x6000})


def test_emit_refuses_an_alignment_the_loader_would_not_take(tmp_path, capsys):
    code, _out, err, out = run_emit(capsys, tmp_path, crafted(tmp_path, bad_section_alignment))
    assert code == 2 and not out.exists() and err.count("\n") == 1
    assert "SectionAlignment 0x6000" in err


@pytest.mark.parametrize("command", ["plan", "verify"])
def test_plan_and_verify_refuse_a_base_of_another_machine(tmp_path, capsys, command):
    x86 = ROOT / "samples" / "x86" / "fix_globals" / "base.dll"
    if command == "plan":
        argv = ["plan", str(x86), str(S / "intermediate.dll"), *HP]
    else:
        final = tmp_path / "final.dll"
        assert main(["emit-final", str(S / "base.dll"), str(S / "intermediate.dll"), "-o", str(final), *HP]) == 0
        capsys.readouterr()
        argv = ["verify", str(final), "--base", str(x86), "--intermediate", str(S / "intermediate.dll"), *HP]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "needs the same machine" in err
