"""`pehp simulate` on every patchable sample (x64, x86, ARM64): the final image built by
emit_final, applied to the running base in unicorn, agrees with the intermediate.

The call sequences are the ``[run] calls`` of each sample's expect.toml; results are
compared between worlds (base alone, base patched, intermediate alone), never with
numbers written here.  Where a test needs an independent reference it builds one
without the patch engine: the mixed-history reference transplants the base's globals
into a world running the intermediate alone; the undo reference is a freshly mapped
base.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import SAMPLES, load_expect

from pehotpatch.emulate.engine import World
from pehotpatch.emulate.patcher import Patcher, fixed_ranges
from pehotpatch.emulate.simulate import simulate
from pehotpatch.image.pe_reader import load_pe

ALL_PATCHABLE = sorted(p.parent for p in SAMPLES.glob("*/*/expect.toml")
                       if load_expect(p.parent)["check"]["verdict"] == "patchable")
PATCHABLE = [d for d in ALL_PATCHABLE if "run" in load_expect(d)]
IDS = [f"{d.parent.name}/{d.name}" for d in PATCHABLE]
CALL = re.compile(r"[A-Za-z_]\w*\((\s*(0x[0-9a-fA-F]+|\d+)\s*(,\s*(0x[0-9a-fA-F]+|\d+)\s*)*)?\)")


def calls_of(d: Path) -> list[str]:
    return list(load_expect(d)["run"]["calls"])


@pytest.fixture(scope="session")
def finals(tmp_path_factory: pytest.TempPathFactory):
    """``finals(d, sequence=1)``: the final image of sample ``d`` written by emit_final
    (cached for the session)."""
    from pehotpatch.api import emit_final

    root = tmp_path_factory.mktemp("finals")
    cache: dict[tuple[Path, int], Path] = {}

    def get(d: Path, sequence: int = 1) -> Path:
        key = (d, sequence)
        if key not in cache:
            out = root / f"{d.parent.name}-{d.name}-{sequence}.dll"
            emit_final(d / "base.dll", d / "intermediate.dll", out,
                       objects=d / "intermediate.objs", functions_file=d / "hotpatch_functions.txt",
                       sequence=sequence)
            cache[key] = out
        return cache[key]

    return get


def run(d: Path, final: Path, **kw):
    return simulate(d / "base.dll", final, calls_of(d), pdb_final=d / "intermediate.pdb", **kw)


# ------------------------------------------------------------------ the call sequences


def test_every_patchable_sample_has_a_run_section():
    assert PATCHABLE == ALL_PATCHABLE
    assert len(PATCHABLE) >= 12  # pehplib: 4 scenarios x 3 machines, and gatelib's
    for d in PATCHABLE:
        calls = calls_of(d)
        assert calls and all(isinstance(c, str) and CALL.fullmatch(c) for c in calls), d
        assert set(load_expect(d)["run"]) == {"calls"}


@pytest.mark.parametrize("d", PATCHABLE, ids=IDS)
def test_calls_exercise_the_fix(d: Path, finals):
    """With a fix, at least one call gives a different result in the base and in the
    intermediate (so the sequence really runs the fixed code); without one, none does."""
    r = run(d, finals(d))
    differ = [row.call for row in r.calls if row.base.outcome() != row.intermediate.outcome()]
    if load_expect(d)["diff"]["changed_functions"]:
        assert differ, "no call shows the fix"
    else:
        assert not differ


# ------------------------------------------------------------------ patched from the start


@pytest.mark.parametrize("d", PATCHABLE, ids=IDS)
def test_patched_base_agrees_with_the_intermediate(d: Path, finals):
    r = run(d, finals(d), patch_after=0)
    assert r.ok, [f.message for f in r.findings]
    assert [p.applied for p in r.patches] == [True]
    assert all(row.phase == "after" for row in r.calls)
    assert [row.patched.outcome() for row in r.calls] == [row.intermediate.outcome() for row in r.calls]
    changed = set(load_expect(d)["diff"]["changed_functions"])
    forward = {x.function for x in r.patches[0].redirects if x.direction == "forward"}
    assert forward == changed


@pytest.mark.parametrize("d", PATCHABLE, ids=IDS)
def test_state_stays_in_the_base(d: Path, finals):
    """Every write to a mutable global, by patched or unpatched code, lands in the base
    image: patched code reaches the base's globals through the bound __ref_ slots."""
    r = run(d, finals(d), patch_after=0)
    writes = [w for row in r.calls for w in row.patched.writes]
    assert writes
    assert {w.image for w in writes} == {"base"}
    if d.name == "fix_globals":  # telemetry_record is patched and writes g_record_count ...
        rec = [row for row in r.calls if row.call.startswith("telemetry_record(")]
        assert any(w.name == "g_record_count" for row in rec for w in row.patched.writes)
        # ... which unpatched telemetry_count reads back from the base: same as the intermediate
        counts = [row for row in r.calls if row.call == "telemetry_count()"]
        assert [c.patched.value for c in counts] == [c.intermediate.value for c in counts]
        # and the other way round: unpatched config_set writes g_config in the base, which the
        # patched telemetry_record reads through __ref_g_config when it clamps the value
        calls = [row.call for row in r.calls]
        cfg, rec = calls.index("config_set(1, 1000)"), calls.index("telemetry_record(3, 5000)")
        assert [(w.image, w.name) for w in r.calls[cfg].patched.writes] == [("base", "g_config")]
        peek = r.calls[rec + 1]
        assert peek.call == "telemetry_peek_scaled(0)"
        assert peek.patched.value == peek.intermediate.value != 5000  # clamped to the new limit


