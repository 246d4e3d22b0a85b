"""`pehp simulate` catches purpose-broken tables: the encoded table bytes of a real final
image (emit_final on a sample) edited one way at a time.

The table is located with pefile (an independent reader) and walked here from the
format (docs/FORMAT.md): IMAGE_HOT_PATCH_INFO, the base descriptor, chunks of records
of (2 + ExtraPatchSize) ULONGs, a ULONG 0.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import pefile
import pytest
from conftest import SAMPLES
from test_simulate_samples import calls_of, finals  # noqa: F401  (fixture)

from pehotpatch.emulate.results import (
    F_MISSING_BACKWARD,
    F_PATCH_STATE,
    F_REF_UNBOUND,
    F_REFUSED,
    F_WRONG_FUNCTION,
)
from pehotpatch.emulate.simulate import simulate

ARCHES = ["x64", "x86", "arm64"]
INVERSE = 0x80000000
FUNCTION, ABSOLUTE = 0x1C000, 0x2C000


@dataclass
class Rec:
    offset: int  # file offset of word 0
    words: tuple[int, ...]


@dataclass
class ChunkAt:
    offset: int  # file offset of the header
    type: int
    inverse: bool
    records: list[Rec]


@dataclass
class TableAt:
    offset: int  # file offset of IMAGE_HOT_PATCH_INFO
    size: int
    stride: int  # words per record
    chunks: list[ChunkAt]

    def records(self, rtype: int, inverse: bool) -> list[Rec]:
        return [r for c in self.chunks if c.type == rtype and c.inverse == inverse for r in c.records]


def locate(data: bytes) -> TableAt:
    pe = pefile.PE(data=data, fast_load=True)
    pe.parse_data_directories([pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_LOAD_CONFIG"]])
    rva = pe.DIRECTORY_ENTRY_LOAD_CONFIG.struct.HotPatchTableOffset
    off = pe.get_offset_from_rva(rva)
    version, size, _seq, blist = struct.unpack_from("<4I", data, off)
    assert version == 4
    extra = struct.unpack_from("<I", data, off + 0x18)[0]
    base = struct.unpack_from("<I", data, off + blist)[0]
    pos = off + struct.unpack_from("<I", data, off + base + 0x18)[0]
    stride = 2 + extra
    chunks = []
    while (hdr := struct.unpack_from("<I", data, pos)[0]) != 0:
        n = hdr & 0xFFF
        recs = [Rec(pos + 4 + 4 * stride * i, struct.unpack_from(f"<{stride}I", data, pos + 4 + 4 * stride * i))
                for i in range(n)]
        chunks.append(ChunkAt(pos, hdr & 0x000FC000, bool(hdr & INVERSE), recs))
        pos += 4 + 4 * stride * n
    assert pos + 4 - off == size
    return TableAt(off, size, stride, chunks)


def set_word(data: bytearray, rec: Rec, i: int, value: int) -> None:
    struct.pack_into("<I", data, rec.offset + 4 * i, value)


def drop(data: bytearray, t: TableAt, rec: Rec) -> None:
    """Remove one record: the chunk's count goes down (the chunk goes when empty), the
    rest of the table moves up, Size shrinks."""
    chunk = next(c for c in t.chunks if rec in c.records)
    end = t.offset + t.size
    cut_at, cut = rec.offset, 4 * t.stride
    if len(chunk.records) == 1:
        cut_at, cut = chunk.offset, 4 + 4 * t.stride
    else:
        hdr = struct.unpack_from("<I", data, chunk.offset)[0]
        struct.pack_into("<I", data, chunk.offset, hdr - 1)
    data[cut_at:end] = data[cut_at + cut:end] + b"\0" * cut
    struct.pack_into("<I", data, t.offset + 4, t.size - cut)


def broken(final: Path, tmp: Path, name: str, edit) -> Path:
    data = bytearray(final.read_bytes())
    edit(data, locate(bytes(data)))
    out = tmp / f"{name}.dll"
    out.write_bytes(bytes(data))
    return out


def simulate_sample(d: Path, final: Path, **kw):
    return simulate(d / "base.dll", final, calls_of(d), pdb_final=d / "intermediate.pdb", **kw)


def kinds(r) -> set[str]:
    return {f.kind for f in r.findings}


def test_the_unbroken_tables_read_here_as_emitted(finals):  # noqa: F811
    for arch in ARCHES:
        t = locate((finals(SAMPLES / arch / "fix_globals")).read_bytes())
        assert [(c.type, c.inverse, len(c.records)) for c in t.chunks] == [
            (ABSOLUTE, True, 5), (FUNCTION, True, 3), (FUNCTION, False, 1)]


# ------------------------------------------------------------- a backward record dropped


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("scenario", ["fix_globals", "fix_calls_unchanged"])
def test_dropped_backward_record(arch: str, scenario: str, finals, tmp_path: Path):  # noqa: F811
    d = SAMPLES / arch / scenario
    final = finals(d)
    backward = locate(final.read_bytes()).records(FUNCTION, True)
    assert backward
    for i in range(len(backward)):
        bad = broken(final, tmp_path, f"drop{i}",
                     lambda data, t, i=i: drop(data, t, t.records(FUNCTION, True)[i]))
        r = simulate_sample(d, bad)
        assert F_MISSING_BACKWARD in kinds(r), (i, [f.message for f in r.findings])


@pytest.mark.parametrize("arch", ARCHES)
def test_dropped_backward_record_is_seen_running(arch: str, finals, tmp_path: Path):  # noqa: F811
    """fix_globals' telemetry_record calls every unchanged callee on each call: the code
    hook sees the patch image's copy run."""
    d = SAMPLES / arch / "fix_globals"
    bad = broken(finals(d), tmp_path, "drop", lambda data, t: drop(data, t, t.records(FUNCTION, True)[0]))
    r = simulate_sample(d, bad)
    ran = [f for f in r.findings if f.kind == F_MISSING_BACKWARD and f.call is not None]
    assert ran and "ran" in ran[0].message


