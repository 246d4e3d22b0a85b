"""The sample images run under Wine (a real Windows loader): every x64 sample's base and
intermediate load, run their calls, and the fix shows in the results.

runner.exe (tests/wine/runner.c, CRT-free, kernel32 only) loads a DLL with LoadLibrary
(relocations, imports, DllMain), calls exports in order with state carried over, and
prints one result per call; a fault inside a call is caught and printed as that call's
result.  Calls: the scenario's ``[run] calls`` in expect.toml, or a few of our own whose
results follow from the C source (harness.DEFAULT_CALLS).
"""

from __future__ import annotations

import pytest
from wine import harness

pytestmark = pytest.mark.toolchain


@pytest.fixture(scope="session")
def wine(tmp_path_factory):
    return harness.session(tmp_path_factory)


def _calls_for(dll, scenario):
    """The scenario's calls typed for ``dll``; DEFAULT_CALLS (only the exports ``dll``
    has) with their expected values when it has no [run]."""
    types = harness.return_types(dll)
    calls = harness.run_calls(scenario)
    if calls is not None:
        return harness.typed(calls, types), None
    exports = harness.export_names(dll)
    chosen = [(c, v) for c, v in harness.DEFAULT_CALLS if c.split("(")[0] in exports]
    return harness.typed([c for c, _ in chosen], types), [v for _, v in chosen]


def _has_calls(scenario) -> bool:
    """A [run] section, or our own calls apply (a pehplib image)."""
    return harness.run_calls(scenario) is not None or "pehp_version" in harness.export_names(
        scenario / "base.dll")


@pytest.mark.parametrize("scenario", harness.x64_scenarios(), ids=lambda p: p.name)
def test_sample_exports_resolve_under_wine(wine, scenario):
    """Wine's loader maps both images and runs their DllMain; every named export resolves
    (GetProcAddress) to the image's load address plus the export's RVA as pefile reads it."""
    for kind in ("base", "intermediate"):
        dll = scenario / f"{kind}.dll"
        table = harness.exports(dll)
        assert table, dll
        names = sorted(table)
        run = harness.run_runner(wine, dll, [f"&{n}" for n in names])
        assert run.rc == 0, run.stdout + run.stderr
        assert run.loaded is not None
        assert [r.value for r in run.results] == [run.loaded + table[n] for n in names]


@pytest.mark.parametrize("scenario", [s for s in harness.x64_scenarios() if _has_calls(s)],
                         ids=lambda p: p.name)
def test_sample_runs_under_wine(wine, scenario):
    runs = {}
    for kind in ("base", "intermediate"):
        dll = scenario / f"{kind}.dll"
        calls, expected = _calls_for(dll, scenario)
        run = harness.run_runner(wine, dll, calls)
        assert run.rc in (0, 1), run.stdout + run.stderr
        assert len(run.results) == len(calls), run.stdout
        # exit code 1 exactly when a call faulted
        assert (run.rc == 1) == any(r.fault is not None for r in run.results)
        # void calls show no value, typed calls a value or a fault
        for call, r in zip(calls, run.results, strict=True):
            assert (r.value is None and r.fault is None) == call.startswith("void:"), (call, r)
        if expected is not None:
            got = [r.value if r.fault is None else str(r) for r in run.results]
            assert got == expected, f"{kind}: {calls}"
        runs[kind] = run
    if harness.run_calls(scenario) is None:
        return
    base = runs["base"].results
    fixed = runs["intermediate"].results
    # the fix never introduces a fault into the call sequence
    assert all(r.fault is None for r in fixed), runs["intermediate"].stdout
    differ = [i for i, (a, b) in enumerate(zip(base, fixed, strict=True)) if not a.same(b)]
    if scenario.name == "no_change":
        assert differ == []
    elif harness.expect_doc(scenario)["check"]["verdict"] == "patchable":
        assert differ, "the calls do not exercise the fix"


def test_runner_reports_a_fault_and_goes_on(wine):
    """A NULL buffer of 16 bytes faults in the base's telemetry_checksum (it reads address
    0): the fault is that call's result, the next calls still run in the same process."""
    dll = harness.SAMPLES / "x64" / "body_fix" / "base.dll"
    run = harness.run_runner(wine, dll, ["u32:pehp_version()", "u32:telemetry_checksum(0, 16)",
                                         "u32:telemetry_checksum(0, 0)", "u32:pehp_version()"])
    assert run.rc == 1
    version, fault, empty, again = run.results
    assert version.value == again.value == 0x00010003
    assert fault.fault == 0xC0000005 and fault.value is None
    # the faulting instruction is inside base.dll, which runner reports loaded at LOADED
    loaded = int(run.stdout.split("LOADED ", 1)[1].split()[0], 16)
    assert loaded <= fault.fault_addr < loaded + 0x100000
    assert empty.value == 0


def test_runner_u32_and_u64_results(wine):
    """u32 keeps the low half of RAX; u64 all of it (telemetry_checksum returns an
    unsigned int: the upper half is zero from the 32-bit operation)."""
    dll = harness.SAMPLES / "x64" / "no_change" / "base.dll"
    run = harness.run_runner(wine, dll, ["u64:telemetry_record(1, 4000000000)", "u32:telemetry_count()",
                                         "u64:config_get(1)", "u32:config_get(4)"])
    assert run.rc == 0
    assert [r.value for r in run.results] == [1, 1, 100000, 0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.dll", "f()"], "ERROR LoadLibrary"),
        (["SAMPLE", "no_such_export()"], "no such export"),
        (["SAMPLE", "pehp_version(1, 2, 3, 4, 5)"], "more than 4 arguments"),
        (["SAMPLE", "pehp_version(x)"], "not an unsigned integer"),
        (["SAMPLE"], "usage"),
    ],
)
def test_runner_refuses_bad_input(wine, args, message):
    dll = harness.SAMPLES / "x64" / "no_change" / "base.dll"
    p = wine.run("runner", *[str(dll) if a == "SAMPLE" else a for a in args])
    assert p.returncode == 2
    assert message in p.stdout and "RESULT" not in p.stdout


def test_runner_scratch_buffer_and_repeat(wine):
    """``buf`` passes the calling thread's scratch buffer: report_format_u32 writes 12345
    there and returns its 5 digits, telemetry_checksum then reads them (CRC-32 of "12345",
    computed here with zlib); ``--repeat`` runs the calls again in the same process, so the
    record count goes on growing."""
    import zlib

    dll = harness.SAMPLES / "x64" / "no_change" / "base.dll"
    run = harness.run_runner(wine, dll, ["u32:report_format_u32(buf+16, 64, 12345)", "u32:telemetry_checksum(buf+16, 5)",
                                         "u32:telemetry_record(0, 1)", "u32:telemetry_count()"], repeat=3)
    assert run.rc == 0
    values = [r.value for r in run.results]
    assert values == [5, zlib.crc32(b"12345"), 1, 1, 5, zlib.crc32(b"12345"), 1, 2, 5, zlib.crc32(b"12345"), 1, 3]
