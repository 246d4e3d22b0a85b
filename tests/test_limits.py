"""Absurd sizes and counts in crafted inputs: one line, exit 2, bounded time and memory.

Every input is derived here from a committed sample (image, PDB or object) by patching
fields; the CLI runs in a child process under RLIMIT_AS (2 GiB), RLIMIT_CPU and a
timeout (``craft.run_pehp``), so a regression fails instead of hanging.  Where the
format allows a sane reading (overlapping section raw data in an image), the run must
succeed instead.  docs/LIMITS.md states the bounds checked here.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from craft import (
    add_section,
    directory,
    msf_layout,
    patch_stream,
    pe_layout,
    run_pehp,
    rva_to_offset,
    section_index,
    sections,
    set_directory,
    stream,
    write_directory,
)

from pehotpatch.image.codeview import leaves as T
from pehotpatch.image.codeview.records import PointerRecord
from pehotpatch.image.codeview.symbols import PROC_KINDS, S_PUB32, iter_records
from pehotpatch.image.pdb import load_pdb
from pehotpatch.image.pdb.dbi import parse_dbi

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = ROOT / "samples" / "x64" / "new_import"  # a DLL with an import directory
TYPES = ROOT / "samples" / "x64" / "struct_layout"  # a PDB with arrays, modifiers, structs
MAX_SECONDS = 30.0
MAX_RSS_KIB = 512 * 1024

DIR_IMPORT, DIR_EXCEPTION, DIR_BASERELOC, DIR_LOAD_CONFIG = 1, 3, 5, 10
ORDINAL_THUNK = struct.pack("<Q", 1 << 63 | 7)


# ---- image cases ------------------------------------------------------------------------
def _image() -> bytearray:
    return bytearray((IMPORTS / "intermediate.dll").read_bytes())


def _set_section_field(d: bytearray, name: str, field_offset: int, value: int) -> None:
    struct.pack_into("<I", d, pe_layout(d).sec(section_index(d, name)) + field_offset, value)


def raw_size_4g(d: bytearray) -> None:
    _set_section_field(d, ".text", 16, 0xFFFFFFFF)


def virtual_size_4g(d: bytearray) -> None:
    _set_section_field(d, ".reloc", 8, 0xFFFFF000)


def virtual_size_2g(d: bytearray) -> None:
    _set_section_field(d, ".reloc", 8, 0x7FFF0000)
    struct.pack_into("<I", d, pe_layout(d).opt + 56, 0xFFFFF000)  # SizeOfImage to match


def section_count(d: bytearray) -> None:
    struct.pack_into("<H", d, pe_layout(d).lfanew + 6, 0xFFFF)


def reloc_block_1e9(d: bytearray) -> None:
    rva, _ = directory(d, DIR_BASERELOC)
    struct.pack_into("<II", d, rva_to_offset(d, rva), 0x1000, 8 + 2 * 10**9)


def reloc_directory_4g(d: bytearray) -> None:
    set_directory(d, DIR_BASERELOC, directory(d, DIR_BASERELOC)[0], 0xFFFFFFFF)


def exception_directory_4g(d: bytearray) -> None:
    set_directory(d, DIR_EXCEPTION, directory(d, DIR_EXCEPTION)[0], 0xFFFFFFF0)


def pdata_overlap(d: bytearray) -> None:
    rva, _ = directory(d, DIR_EXCEPTION)
    off = rva_to_offset(d, rva)
    begin, end, _u = struct.unpack_from("<III", d, off + 12)
    struct.pack_into("<I", d, off + 4, begin + 1)  # entry 0 now runs into entry 1


def coff_symbols_1e9(d: bytearray) -> None:
    struct.pack_into("<II", d, pe_layout(d).lfanew + 12, 0x400, 10**9)


def export_count(d: bytearray) -> None:
    rva, _ = directory(d, 0)
    struct.pack_into("<II", d, rva_to_offset(d, rva) + 20, 0x7FFFFFFF, 0x7FFFFFFF)


def load_config_size(d: bytearray) -> None:
    rva, _ = directory(d, DIR_LOAD_CONFIG)
    struct.pack_into("<I", d, rva_to_offset(d, rva), 0xFFFFFFF0)


def cfg_count(d: bytearray) -> None:
    rva, _ = directory(d, DIR_LOAD_CONFIG)
    off = rva_to_offset(d, rva)
    struct.pack_into("<QQI", d, off + 0x80, 0x180001000, 10**9, 0x100)


def _import_descriptor(d: bytes) -> tuple[int, int, int, int]:
    imp_rva, _ = directory(d, DIR_IMPORT)
    ilt, _ts, _fc, name_rva, iat = struct.unpack_from("<5I", d, rva_to_offset(d, imp_rva))
    return imp_rva, ilt, name_rva, iat


def thunks_unterminated(d: bytearray) -> bytearray:
    """The import lookup table runs on for 2^20 + 8 entries (8 MiB)."""
    imp_rva, _ilt, _name, _iat = _import_descriptor(d)
    out, rva = add_section(d, ".craft", ORDINAL_THUNK * ((1 << 20) + 8))
    struct.pack_into("<I", out, rva_to_offset(out, imp_rva), rva)
    return out


def _descriptors_sharing_a_table(d: bytearray, entries: int, n: int) -> bytearray:
    """``n`` import descriptors, all naming one table of ``entries`` ordinal imports."""
    _imp, _ilt, name_rva, iat = _import_descriptor(d)
    table = ORDINAL_THUNK * entries + b"\0" * 8
    out, rva = add_section(d, ".craft", table + b"\0" * (20 * (n + 1)))
    base = rva_to_offset(out, rva) + len(table)
    for k in range(n):
        struct.pack_into("<5I", out, base + 20 * k, rva, 0, 0, name_rva, iat)
    set_directory(out, DIR_IMPORT, rva + len(table), 20 * n)
    return out


def thunks_shared(d: bytearray) -> bytearray:
    """4000 descriptors share one 500-entry table: 2 million imports from 90 KiB."""
    return _descriptors_sharing_a_table(d, 500, 4000)


def descriptors_unterminated(d: bytearray) -> bytearray:
    """2^14 + 1 descriptors with no terminator: the descriptor cap."""
    return _descriptors_sharing_a_table(d, 1, (1 << 14) + 1)


IMAGE_ERRORS: dict[str, tuple[Callable, str]] = {
    "raw-size-4g": (raw_size_4g, r"section '\.text' raw data 0x400\+0xffffffff runs past end of file"),
    "virtual-size-4g": (virtual_size_4g, r"section '\.reloc' lies outside SizeOfImage"),
    "virtual-size-2g": (virtual_size_2g, r"section '\.reloc' has an absurd virtual size 0x7fff0000"),
    "section-count": (section_count, r"implausible section count 65535"),
    "reloc-block-1e9": (reloc_block_1e9, r"corrupt base relocation block at \+0x0 \(size 0x77359408\)"),
    "reloc-directory-4g": (reloc_directory_4g, r"base relocation directory size 0xffffffff is larger than the file"),
    "exception-directory-4g": (exception_directory_4g, r"exception directory size 0xfffffff0 is larger than the file"),
    "pdata-overlap": (pdata_overlap, r"\.pdata entries 0x[0-9a-f]+\.\.0x[0-9a-f]+ and 0x[0-9a-f]+\.\.0x[0-9a-f]+ overlap"),
    "coff-symbols-1e9": (coff_symbols_1e9, r"COFF symbol table \(1000000000 symbols at 0x400\) runs past end of file"),
    "export-count": (export_count, r"export directory claims 2147483647 functions and 2147483647 names"),
    "load-config-size": (load_config_size, r"load config Size 0xfffffff0 is implausible"),
    "cfg-count": (cfg_count, r"load config claims 1000000000 CFG functions"),
    "thunks-unterminated": (thunks_unterminated, r"import table of kernel32\.dll at RVA 0x[0-9a-f]+ is not terminated"),
    "thunks-shared": (thunks_shared, r"import directories list more than 1048576 imports in all"),
    "descriptors-unterminated": (descriptors_unterminated, r"import directory is not terminated"),
}


def _one_line_error(r, path: Path, message: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr[-2000:]
    prefix = f"pehp: error: {path}: "
    assert lines[0].startswith(prefix), lines[0]
    assert re.search(message, lines[0][len(prefix):]), lines[0]
    _bounded(r)


def _bounded(r) -> None:
    assert r.seconds < MAX_SECONDS, r.seconds
    assert r.maxrss_kib < MAX_RSS_KIB, r.maxrss_kib


@pytest.mark.parametrize("case", sorted(IMAGE_ERRORS))
def test_crafted_image_is_one_line_exit_2(case, tmp_path):
    mutate, message = IMAGE_ERRORS[case]
    d = _image()
    d = mutate(d) or d
    p = tmp_path / f"{case}.dll"
    p.write_bytes(d)
    _one_line_error(run_pehp("info", p), p, message)


def test_overlapping_section_raw_data_reads_as_the_loader_maps_it(tmp_path):
    """Two sections whose raw data is the same file range: the Windows loader maps
    that range twice, and so does pehp (a sane reading, not an error)."""
    d = _image()
    rdata = section_index(d, ".rdata")
    data_sec = section_index(d, ".data")
    roff = sections(d)[rdata][3]
    struct.pack_into("<I", d, pe_layout(d).sec(data_sec) + 20, roff)
    p = tmp_path / "overlap.dll"
    p.write_bytes(d)
    r = run_pehp("info", p, "--json")
    assert r.returncode == 0, r.stderr
    _bounded(r)
    doc = json.loads(r.stdout)
    assert [s["name"] for s in doc["sections"]] == [s[0] for s in sections(d)]
    from pehotpatch.image.pe_reader import parse_pe

    img = parse_pe(bytes(d), "overlap.dll")
    assert img.read(img.section_named(".data").rva, 64) == img.read(img.section_named(".rdata").rva, 64)


# ---- PDB cases --------------------------------------------------------------------------
def _pdb_pair(tmp_path: Path) -> tuple[Path, Path, bytearray]:
    dll = tmp_path / "base.dll"
    shutil.copyfile(TYPES / "base.dll", dll)
    return dll, tmp_path / "base.pdb", bytearray((TYPES / "base.pdb").read_bytes())


def _global_type(name: str) -> int:
    pdb = load_pdb(TYPES / "base.pdb")
    return next(g.type_index for g in pdb.globals_ if g.name == name)


def _tpi_record_pos(ti: int) -> int:
    """Offset of type record ``ti`` (its length field) inside the TPI stream."""
    recs = load_pdb(TYPES / "base.pdb").types.types
    assert recs is not None
    loc = recs.locate(ti)
    assert loc is not None
    return loc[1] - 4


def _retarget(d: bytearray, ti: int, field_offset: int, target: int, kind: int) -> None:
    pos = _tpi_record_pos(ti)
    assert struct.unpack_from("<H", stream(d, 2), pos + 2)[0] == kind
    patch_stream(d, 2, pos + 4 + field_offset, struct.pack("<I", target))


def modifier_cycle(d: bytearray) -> None:
    ti = _global_type("g_last_error")  # volatile unsigned int: an LF_MODIFIER
    _retarget(d, ti, 0, ti, T.LF_MODIFIER)


def array_cycle(d: bytearray) -> None:
    ti = _global_type("crc32_nibble")  # const unsigned int[16]: an LF_ARRAY
    _retarget(d, ti, 0, ti, T.LF_ARRAY)


def pointer_cycle(d: bytearray) -> None:
    pdb = load_pdb(TYPES / "base.pdb")
    arr = pdb.types.record(_global_type("kind_names"))  # const char *const[4]
    ptr = arr.element_type  # char *const: an LF_POINTER with the const attribute
    _retarget(d, ptr, 0, ptr, T.LF_POINTER)


def struct_contains_itself(d: bytearray) -> None:
    """The first member of struct pehp_ring is given the type pehp_ring (by value)."""
    pdb = load_pdb(TYPES / "base.pdb")
    ti = _global_type("g_ring")
    rec = pdb.types.record(ti)
    pos = _tpi_record_pos(rec.field_list)
    body = stream(d, 2)[pos + 4 : pos + 8]
    assert struct.unpack_from("<H", body)[0] == 0x150D  # LF_MEMBER first
    patch_stream(d, 2, pos + 4 + 4, struct.pack("<I", ti))


def _dbi_modules(d: bytes):
    return parse_dbi(stream(d, 3)).modules


def proc_sizes_4g(d: bytearray) -> None:
    """Every procedure claims 4 GiB of code (clipped to .text, overlapping)."""
    for m in _dbi_modules(d):
        if not m.has_symbols:
            continue
        data = stream(d, m.sym_stream)
        for pos, kind, _end in iter_records(data, 4, m.sym_byte_size):
            if kind in PROC_KINDS:
                patch_stream(d, m.sym_stream, pos + 4 + 12, struct.pack("<I", 0xFFFFFFFF))


def module_record_oversized(d: bytearray) -> None:
    m = next(m for m in _dbi_modules(d) if m.has_symbols)
    patch_stream(d, m.sym_stream, 4, struct.pack("<H", 0xFFFF))


def public_record_oversized(d: bytearray) -> None:
    dbi = parse_dbi(stream(d, 3))
    srs = dbi.header.sym_record_stream
    data = stream(d, srs)
    pos = next(p for p, k, _e in iter_records(data, 0, len(data)) if k == S_PUB32)
    patch_stream(d, srs, pos, struct.pack("<H", 0xFFF0))


def module_symbol_size(d: bytearray) -> None:
    """A module claims 2^31 bytes of symbols."""
    dbi = parse_dbi(stream(d, 3))
    assert dbi.modules[0].has_symbols
    patch_stream(d, 3, 64 + 4 + 28 + 4, struct.pack("<I", 0x7FFFFFFF))  # modi0 SymByteSize


def stream_count(d: bytearray) -> bytearray:
    lay = msf_layout(d)
    bs = lay.block_size
    first_dir_block = lay.dir_blocks[0]
    out = bytearray(d)
    struct.pack_into("<I", out, first_dir_block * bs, 0x7FFFFFFF)
    return out


def stream_size_2g(d: bytearray) -> bytearray:
    lay = msf_layout(d)
    sizes = list(lay.sizes)
    sizes[2] = 0x7FFFFFFF  # TPI claims 2 GiB; its block list stays as it was
    return write_directory(d, sizes, lay.blocks)


def stream_blocks_repeated(d: bytearray) -> bytearray:
    """The TPI stream lists one block 200 000 times (a 800 MiB stream from 800 KiB)."""
    lay = msf_layout(d)
    sizes, blocks = list(lay.sizes), [list(b) for b in lay.blocks]
    n = 200_000
    sizes[2] = n * lay.block_size
    blocks[2] = [blocks[2][0]] * n
    return write_directory(d, sizes, blocks)


def directory_size(d: bytearray) -> bytearray:
    out = bytearray(d)
    struct.pack_into("<I", out, 32 + 12, 0xFFFFFFF0)
    return out


def block_count(d: bytearray) -> bytearray:
    out = bytearray(d)
    struct.pack_into("<I", out, 32 + 8, 0xFFFFFFFF)
    return out


PDB_ERRORS: dict[str, tuple[Callable, str]] = {
    "modifier-cycle": (modifier_cycle, r"type 0x[0-9a-f]+: .*deeper than 96 \(cycle\?\)"),
    "array-cycle": (array_cycle, r"type 0x[0-9a-f]+: .*deeper than 96 \(cycle\?\)"),
    "pointer-cycle": (pointer_cycle, r"type 0x[0-9a-f]+: .*deeper than 96 \(cycle\?\)"),
    "struct-contains-itself": (struct_contains_itself, r"type 0x[0-9a-f]+ contains itself by value"),
    "module-record-oversized": (module_record_oversized, r"symbol record at offset 0x4 has bad length 65535"),
    "public-record-oversized": (public_record_oversized, r"symbol record at offset 0x[0-9a-f]+ has bad length 65520"),
    "module-symbol-size": (module_symbol_size, r"module 0 \(.*\): symbol size 2147483647 does not fit its stream .*"),
    "stream-count": (stream_count, r"MSF directory: 2147483647 streams do not fit in \d+ bytes"),
    "stream-size-2g": (stream_size_2g, r"MSF directory: stream block lists run past the end of the directory"),
    "stream-blocks-repeated": (stream_blocks_repeated, r"MSF directory: streams claim \d+ blocks, the file has \d+"),
    "directory-size": (directory_size, r"MSF stream directory size 4294967280 is invalid"),
    "block-count": (block_count, r"MSF block count 4294967295 does not fit a file of \d+ bytes"),
}


@pytest.mark.parametrize("case", sorted(PDB_ERRORS))
def test_crafted_pdb_is_one_line_exit_2(case, tmp_path):
    mutate, message = PDB_ERRORS[case]
    dll, pdb, d = _pdb_pair(tmp_path)
    d = mutate(d) or d
    pdb.write_bytes(d)
    _one_line_error(run_pehp("info", dll, "--pdb", pdb), pdb, message)


def test_overlapping_procedures_are_refused_before_decoding(tmp_path):
    """Every procedure claims 4 GiB: together they claim the code many times over, which
    would make the differ decode it once per procedure."""
    base, pdb, d = _pdb_pair(tmp_path)
    proc_sizes_4g(d)
    pdb.write_bytes(d)
    new = tmp_path / "new.dll"
    shutil.copyfile(base, new)
    shutil.copyfile(pdb, tmp_path / "new.pdb")
    r = run_pehp("diff", base, new, "--pdb-base", pdb, "--pdb", tmp_path / "new.pdb")
    _one_line_error(r, pdb, r"functions claim 0x[0-9a-f]+ bytes of code in section '\.text' of "
                    r"0x[0-9a-f]+ bytes \(overlapping or oversized procedure records\)")


def test_pointer_to_struct_through_its_own_field_list_is_fine(tmp_path):
    """LF_POINTER -> LF_STRUCTURE -> field list -> pointer to the same struct is an
    ordinary linked list: names stop at the struct's name, the run succeeds."""
    dll, pdb, d = _pdb_pair(tmp_path)
    types = load_pdb(TYPES / "base.pdb").types
    ring = _global_type("g_ring")
    ptr_to_ring = next(ti for ti in range(0x1000, types.types.end_index)
                       if isinstance(types.record(ti), PointerRecord)
                       and types.resolve(types.record(ti).referent_type) == ring)
    fl = _tpi_record_pos(types.record(ring).field_list)
    patch_stream(d, 2, fl + 4 + 4, struct.pack("<I", ptr_to_ring))  # first member: ring *
    pdb.write_bytes(d)
    r = run_pehp("info", dll, "--pdb", pdb, "--json")
    assert r.returncode == 0, r.stderr
    _bounded(r)
    g = next(g for g in json.loads(r.stdout)["symbols"]["globals"] if g["name"] == "g_ring")
    assert g["type"] == "struct pehp_ring" and g["contains_pointers"] is True


