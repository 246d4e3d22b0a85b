"""A hot patch of real upstream code, applied in the emulator: xxHash 0.8.1 -> 0.8.2.

tools/realcode.py builds the pair from the sdists (the intermediate with the functions
whose object code changed as its hot-patch list); the gate finds it patchable
(docs/REALCODE.md).  Here the final image is written and applied to the running base,
and the hash functions are called on buffers in the base, the patched base and the
intermediate.  XXH32 and XXH64 are also computed by the reference implementation below,
written from the xxHash specification (doc/xxhash_spec.md in the xxHash sources), so
the emulated results are checked against something other than pehp."""

from __future__ import annotations

import pytest
from test_realcode import _built_pair

from pehotpatch.api import check_pair, emit_final, simulate
from pehotpatch.emulate.calls import Buffer
from pehotpatch.emulate.crt import HEAP_BASE
from pehotpatch.image.machine import Machine

M32, M64 = (1 << 32) - 1, (1 << 64) - 1


def _rotl(x: int, r: int, bits: int) -> int:
    m = (1 << bits) - 1
    return ((x << r) | (x >> (bits - r))) & m


def xxh32(data: bytes, seed: int = 0) -> int:
    p1, p2, p3, p4, p5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
    n, i = len(data), 0
    if n >= 16:
        v = [(seed + p1 + p2) & M32, (seed + p2) & M32, seed & M32, (seed - p1) & M32]
        while i + 16 <= n:
            for k in range(4):
                lane = int.from_bytes(data[i + 4 * k:i + 4 * k + 4], "little")
                v[k] = (_rotl((v[k] + lane * p2) & M32, 13, 32) * p1) & M32
            i += 16
        h = (_rotl(v[0], 1, 32) + _rotl(v[1], 7, 32) + _rotl(v[2], 12, 32) + _rotl(v[3], 18, 32)) & M32
    else:
        h = (seed + p5) & M32
    h = (h + n) & M32
    while i + 4 <= n:
        h = (_rotl((h + int.from_bytes(data[i:i + 4], "little") * p3) & M32, 17, 32) * p4) & M32
        i += 4
    while i < n:
        h = (_rotl((h + data[i] * p5) & M32, 11, 32) * p1) & M32
        i += 1
    h ^= h >> 15
    h = (h * p2) & M32
    h ^= h >> 13
    h = (h * p3) & M32
    return h ^ (h >> 16)


def xxh64(data: bytes, seed: int = 0) -> int:
    p1, p2, p3 = 11400714785074694791, 14029467366897019727, 1609587929392839161
    p4, p5 = 9650029242287828579, 2870177450012600261

    def rnd(acc: int, lane: int) -> int:
        return (_rotl((acc + lane * p2) & M64, 31, 64) * p1) & M64

    n, i = len(data), 0
    if n >= 32:
        v = [(seed + p1 + p2) & M64, (seed + p2) & M64, seed & M64, (seed - p1) & M64]
        while i + 32 <= n:
            for k in range(4):
                v[k] = rnd(v[k], int.from_bytes(data[i + 8 * k:i + 8 * k + 8], "little"))
            i += 32
        h = (_rotl(v[0], 1, 64) + _rotl(v[1], 7, 64) + _rotl(v[2], 12, 64) + _rotl(v[3], 18, 64)) & M64
        for k in range(4):
            h = ((h ^ rnd(0, v[k])) * p1 + p4) & M64
    else:
        h = (seed + p5) & M64
    h = (h + n) & M64
    while i + 8 <= n:
        h = (_rotl(h ^ rnd(0, int.from_bytes(data[i:i + 8], "little")), 27, 64) * p1 + p4) & M64
        i += 8
    if i + 4 <= n:
        h = (_rotl(h ^ (int.from_bytes(data[i:i + 4], "little") * p1) & M64, 23, 64) * p2 + p3) & M64
        i += 4
    while i < n:
        h = (_rotl(h ^ (data[i] * p5) & M64, 11, 64) * p1) & M64
        i += 1
    h ^= h >> 33
    h = (h * p2) & M64
    h ^= h >> 29
    h = (h * p3) & M64
    return h ^ (h >> 32)


