"""`pehp simulate` on mutated final images: no crash (a result, or a one-line PehpError)
and bounded time (an instruction budget per call).

The mutations are seeded and repeatable: bytes of the hot-patch table (most cases),
of the headers and load config, of the patched code, and truncations.  A failure names
the seed, the sample and the edits so that it can be replayed.
"""

from __future__ import annotations

import random
import struct
import time
from pathlib import Path

import pefile
import pytest
from conftest import SAMPLES
from test_simulate_samples import calls_of, finals  # noqa: F401  (fixture)

from pehotpatch.emulate.simulate import simulate
from pehotpatch.errors import PehpError

CASES = 60  # per sample
BUDGET = 20_000
SAMPLE_IDS = ["x64/fix_globals", "x86/fix_calls_unchanged", "arm64/fix_globals", "x64/body_fix"]


def regions(data: bytes) -> dict[str, tuple[int, int]]:
    """File ranges to mutate: the table, the headers, the code section."""
    pe = pefile.PE(data=data, fast_load=True)
    pe.parse_data_directories([pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_LOAD_CONFIG"]])
    rva = pe.DIRECTORY_ENTRY_LOAD_CONFIG.struct.HotPatchTableOffset
    toff = pe.get_offset_from_rva(rva)
    size = struct.unpack_from("<I", data, toff + 4)[0]
    text = next(s for s in pe.sections if s.Name.rstrip(b"\0") == b".text")
    return {"table": (toff, toff + size), "headers": (0, pe.OPTIONAL_HEADER.SizeOfHeaders),
            "code": (text.PointerToRawData, text.PointerToRawData + text.SizeOfRawData)}


def mutate(rng: random.Random, data: bytes, where: dict[str, tuple[int, int]]) -> tuple[bytes, list[str]]:
    out = bytearray(data)
    edits: list[str] = []
    if rng.random() < 0.05:
        n = rng.randrange(len(out))
        edits.append(f"truncate {n:#x}")
        return bytes(out[:n]), edits
    for _ in range(rng.randint(1, 4)):
        region = rng.choices(["table", "headers", "code"], weights=[6, 2, 2])[0]
        lo, hi = where[region]
        off = rng.randrange(lo, hi)
        kind = rng.random()
        if kind < 0.4:
            out[off] ^= 1 << rng.randrange(8)
        elif kind < 0.7 and off + 4 <= len(out):
            value = rng.choice([0, 1, 0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0x1000, rng.getrandbits(32)])
            struct.pack_into("<I", out, off & ~3, value)
        else:
            out[off] = rng.getrandbits(8)
        edits.append(f"{region}@{off:#x}={out[off]:#04x}")
    return bytes(out), edits


@pytest.mark.parametrize("sid", SAMPLE_IDS)
def test_mutated_finals_never_crash(sid: str, finals, tmp_path: Path):  # noqa: F811
    d = SAMPLES / sid
    good = finals(d).read_bytes()
    where = regions(good)
    calls = calls_of(d)[:12]
    rng = random.Random(f"simulate:{sid}")
    outcomes = {"result": 0, "error": 0}
    slowest = 0.0
    for i in range(CASES):
        data, edits = mutate(rng, good, where)
        path = tmp_path / f"m{i}.dll"
        path.write_bytes(data)
        start = time.perf_counter()
        try:
            r = simulate(d / "base.dll", path, calls, patch_after=i % 3, undo=bool(i % 2),
                         budget=BUDGET, pdb_final=d / "intermediate.pdb")
            outcomes["result"] += 1
            assert len(r.calls) == len(calls)
        except PehpError as exc:
            outcomes["error"] += 1
            assert "\n" not in str(exc)
        except Exception as exc:  # noqa: BLE001 - the finding this test looks for
            pytest.fail(f"{sid} case {i} {edits}: {type(exc).__name__}: {exc}")
        slowest = max(slowest, time.perf_counter() - start)
    assert outcomes["result"] > CASES // 3  # most mutations still map and run
    assert slowest < 10, slowest
