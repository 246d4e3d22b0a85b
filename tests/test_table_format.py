"""The hot-patch table's encoding, byte for byte against words written out by hand from the
format (docs/FORMAT.md), the strict decoder's named violations, and verify on a table with
any one byte flipped."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pehotpatch.image.pe_reader import parse_pe
from pehotpatch.table.decode import read_table
from pehotpatch.table.format import ABSOLUTE, CALL_TARGET, FUNCTION, INDIRECT
from pehotpatch.table.model import Chunk, HotPatchTable, Record, encode

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "x64" / "fix_globals"


def words(*w: int) -> bytes:
    return struct.pack(f"<{len(w)}I", *w)


def head(size: int) -> bytes:
    """IMAGE_HOT_PATCH_INFO v4 of ``size`` bytes, the base list, IMAGE_HOT_PATCH_BASE."""
    return (words(4, size, 3, 0x24, 1, 0, 1, 0, 0) + words(0x28)
            + words(3, 0x10, 0x11223344, 0x55667788, 0, 0, 0x48, 0))


def table(*chunks: Chunk) -> HotPatchTable:
    return HotPatchTable(sequence=3, base_timestamp=0x11223344, base_checksum=0x55667788, base_flags=0x10,
                         chunks=list(chunks))


@pytest.mark.parametrize("chunk, body", [
    (Chunk(ABSOLUTE, True, (Record(0x2000, 0x3000),)), words(0x8002C001, 0x2000, 0x3000, 0)),
    (Chunk(INDIRECT, True, (Record(0x2100, 0x4100),)), words(0x8005C001, 0x2100, 0x4100, 0)),
    (Chunk(FUNCTION, True, (Record(0x1100, 0x1200, (0xAABBCCDD,)),)), words(0x8001C001, 0x1100, 0x1200, 0xAABBCCDD)),
    (Chunk(CALL_TARGET, True, (Record(0x1300, 0x1400),)), words(0x80044001, 0x1300, 0x1400, 0)),
    (Chunk(FUNCTION, False, (Record(0x1010, 0x1020, (0x57569066,)),)), words(0x0001C001, 0x1010, 0x1020, 0x57569066)),
], ids=["inverse-absolute", "inverse-indirect", "inverse-function", "inverse-call-target", "function"])
def test_golden_one_record_kind(chunk, body):
    size = 72 + len(body) + 4
    assert encode(table(chunk)) == head(size) + body + words(0)


def test_golden_whole_table_and_two_records_per_chunk():
    t = table(Chunk(ABSOLUTE, True, (Record(0x2000, 0x3000), Record(0x2008, 0x3010))),
              Chunk(FUNCTION, False, (Record(0x1010, 0x1020, (0x9066,)),)))
    want = head(0x48 + 4 + 24 + 4 + 12 + 4) + words(0x8002C002, 0x2000, 0x3000, 0, 0x2008, 0x3010, 0) \
        + words(0x0001C001, 0x1010, 0x1020, 0x9066) + words(0)
    assert encode(t) == want


def test_empty_table_is_header_and_terminator():
    assert encode(table()) == head(0x4C) + words(0)


@pytest.fixture(scope="module")
def final(tmp_path_factory):
    from pehotpatch.api import emit_final

    out = tmp_path_factory.mktemp("t") / "final.dll"
    emit_final(SAMPLE / "base.dll", SAMPLE / "intermediate.dll", out,
               functions_file=SAMPLE / "hotpatch_functions.txt", objects=SAMPLE / "intermediate.objs")
    return out


def with_table(final: Path, mutate) -> bytes:
    data = bytearray(final.read_bytes())
    img = parse_pe(bytes(data))
    rd = read_table(img)
    off = img.rva_to_offset(rd.rva)
    raw = bytearray(rd.raw)
    mutate(raw)
    data[off:off + len(raw)] = raw
    return bytes(data)


def violations(data: bytes) -> set[str]:
    return {v.code for v in read_table(parse_pe(data)).violations}


def test_decode_round_trip(final):
    rd = read_table(parse_pe(final.read_bytes()))
    assert rd.valid and rd.table is not None
    assert encode(rd.table) == rd.raw


@pytest.mark.parametrize("mutate, code", [
    (lambda r: struct.pack_into("<I", r, 8, 0), "sequence-zero"),
    (lambda r: struct.pack_into("<I", r, 0, 5), "version"),
    (lambda r: struct.pack_into("<I", r, 0x10, 2), "base-count"),
    (lambda r: struct.pack_into("<I", r, 0x48, struct.unpack_from("<I", r, 0x48)[0] | 0x1000), "reserved-bits"),
    (lambda r: struct.pack_into("<I", r, 0x48, struct.unpack_from("<I", r, 0x48)[0] | 0x40000000), "obligatory-chunk"),
    (lambda r: struct.pack_into("<I", r, 0x48, struct.unpack_from("<I", r, 0x48)[0] & 0x7FFFFFFF), "forward-not-function"),
    (lambda r: struct.pack_into("<I", r, len(r) - 4, 0xFFFFFFFF), "chunk-bounds"),
    (lambda r: struct.pack_into("<I", r, 0x2C, 0x8), "machine-flag"),
    (lambda r: struct.pack_into("<I", r, 0x20, 0x80), "unknown-info-flags"),
], ids=["sequence", "version", "base-count", "reserved", "obligatory", "forward-absolute", "no-terminator",
        "machine", "info-flags"])
def test_decoder_names_each_broken_rule(final, mutate, code):
    assert code in violations(with_table(final, mutate))


@pytest.fixture(scope="module")
def verifier(final):
    """verify_table against a fresh plan, computed once; returns findings for given bytes."""
    from pehotpatch.api import diff_pair, plan_diff
    from pehotpatch.image.pe_reader import load_pe
    from pehotpatch.verify import verify_table

    d = diff_pair(SAMPLE / "base.dll", SAMPLE / "intermediate.dll",
                  functions_file=SAMPLE / "hotpatch_functions.txt", objects=SAMPLE / "intermediate.objs")
    plan = plan_diff(d)
    base = load_pe(SAMPLE / "base.dll")

    def run(data: bytes):
        return verify_table(parse_pe(data, "final.dll"), base, d, plan)

    assert run(final.read_bytes()).ok
    return run


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_flipped_table_byte_fails_verify(final, verifier, pos, flip):
    size = read_table(parse_pe(final.read_bytes())).size
    p = pos % size
    data = with_table(final, lambda r: r.__setitem__(p, r[p] ^ flip))
    res = verifier(data)
    assert not res.ok, f"byte {p:#x} ^ {flip:#x} went unnoticed"
    assert all(f.code and f.message for f in res.findings)


def test_every_table_byte_flipped_once(final, verifier):
    """Exhaustively: each of the table's bytes, flipped, gives a finding."""
    size = read_table(parse_pe(final.read_bytes())).size
    for p in range(size):
        assert not verifier(with_table(final, lambda r, p=p: r.__setitem__(p, r[p] ^ 0x01))).ok, hex(p)