def test_reference_implementation_known_values():
    """Published values: XXH32("") = 0x02CC5D05, XXH64("") = 0xEF46DB3751D8E999."""
    assert xxh32(b"") == 0x02CC5D05
    assert xxh64(b"") == 0xEF46DB3751D8E999


SIZES = (0, 1, 3, 4, 7, 15, 16, 31, 32, 33, 100, 1000, 4097)


@pytest.mark.network
@pytest.mark.toolchain
def test_xxhash_patch_runs_like_the_new_release(tmp_path):
    _built_pair("xxhash", tmp_path)
    base, inter = tmp_path / "base.dll", tmp_path / "intermediate.dll"
    ff = tmp_path / "hotpatch_functions.txt"
    assert check_pair(base, inter, functions_file=ff).verdict == "patchable"
    final = tmp_path / "final.dll"
    emit_final(base, inter, final, functions_file=ff)
    calls, expected = [], []
    for k, n in enumerate(SIZES):
        data, seed = Buffer("bytes", n, k).content() if n else b"", k * 977
        arg = f"bytes({n}, {k})" if n else "0"
        calls += [f"XXH32({arg}, {n}, {seed})", f"XXH64({arg}, {n}, {seed})", f"XXH3_64bits({arg}, {n})",
                  f"XXH3_64bits_withSeed({arg}, {n}, {seed})"]
        expected += [xxh32(data, seed), xxh64(data, seed), None, None]
    r = simulate(base, final, calls, pdb_final=tmp_path / "intermediate.pdb", undo=True)
    assert r.ok, r.findings
    assert r.patches[0].applied and r.patches[0].records.get("FUNCTION", 0) > 0
    assert r.undo is not None and r.undo.identical
    for row, want in zip(r.calls, expected, strict=True):
        assert row.base.fault is None and row.patched.fault is None
        assert row.patched.outcome() == row.intermediate.outcome() == row.base.outcome(), row.call
        if want is not None:
            assert row.patched.value == want, row.call


@pytest.mark.network
@pytest.mark.toolchain
def test_xxhash_streaming_state_on_the_emulated_heap(tmp_path):
    """XXH32_createState and XXH3_createState allocate through the C runtime's malloc
    (emulate/crt.py): the first block is at the heap's base in every world, XXH3's state
    is 64-byte aligned inside the second; streaming gives the one-shot results."""
    _built_pair("xxhash", tmp_path)
    base, inter = tmp_path / "base.dll", tmp_path / "intermediate.dll"
    final = tmp_path / "final.dll"
    emit_final(base, inter, final, functions_file=tmp_path / "hotpatch_functions.txt")
    s32, s3 = HEAP_BASE[Machine.X64], HEAP_BASE[Machine.X64] + 0x40
    calls = ["XXH32_createState()", f"XXH32_reset({s32}, 5)", f"XXH32_update({s32}, bytes(1000, 1), 1000)",
             f"XXH32_update({s32}, bytes(77, 2), 77)", f"XXH32_digest({s32})",
             "XXH3_createState()", f"XXH3_64bits_reset({s3})", f"XXH3_64bits_update({s3}, bytes(5000, 3), 5000)",
             f"XXH3_64bits_digest({s3})", "XXH3_64bits(bytes(5000, 3), 5000)", f"XXH32_freeState({s32})"]
    r = simulate(base, final, calls, pdb_final=tmp_path / "intermediate.pdb")
    assert r.ok, r.findings
    rows = r.calls
    assert rows[0].patched.value == s32 and rows[5].patched.value == s3
    data = Buffer("bytes", 1000, 1).content() + Buffer("bytes", 77, 2).content()
    assert rows[4].patched.value == rows[4].intermediate.value == xxh32(data, 5)
    assert rows[8].patched.value == rows[9].patched.value == rows[9].intermediate.value
