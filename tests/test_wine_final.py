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
    return harness.session(tmp_path_factory)


@pytest.fixture(scope="session")
def finals(tmp_path_factory):
    return harness.finals_dir(tmp_path_factory)


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


# memset/memmove/memcmp through the DLL's exports on the runner's scratch buffer; a memcmp
# result is only defined by its sign: after memset(buf, 'A', 4) the first 4 bytes are
# greater than the zero bytes after them; after memmove they are equal.
VCRUNTIME_CALLS = ["void:memset(buf, 65, 4)", "u32:memcmp(buf, buf+4, 4)", "void:memmove(buf+4, buf, 4)",
                   "u32:memcmp(buf, buf+4, 4)", "u32:memcmp(buf, buf+4, 5)"]


@pytest.mark.network
def test_forced_final_of_vcruntime140_loads_under_wine(wine, msvc_pair, tmp_path):
    """Real Microsoft-built DLLs (msvc-runtime 14.42 -> 14.44: signed, CFG, load config of
    0x140 bytes): the final image written with --force, every changed function listed,
    loads under Wine as the native vcruntime140 (not Wine's builtin one), runs its DllMain,
    resolves every export where pefile says and runs the string functions like the
    intermediate."""
    from pehotpatch import api

    base, inter = (d / "vcruntime140.dll" for d in msvc_pair)
    changed = [f.new.name for f in api.diff_pair(base, inter).changed_functions]
    assert len(changed) > 20
    ff = tmp_path / "functions.txt"
    ff.write_text("\n".join(changed) + "\n")
    final = tmp_path / "vcruntime140.dll"
    api.emit_final(base, inter, final, functions_file=ff, force=True)
    assert api.inspect_image(final).valid

    results = {}
    for name, dll in (("base", base), ("intermediate", inter), ("final", final)):
        table = harness.exports(dll)
        names = sorted(table)
        run = harness.run_runner(wine, dll, [*VCRUNTIME_CALLS, *(f"&{n}" for n in names)], native=["vcruntime140"])
        assert run.rc == 0, run.stdout + run.stderr
        calls = run.results[:len(VCRUNTIME_CALLS)]
        addresses = run.results[len(VCRUNTIME_CALLS):]
        assert [r.value - run.loaded for r in addresses] == [table[n] for n in names], name
        results[name] = [str(r) for r in calls]
        _, greater, _, equal, differ = calls
        assert 0 < greater.value < 0x80000000 and equal.value == 0 and differ.value != 0, name
    assert results["final"] == results["intermediate"]
