"""A live hot patch of real upstream code under Wine: xxHash 0.8.1 -> 0.8.2.

The pair is built from the sdists (tools/realcode.py; the gate finds it patchable,
docs/REALCODE.md), pehp writes the final image, and livepatch.exe (tests/wine/livepatch.c)
loads the 0.8.1 DLL with Wine's own loader and C runtime, runs the hash functions in a
thread on data read from a file (PEHP_WINE_DATA, common.h), applies the table while the
thread runs, then undoes it.  Every phase must give the results of the reference
implementation in tests/test_simulate_realcode.py (XXH32, XXH64) and the ones the emulator
gives for the same calls (all three functions): the emulator and the real loader agree on
real code too."""

from __future__ import annotations

import pytest
from test_realcode import _built_pair
from test_simulate_realcode import xxh32, xxh64
from wine import harness

from pehotpatch.api import emit_final, simulate
from pehotpatch.emulate.calls import Buffer

pytestmark = [pytest.mark.toolchain, pytest.mark.network]

SIZES = (0, 1, 4, 15, 16, 33, 100, 1000, 4097)
THREAD_EXIT = 7  # livepatch.c's calling thread returns 7 when asked to stop


@pytest.fixture(scope="session")
def wine(tmp_path_factory):
    return harness.session(tmp_path_factory)


def test_xxhash_live_patch_under_wine(wine, tmp_path, monkeypatch):
    _built_pair("xxhash", tmp_path)
    base, inter = tmp_path / "base.dll", tmp_path / "intermediate.dll"
    final = tmp_path / "final.dll"
    emit_final(base, inter, final, functions_file=tmp_path / "hotpatch_functions.txt")

    data, wine_calls, sim_calls, expected = b"", [], [], []
    for k, n in enumerate(SIZES):
        chunk, seed = Buffer("bytes", n, k).content() if n else b"", 977 * k
        off = len(data)
        data += chunk
        arg = f"bytes({n}, {k})" if n else "0"
        wine_calls += [f"u32:XXH32(data+{off}, {n}, {seed})", f"u64:XXH64(data+{off}, {n}, {seed})",
                       f"u64:XXH3_64bits(data+{off}, {n})"]
        sim_calls += [f"XXH32({arg}, {n}, {seed})", f"XXH64({arg}, {n}, {seed})", f"XXH3_64bits({arg}, {n})"]
        expected += [xxh32(chunk, seed), xxh64(chunk, seed), None]
    (tmp_path / "data.bin").write_bytes(data)
    monkeypatch.setenv("PEHP_WINE_DATA", "Z:" + str(tmp_path / "data.bin").replace("/", "\\"))

    sim = simulate(base, final, sim_calls, pdb_final=tmp_path / "intermediate.pdb")
    assert sim.ok, sim.findings
    emulated = [row.patched.value for row in sim.calls]
    for want, got in zip(expected, emulated, strict=True):
        assert want is None or want == got

    for dll in (base, inter):
        run = harness.run_runner(wine, dll, wine_calls)
        assert run.rc == 0 and [r.value for r in run.results] == emulated, run.stdout

    live = harness.run_live(wine, base, final, wine_calls, iterations=20)
    assert live.rc == 0 and live.done and not live.refused, live.stdout
    assert live.applied == len(live.records) > 0
    assert all(live.clean[p] >= 20 for p in (0, 1, 2)), live.stdout
    assert live.thread["exit"] == THREAD_EXIT and live.thread["dropped_vectors"] == 0
    for phase in (0, 1, 2):  # before, patched, after undo
        assert [r.value for r in live.only_vector(phase)] == emulated, phase
    assert live.undo_identical is True
    assert live.patch_data_changed == []
