"""The emulator against a real Windows loader: on every patchable x64 sample, simulate's
base and intermediate worlds give the results runner.exe gets under Wine (LoadLibrary,
relocations, imports, DllMain, the real calling convention) for the same [run] calls.

Only x64 runs under Wine here; for x86 and ARM64 the emulator is the only run-time
evidence, so agreement on x64 is what backs it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_expect
from test_simulate_samples import PATCHABLE, calls_of, finals  # noqa: F401  (fixture)
from wine import harness

from pehotpatch.emulate.results import CallResult
from pehotpatch.emulate.simulate import simulate

pytestmark = pytest.mark.toolchain

X64 = [d for d in PATCHABLE if d.parent.name == "x64"]


@pytest.fixture(scope="session")
def wine(tmp_path_factory):
    reason = harness.missing_tools()
    if reason:
        if harness.IN_CI:
            raise RuntimeError(reason)
        pytest.skip(reason)
    return harness.session(tmp_path_factory)


def same(emulated: CallResult, real: harness.Result, kind: str) -> bool:
    if real.fault is not None or emulated.fault is not None:
        return (real.fault is not None) == (emulated.fault is not None)
    if kind == "void":
        return True
    return emulated.value == (real.value & 0xFFFFFFFF if kind == "u32" else real.value)


@pytest.mark.parametrize("d", X64, ids=lambda p: p.name)
def test_emulator_agrees_with_wine(d: Path, wine, finals):  # noqa: F811
    calls = calls_of(d)
    r = simulate(d / "base.dll", finals(d), calls, pdb_final=d / "intermediate.pdb")
    compared = 0
    real_runs = {}
    for kind, dll in (("base", d / "base.dll"), ("intermediate", d / "intermediate.dll")):
        types = harness.return_types(dll)
        run = harness.run_runner(wine, dll, harness.typed(calls, types))
        assert len(run.results) == len(calls), run.stdout + run.stderr
        real_runs[kind] = run.results
        for row, real, call in zip(r.calls, run.results, calls, strict=True):
            rtype = types.get(call.split("(", 1)[0], "u64")
            mine = row.base if kind == "base" else row.intermediate
            assert same(mine, real, rtype), (kind, call, mine.outcome(), str(real))
            compared += rtype != "void" and real.fault is None
    assert compared >= len(calls)  # most calls return a value, in both images
    if load_expect(d)["diff"]["changed_functions"]:  # the fix shows under Wine as in the emulator
        assert any(not a.same(b) for a, b in zip(real_runs["base"], real_runs["intermediate"], strict=True))