# Fixes that change state other functions read (a count that no longer includes drops, a
# capped step): there the unpatched functions see the new state.
STATEFUL_FIXES = {"fix_globals", "ref_relocs"}


@pytest.mark.parametrize("d", [d for d in PATCHABLE if d.name not in STATEFUL_FIXES],
                         ids=[i for d, i in zip(PATCHABLE, IDS, strict=True) if d.name not in STATEFUL_FIXES])
def test_unpatched_functions_behave_as_before(d: Path, finals):
    """Calls of functions the patch does not replace give the base's results (in these
    scenarios the fix changes no state that other functions read)."""
    changed = set(load_expect(d)["diff"]["changed_functions"])
    r = run(d, finals(d), patch_after=0)
    for row in r.calls:
        if row.call.split("(")[0] not in changed:
            assert row.patched.outcome() == row.base.outcome(), row.call


# ------------------------------------------------------------------ patched midway


def transplant_reference(d: Path, final: Path, calls: list[str], k: int) -> list[str]:
    """Results of calls[k:] when the base ran calls[:k] and the intermediate's code
    continues on the base's state, computed without the patch engine: run the base
    alone, copy each of its mutable globals (by PDB name) into a world running the
    final image alone, and continue there."""
    from pehotpatch.emulate.calls import parse_call
    from pehotpatch.emulate.simulate import _call

    base_pe, final_pe = load_pe(d / "base.dll"), load_pe(final)
    wb = World(base_pe.machine)
    b = wb.load(base_pe, "base", 0, pdb=d / "base.pdb")
    wb.run_entry(b)
    wi = World(final_pe.machine)
    i = wi.load(final_pe, "intermediate", 1, pdb=d / "intermediate.pdb")
    wi.run_entry(i)
    parsed = [parse_call(c) for c in calls]
    for c in parsed[:k]:
        _call(wb, b, c)
    bn, inn = wb.names["base"], wi.names["intermediate"]
    moved = 0
    for g in bn.index.globals:
        if not g.mutable or g.size is None:
            continue
        other = inn.index.globals_by_name.get(g.name)
        assert other is not None and other.size == g.size, g.name
        wi.space.write(i.va + other.rva, wb.space.read(b.va + g.rva, g.size))
        moved += 1
    assert moved >= 7  # g_ring, g_config, g_record_count, ... (samples/README.md)
    return [_call(wi, i, c).outcome() for c in parsed[k:]]


