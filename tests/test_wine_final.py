"""The final image runs standalone under Wine (a real Windows loader): loaded with
LoadLibrary like any DLL (after a reboot nothing patches anything), it behaves exactly like
the intermediate it was made from, call for call; its exports resolve where the
intermediate's do."""

from __future__ import annotations

import pytest
from wine import harness

pytestmark = pytest.mark.toolchain

PATCHABLE = [d for d in harness.patchable_x64() if harness.run_calls(d) is not None]


@pytest.fixture(scope="session")
def wine(tmp_path_factory):
    reason = harness.missing_tools()
    if reason:
        if harness.IN_CI:
            raise RuntimeError(reason)
        pytest.skip(reason)
    return harness.session(tmp_path_factory)


@pytest.fixture(scope="module")
def finals(tmp_path_factory):
    return tmp_path_factory.mktemp("finals")


def test_every_patchable_x64_sample_has_calls():
    assert PATCHABLE == harness.patchable_x64()
    assert {"body_fix", "fix_globals", "fix_calls_unchanged", "no_change"} <= {d.name for d in PATCHABLE}


@pytest.mark.parametrize("scenario", PATCHABLE, ids=lambda p: p.name)
def test_final_image_runs_like_the_intermediate(wine, finals, scenario):
    final = harness.emit_final(scenario, finals)
    calls = harness.typed(harness.run_calls(scenario), harness.return_types(scenario / "intermediate.dll"))
    inter = harness.run_runner(wine, scenario / "intermediate.dll", calls)
    got = harness.run_runner(wine, final, calls)
    assert got.rc == inter.rc and len(got.results) == len(calls), got.stdout + got.stderr
    # same values, same faults (at the same RVA: the final keeps the intermediate's layout)
    assert [str(r) for r in got.results] == [str(r) for r in inter.results]
    assert [None if r.fault_addr is None else r.fault_addr - got.loaded for r in got.results] == [
        None if r.fault_addr is None else r.fault_addr - inter.loaded for r in inter.results]
    # and, as the intermediate, unlike the base where the fix shows
    base = harness.run_runner(wine, scenario / "base.dll", calls)
    if scenario.name != "no_change":
        assert [str(r) for r in got.results] != [str(r) for r in base.results]

    names = sorted(harness.exports(final))
    assert names == sorted(harness.exports(scenario / "intermediate.dll"))
    run = harness.run_runner(wine, final, [f"&{n}" for n in names])
    table = harness.exports(scenario / "intermediate.dll")
    assert run.rc == 0 and [r.value for r in run.results] == [run.loaded + table[n] for n in names]