# ------------------------------------------------------------- a __ref_ slot left on the patch


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("scenario", ["fix_globals", "fix_calls_unchanged"])
def test_ref_slot_left_on_the_patch_image(arch: str, scenario: str, finals, tmp_path: Path):  # noqa: F811
    d = SAMPLES / arch / scenario
    final = finals(d)
    n = len(locate(final.read_bytes()).records(ABSOLUTE, True))
    assert n
    for i in range(n):
        bad = broken(final, tmp_path, f"ref{i}",
                     lambda data, t, i=i: drop(data, t, t.records(ABSOLUTE, True)[i]))
        r = simulate_sample(d, bad)
        assert F_REF_UNBOUND in kinds(r), i
        if scenario == "fix_globals":  # telemetry_record touches every one of its globals
            assert F_PATCH_STATE in kinds(r), (i, [f.message for f in r.findings])


@pytest.mark.parametrize("arch", ARCHES)
def test_ref_slot_pointed_at_another_base_global(arch: str, finals, tmp_path: Path):  # noqa: F811
    """Swapping the targets of two __ref_ bindings keeps every slot in the base, but the
    patched code then updates the wrong globals: the results differ from the
    intermediate's."""
    d = SAMPLES / arch / "fix_globals"

    def edit(data: bytearray, t: TableAt) -> None:
        a, b = t.records(ABSOLUTE, True)[:2]
        set_word(data, a, 1, b.words[1])
        set_word(data, b, 1, a.words[1])

    r = simulate_sample(d, broken(finals(d), tmp_path, "swapref", edit))
    assert "result-mismatch" in kinds(r) or "fault" in kinds(r)


# ------------------------------------------------------------- first bytes corrupted


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("scenario", ["body_fix", "fix_globals", "fix_calls_unchanged"])
def test_corrupt_first_bytes_is_refused(arch: str, scenario: str, finals, tmp_path: Path):  # noqa: F811
    d = SAMPLES / arch / scenario
    final = finals(d)
    t0 = locate(final.read_bytes())
    funcs = [(c.inverse, i) for c in t0.chunks if c.type == FUNCTION for i in range(len(c.records))]
    for inverse, i in funcs:
        def edit(data: bytearray, t: TableAt, inverse=inverse, i=i) -> None:
            rec = t.records(FUNCTION, inverse)[i]
            set_word(data, rec, 2, rec.words[2] ^ 0x0101)

        r = simulate_sample(d, broken(final, tmp_path, f"bytes{int(inverse)}{i}", edit))
        assert kinds(r) == {F_REFUSED}, [f.message for f in r.findings]
        assert "first bytes" in r.patches[0].refused
        # nothing was applied: every call gives the base's result
        assert [row.patched.outcome() for row in r.calls] == [row.base.outcome() for row in r.calls]


# ------------------------------------------------------------- FUNCTION targets swapped


@pytest.mark.parametrize("arch", ARCHES)
def test_swapped_function_targets(arch: str, finals, tmp_path: Path):  # noqa: F811
    """Two backward records of fix_globals with their base targets exchanged: each copy
    is sent to the other function."""
    d = SAMPLES / arch / "fix_globals"

    def edit(data: bytearray, t: TableAt) -> None:
        a, b = t.records(FUNCTION, True)[:2]
        set_word(data, a, 1, b.words[1])
        set_word(data, b, 1, a.words[1])

    r = simulate_sample(d, broken(finals(d), tmp_path, "swap", edit))
    wrong = [f for f in r.findings if f.kind == F_WRONG_FUNCTION]
    assert len(wrong) == 2, [f.message for f in r.findings]


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("scenario", ["body_fix", "fix_globals", "fix_calls_unchanged"])
def test_forward_record_to_the_wrong_function(arch: str, scenario: str, finals, tmp_path: Path):  # noqa: F811
    """The forward record's patch target moved to another exported function of the patch
    image (its first bytes still match the base's function): reported, and the calls of
    the redirected function no longer agree with the intermediate."""
    d = SAMPLES / arch / scenario
    final = finals(d)
    pe = pefile.PE(str(final), fast_load=True)
    pe.parse_data_directories([pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_EXPORT"]])
    other = next(e.address for e in pe.DIRECTORY_ENTRY_EXPORT.symbols if e.name == b"pehp_version")

    def edit(data: bytearray, t: TableAt) -> None:
        set_word(data, t.records(FUNCTION, False)[0], 1, other)

    r = simulate_sample(d, broken(final, tmp_path, "wrong", edit))
    assert F_WRONG_FUNCTION in kinds(r)
    assert "result-mismatch" in kinds(r)


# ------------------------------------------------------------- the base's identity


@pytest.mark.parametrize("arch", ARCHES)
def test_table_for_another_base_is_refused(arch: str, finals, tmp_path: Path):  # noqa: F811
    d = SAMPLES / arch / "body_fix"

    def edit(data: bytearray, t: TableAt) -> None:
        base_off = t.offset + struct.unpack_from("<I", data, t.offset + struct.unpack_from("<I", data, t.offset + 12)[0])[0]
        ts = struct.unpack_from("<I", data, base_off + 8)[0]
        struct.pack_into("<I", data, base_off + 8, ts ^ 1)

    r = simulate_sample(d, broken(finals(d), tmp_path, "ident", edit))
    assert kinds(r) == {F_REFUSED} and "TimeDateStamp" in r.patches[0].refused