@pytest.mark.parametrize("d", PATCHABLE, ids=IDS)
def test_patch_midway_continues_on_the_old_state(d: Path, finals):
    calls = calls_of(d)
    final = finals(d)
    for k in sorted({1, len(calls) // 3, len(calls) // 2, len(calls) - 2}):
        r = run(d, final, patch_after=k)
        assert r.ok, (k, [f.message for f in r.findings])
        assert [row.phase for row in r.calls] == ["before"] * k + ["after"] * (len(calls) - k)
        assert [row.patched.outcome() for row in r.calls[:k]] == [row.base.outcome() for row in r.calls[:k]]
        expected = transplant_reference(d, final, calls, k)
        assert [row.patched.outcome() for row in r.calls[k:]] == expected, k


def test_patch_midway_shows_old_state_used_by_new_code(finals):
    """fix_globals, patched when the old code has already counted one dropped event (the
    ring is full): the new code does not count the next drop but keeps the old count, so
    the patched base ends between the base alone and the intermediate alone."""
    d = SAMPLES / "x64" / "fix_globals"
    calls = calls_of(d)
    k = calls.index("telemetry_record(1, 231)")  # the second drop; the first ran in old code
    r = run(d, finals(d), patch_after=k)
    count = [row for row in r.calls if row.call == "telemetry_count()"][-2]
    assert count.index > k
    b, p, i = (int(x.outcome()) for x in (count.base, count.patched, count.intermediate))
    assert i < p < b


# ------------------------------------------------------------------ undo and supersede


@pytest.mark.parametrize("d", PATCHABLE, ids=IDS)
def test_undo_restores_the_base_bytes(d: Path, finals):
    r = run(d, finals(d), patch_after=2, undo=True)
    assert r.ok and r.undo is not None and r.undo.identical
    assert r.undo.restored == len(load_expect(d)["diff"]["changed_functions"])

    # independently: the base after patch + undo equals a freshly mapped base
    base_pe, final_pe = load_pe(d / "base.dll"), load_pe(finals(d))
    from pehotpatch.emulate.hptable import read_table

    w = World(base_pe.machine)
    b = w.load(base_pe, "base", 0, pdb=d / "base.pdb")
    p = w.load(final_pe, "patch", 1, pdb=d / "intermediate.pdb", bind_imports=False)
    patcher = Patcher(w, b)
    report, findings = patcher.apply(p, read_table(final_pe), "final")
    assert report.applied and not findings
    patched = w.snapshot(b)
    patcher.undo()
    fresh = World(base_pe.machine)
    fb = fresh.load(base_pe, "base", 0)
    after, clean = w.snapshot(b), fresh.snapshot(fb)
    changed = bool(load_expect(d)["diff"]["changed_functions"])
    for lo, hi in fixed_ranges(b):
        assert after[lo:hi] == clean[lo:hi]
    assert (patched != clean) == changed  # the patch did write to the base


@pytest.mark.parametrize("arch", ["x64", "x86", "arm64"])
def test_second_patch_supersedes_the_first(arch: str, finals):
    """fix_globals (sequence 1) then body_fix (sequence 2) on the same base: the second
    patch does not redirect telemetry_record, so it is restored to the base's code;
    telemetry_checksum now runs the second patch's code; the base ends up behaving as
    body_fix's intermediate."""
    first, second = SAMPLES / arch / "fix_globals", SAMPLES / arch / "body_fix"
    assert (first / "base.dll").read_bytes() == (second / "base.dll").read_bytes()
    calls = calls_of(first) + calls_of(second)
    r = simulate(first / "base.dll", finals(first), calls, then=finals(second, 2),
                 pdb_final=first / "intermediate.pdb", pdb_then=second / "intermediate.pdb", undo=True)
    assert r.ok, [f.message for f in r.findings]
    p1, p2 = r.patches
    assert (p1.sequence, p2.sequence) == (1, 2) and p1.applied and p2.applied
    assert p2.restored == ["telemetry_record"]
    assert {x.function for x in p2.redirects if x.direction == "forward"} == {"telemetry_checksum"}
    assert [row.patched.outcome() for row in r.calls] == [row.intermediate.outcome() for row in r.calls]
    # telemetry_record behaves as the base's again (the fix_globals counts are gone)
    assert any(row.patched.outcome() != row.base.outcome() for row in r.calls)  # checksum fix
    counts = [row for row in r.calls if row.call == "telemetry_count()"]
    assert [c.patched.outcome() for c in counts] == [c.base.outcome() for c in counts]
    assert r.undo is not None and r.undo.identical and r.undo.restored == 1


@pytest.mark.parametrize("arch", ["x64", "x86", "arm64"])
def test_same_sequence_number_is_refused(arch: str, finals):
    first, second = SAMPLES / arch / "fix_globals", SAMPLES / arch / "body_fix"
    r = simulate(first / "base.dll", finals(first), calls_of(second), then=finals(second, 1),
                 pdb_final=first / "intermediate.pdb", pdb_then=second / "intermediate.pdb")
    assert [f.kind for f in r.findings if f.kind == "patch-refused"] == ["patch-refused"]
    assert "SequenceNumber 1 is not above" in r.patches[1].refused