# ---- object files -----------------------------------------------------------------------
def _objects(tmp_path: Path, mutate: Callable[[bytearray], None]) -> tuple[Path, Path, Path]:
    objs = tmp_path / "objs"
    shutil.copytree(TYPES / "base.objs", objs)
    obj = objs / "pehplib.obj"
    d = bytearray(obj.read_bytes())
    mutate(d)
    obj.write_bytes(d)
    dll = tmp_path / "base.dll"
    shutil.copyfile(TYPES / "base.dll", dll)
    shutil.copyfile(TYPES / "base.pdb", tmp_path / "base.pdb")
    return dll, objs, obj


def _obj_sections(d: bytes) -> list[tuple[int, int, int]]:
    """(header offset, raw size, raw pointer) of every section of a regular object."""
    nsec, = struct.unpack_from("<H", d, 2)
    opt, = struct.unpack_from("<H", d, 16)
    out = []
    for i in range(nsec):
        h = 20 + opt + 40 * i
        rsize, rptr = struct.unpack_from("<II", d, h + 16)
        out.append((h, rsize, rptr))
    return out


def obj_raw_overlap(d: bytearray) -> None:
    """Every section's raw data is the whole file."""
    for h, _rsize, _rptr in _obj_sections(d):
        chars, = struct.unpack_from("<I", d, h + 36)
        if not chars & 0x80:
            struct.pack_into("<II", d, h + 16, len(d), 0)


