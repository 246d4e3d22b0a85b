"""Corrupt PDBs and object files: only InputError / FormatError may escape.

Hypothesis flips, overwrites and truncates bytes of the committed sample PDB and object
(mostly inside the bytes the readers actually use: the PDB's stream blocks, directory
and superblock), then loads the result and walks every type it can reach.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pehotpatch.errors import FormatError, InputError
from pehotpatch.image.coff import parse_object
from pehotpatch.image.pdb import _load
from pehotpatch.image.pdb.msf import Msf

DATA = Path(__file__).resolve().parent / "data" / "pdb"
PDB = (DATA / "sample_x64.pdb").read_bytes()
OBJ = (DATA / "sample_x64.obj").read_bytes()


def _used_pdb_offsets(data: bytes) -> list[int]:
    msf = Msf(data)
    bs = msf.block_size
    sb = msf.superblock
    offs = list(range(32, 56)) + list(range(sb.block_map_addr * bs, sb.block_map_addr * bs + 8))
    for i in range(msf.num_streams):
        size = msf.stream_sizes[i]
        for j, b in enumerate(msf.stream_blocks(i)):
            offs += range(b * bs, b * bs + min(bs, size - j * bs))
    return offs


PDB_OFFSETS = _used_pdb_offsets(PDB)
INTERESTING_WORDS = [
    0,
    1,
    2,
    4,
    0x7F,
    0x80,
    0xFF,
    0x1000,
    0x1001,
    0x1003,
    0x7FFF,
    0x8000,
    0x8004,
    0xFFFF,
    0x10000,
    0x7FFFFFFF,
    0xFFFFFFFF,
]


def _walk_types(table) -> None:
    if table is None or table.types is None:
        return
    for ti in range(
        table.types.first_index, min(table.types.end_index, table.types.first_index + 300)
    ):
        table.type_name(ti)
        table.type_size(ti)
        table.layout(ti)
        table.contains_pointers(ti)
        table.is_const(ti)
        table.id_name(ti)
        table.procedure_signature(ti, True, "f")
    table.udt_by_name("ring")


def load_pdb_bytes(data: bytes) -> None:
    pdb = _load(Msf(data, "fuzz.pdb"), "fuzz.pdb")
    _walk_types(pdb.types)
    for p in pdb.procedures:
        assert isinstance(p.name, str)


def load_obj_bytes(data: bytes) -> None:
    obj = parse_object(data, "fuzz.obj")
    _walk_types(obj.types)


edit = st.tuples(
    st.integers(min_value=0, max_value=10**9),  # position (reduced modulo the target)
    st.sampled_from(["flip", "byte", "word"]),
    st.integers(min_value=0, max_value=len(INTERESTING_WORDS) * 8 - 1),
)


def apply(data: bytes, edits, offsets: list[int] | None, cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, how, v in edits:
        i = offsets[pos % len(offsets)] if offsets else pos % len(b)
        if how == "flip":
            b[i] ^= 1 << (v % 8)
        elif how == "byte":
            b[i] = INTERESTING_WORDS[v % len(INTERESTING_WORDS)] & 0xFF
        else:
            word = struct.pack("<I", INTERESTING_WORDS[v % len(INTERESTING_WORDS)])
            b[i : i + 4] = word[: len(b) - i]
    if cut is not None:
        del b[cut % (len(b) + 1) :]
    return bytes(b)


FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def _only_input_errors(fn, data: bytes) -> None:
    try:
        fn(data)
    except InputError:
        pass


@FUZZ
@given(edits=st.lists(edit, min_size=1, max_size=6), cut=st.none() | st.integers(0, 10**9))
def test_corrupt_pdb_raises_only_input_errors(edits, cut):
    _only_input_errors(
        load_pdb_bytes, apply(PDB, edits, PDB_OFFSETS, cut if cut and cut % 7 == 0 else None)
    )


@FUZZ
@given(edits=st.lists(edit, min_size=1, max_size=6), cut=st.none() | st.integers(0, 10**9))
def test_corrupt_object_raises_only_input_errors(edits, cut):
    _only_input_errors(
        load_obj_bytes, apply(OBJ, edits, None, cut if cut and cut % 7 == 0 else None)
    )


@pytest.mark.parametrize("cut", [0, 31, 56, 4096, 4100, len(PDB) // 2, len(PDB) - 1])
def test_truncated_pdb(cut):
    with pytest.raises(InputError):
        load_pdb_bytes(PDB[:cut])


def test_unmodified_inputs_load():
    load_pdb_bytes(PDB)
    load_obj_bytes(OBJ)


def _stream_offset(data: bytes, stream: int, pos: int) -> int:
    msf = Msf(data)
    return msf.stream_blocks(stream)[pos // msf.block_size] * msf.block_size + pos % msf.block_size


def test_type_cycle_in_real_pdb_is_format_error():
    """Point LF_POINTER 0x1003 (struct ring *) at itself: naming it must not hang."""
    msf = Msf(PDB)
    tpi = msf.stream(2)
    header_size = struct.unpack_from("<I", tpi, 4)[0]
    pos = header_size
    ti = 0x1000
    while True:
        reclen, kind = struct.unpack_from("<HH", tpi, pos)
        if kind == 0x1002:  # the first LF_POINTER
            break
        pos += 2 + reclen
        ti += 1
    b = bytearray(PDB)
    struct.pack_into("<I", b, _stream_offset(PDB, 2, pos + 4), ti)
    with pytest.raises(FormatError, match="cycle"):
        load_pdb_bytes(bytes(b))


def test_corrupt_module_stream_signature():
    msf = Msf(PDB)
    from pehotpatch.image.pdb.dbi import parse_dbi

    mod = parse_dbi(msf.stream(3)).modules[0]
    b = bytearray(PDB)
    struct.pack_into("<I", b, _stream_offset(PDB, mod.sym_stream, 0), 2)
    with pytest.raises(FormatError, match="only C13"):
        load_pdb_bytes(bytes(b))
