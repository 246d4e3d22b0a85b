"""verify and plan compare only the hot-patch set's pairs (pehotpatch/plan/scoped.py): the
plan they compute must be exactly the one the whole diff gives, on every sample pair and on
real images without a PDB (pairs made from the code alone), and a table that differs from
it in any byte must still fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import IN_CI, SAMPLES

from pehotpatch.api import diff_loaded, emit_final, load_pair, plan_diff, verify_final
from pehotpatch.diff import CHANGED, THROUGH_DATA, DiffResult
from pehotpatch.image.pe_reader import parse_pe
from pehotpatch.plan.model import PatchPlan
from pehotpatch.plan.scoped import diff_for_plan
from pehotpatch.reach import hotpatch_with_evidence, in_hotpatch_set
from pehotpatch.table.decode import read_table
from pehotpatch.verify import verify_table

PAIRS = sorted(d for d in SAMPLES.glob("*/*") if (d / "base.dll").is_file() and (d / "intermediate.dll").is_file())


def _functions_file(d: Path) -> Path | None:
    f = d / "hotpatch_functions.txt"
    return f if f.is_file() else None


def _both(base: Path, inter: Path, functions_file: Path | None) -> tuple[DiffResult, PatchPlan, DiffResult, PatchPlan]:
    b, n = load_pair(base, inter, functions_file=functions_file)
    whole = diff_loaded(b, n, jobs=1)
    scoped, hs = diff_for_plan(b, n, jobs=1)
    assert hs.sorted() == hotpatch_with_evidence(whole).sorted()
    return whole, plan_diff(whole), scoped, plan_diff(scoped)


def _statuses(d: DiffResult, names: list[str]) -> dict[str, str]:
    m = d.new.pe.machine
    return {f.new.name: f"{f.status}/{f.reason}" for f in d.functions if in_hotpatch_set(f.new, names, m)}


def test_every_machine_is_covered():
    assert {d.parent.name for d in PAIRS} == {"x64", "x86", "arm64"}
    assert len(PAIRS) >= 30


@pytest.mark.parametrize("listed", [True, False], ids=["functions-file", "pdb-and-code-only"])
@pytest.mark.parametrize("d", PAIRS, ids=lambda d: f"{d.parent.name}/{d.name}")
def test_plan_equals_the_whole_diffs_plan(d, listed):
    """With the functions file, and with only what the PDB and the code say (S_HOTPATCHFUNC
    records, functions reading __ref_ slots)."""
    whole, p_whole, scoped, p_scoped = _both(d / "base.dll", d / "intermediate.dll",
                                             _functions_file(d) if listed else None)
    assert p_scoped.to_json() == p_whole.to_json()
    # Every pair of the hot-patch set was compared, with the whole diff's result; the
    # others were not, so a scoped diff says so.
    names = hotpatch_with_evidence(whole).sorted()
    assert _statuses(scoped, names) == _statuses(whole, names)
    assert whole.compared_all and not scoped.compared_all
    assert scoped.correlation.function_map == whole.correlation.function_map
    assert scoped.codes == whole.codes


def test_the_samples_plan_something():
    """The equality above is not between empty plans: most pairs patch, call back into the
    base and bind data (import bindings: see the numpy test)."""
    plans = []
    for d in PAIRS:
        b, n = load_pair(d / "base.dll", d / "intermediate.dll", functions_file=_functions_file(d))
        plans.append(plan_diff(diff_for_plan(b, n, jobs=1)[0]))
    assert sum(bool(p.forward) for p in plans) >= 25
    assert sum(bool(p.backward) for p in plans) >= 12
    assert sum(bool(p.data) for p in plans) >= 20
    assert sum(bool(p.refusals) for p in plans) >= 3
    assert sum(bool(p.new_functions) for p in plans) >= 1


def test_scoped_diff_leaves_out_the_other_pairs():
    d = SAMPLES / "x64" / "body_fix"
    b, n = load_pair(d / "base.dll", d / "intermediate.dll")
    whole = diff_loaded(b, n, jobs=1)
    scoped, hs = diff_for_plan(b, n, jobs=1)
    assert hs.sorted() == []  # body_fix has no hot-patch inputs: nothing is compared
    assert [f.name for f in whole.changed_functions] == ["telemetry_checksum"]
    assert scoped.functions == [] and scoped.unchanged == 0


@pytest.mark.parametrize("sample", ["x64/fix_globals", "x86/fix_globals", "arm64/fix_globals"])
def test_any_flipped_table_byte_fails_against_the_scoped_plan(tmp_path, sample):
    """Each byte of the table, flipped, gives a finding against the plan verify uses."""
    d = SAMPLES / sample
    ff = d / "hotpatch_functions.txt"
    out = tmp_path / "final.dll"
    emit_final(d / "base.dll", d / "intermediate.dll", out, functions_file=ff)
    assert verify_final(out, base=d / "base.dll", intermediate=d / "intermediate.dll", functions_file=ff).ok
    b, n = load_pair(d / "base.dll", d / "intermediate.dll", functions_file=ff)
    diff, _ = diff_for_plan(b, n, jobs=1)
    plan = plan_diff(diff)
    data = out.read_bytes()
    rd = read_table(parse_pe(data, "final.dll"))
    start = parse_pe(data, "final.dll").rva_to_offset(rd.rva)
    assert start is not None and rd.raw
    for i in range(len(rd.raw)):
        raw = bytearray(data)
        raw[start + i] ^= 0x01 if i % 2 else 0x80
        assert not verify_table(parse_pe(bytes(raw), "final.dll"), b.pe, diff, plan).ok, f"table byte {i:#x}"


def _corpus_pair(pattern: str) -> tuple[Path, Path]:
    import corpus

    try:
        return tuple(corpus.numpy_image(v, pattern) for v in corpus.NUMPY_VERSIONS)  # type: ignore[return-value]
    except Exception as exc:  # no network
        if IN_CI:
            raise
        pytest.skip(f"cannot download the real-world corpus: {exc}")


@pytest.mark.network
def test_numpy_plan_without_pdb_equals_the_whole_diffs_plan(tmp_path):
    """numpy 2.5.4 -> 2.5.5 ``_multiarray_umath``: no PDB, so functions pair by content,
    call graph and order; every changed function listed as patched, as in the benchmark.
    The whole diff normalises in one process, verify's in two (by address windows): the
    code maps are the same too."""
    base, inter = _corpus_pair("_multiarray_umath*.pyd")
    b, n = load_pair(base, inter)
    changed = sorted({f.new.name for f in diff_loaded(b, n).functions if f.status in (CHANGED, THROUGH_DATA)})
    assert len(changed) > 50
    ff = tmp_path / "functions.txt"
    ff.write_text("\n".join(changed) + "\n")
    b, n = load_pair(base, inter, functions_file=ff)
    whole = diff_loaded(b, n, jobs=1)
    scoped, hs = diff_for_plan(b, n, jobs=2)
    assert hs.sorted() == changed
    assert scoped.codes == whole.codes
    assert scoped.correlation.function_map == whole.correlation.function_map
    p_whole, p_scoped = plan_diff(whole), plan_diff(scoped)
    assert p_whole.forward and p_whole.backward and p_whole.imports
    assert p_scoped.to_json() == p_whole.to_json()


def test_shared_jobs_come_back_in_order_from_both_processes():
    import os
    import time

    from pehotpatch.codemap import _shared

    parent = os.getpid()

    def work(j):
        time.sleep(0.005)  # long enough for the fork to start and take its share
        return (j * j, os.getpid() == parent)

    got = _shared(work, list(range(100)), 2)
    assert [g[0] for g in got] == [j * j for j in range(100)]
    assert {g[1] for g in got} == {True, False}  # the fork took some of them


def test_shared_jobs_of_a_fork_that_dies_are_done_here():
    import os

    from pehotpatch.codemap import _shared

    parent = os.getpid()

    def work(j):
        if os.getpid() != parent:
            os._exit(3)  # the fork dies on its first job
        return [j, "here"]

    assert _shared(work, list(range(50)), 2) == [[j, "here"] for j in range(50)]


def test_shared_error_in_a_job_is_raised_here_once(capfd):
    import time

    from pehotpatch.codemap import _shared

    def work(j):
        time.sleep(0.002)
        if j == 37:
            raise ValueError(f"job {j}")
        return j

    with pytest.raises(ValueError, match="job 37"):
        _shared(work, list(range(60)), 2)
    assert "Traceback" not in capfd.readouterr().err  # the fork leaves it to this process