def obj_reloc_count(d: bytearray) -> None:
    h, _rsize, _rptr = next(s for s in _obj_sections(d) if s[1])
    struct.pack_into("<H", d, h + 32, 0xFFFF)
    chars, = struct.unpack_from("<I", d, h + 36)
    struct.pack_into("<I", d, h + 36, chars | 0x01000000)  # extended count in the first record
    struct.pack_into("<I", d, h + 24, 0)  # ... at file offset 0 ("\x64\x86\x0a\x00" = big)


OBJECT_ERRORS: dict[str, tuple[Callable, str]] = {
    "raw-overlap": (obj_raw_overlap, r"section \d+ \(.*\): section raw data overlaps \(totals \d+ bytes in a file of \d+\)"),
    "reloc-count": (obj_reloc_count, r"section \d+ \(.*\): \d+ relocations at 0xa run past the end"),
}


@pytest.mark.parametrize("case", sorted(OBJECT_ERRORS))
def test_crafted_object_is_one_line_exit_2(case, tmp_path):
    mutate, message = OBJECT_ERRORS[case]
    dll, objs, obj = _objects(tmp_path, mutate)
    _one_line_error(run_pehp("info", dll, "--objects", objs), obj, message)


def test_oversized_input_is_refused_before_reading(tmp_path):
    """A sparse 3 GiB file: refused by its size (fstat), never read."""
    p = tmp_path / "huge.dll"
    with open(p, "wb") as fh:
        fh.write((IMPORTS / "intermediate.dll").read_bytes())
        fh.truncate(3 * 1024**3)
    _one_line_error(run_pehp("info", p), p,
                    r"PE image of 3221225472 bytes is larger than the limit \(2 GiB\)")
