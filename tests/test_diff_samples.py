"""`pehp diff` names exactly what changed in source, per sample scenario (expect.toml)."""

from __future__ import annotations

import pytest
from conftest import load_expect, scenario_dirs

from pehotpatch.diff import diff_images
from pehotpatch.load import load_image

SCENARIOS = scenario_dirs()


def _diff(d):
    base = load_image(d / "base.dll")
    new = load_image(
        d / "intermediate.dll",
        objects=d / "intermediate.objs",
        functions_file=d / "hotpatch_functions.txt",
    )
    return diff_images(base, new, jobs=1)


def _plain(names):
    return sorted(n for n in names if not n.startswith(("__ref_", "___ref_")))


@pytest.mark.parametrize("d", SCENARIOS, ids=[f"{d.parent.name}/{d.name}" for d in SCENARIOS])
def test_diff_names_exactly_the_changes(d):
    exp = load_expect(d)["diff"]
    res = _diff(d)
    assert res.base.pdb_path and res.new.pdb_path  # the PDBs next to the images were found
    assert sorted(f.name for f in res.changed_functions) == sorted(exp["changed_functions"])
    assert sorted(f.name for f in res.added_functions) == sorted(exp["added_functions"])
    assert sorted(f.name for f in res.removed_functions) == sorted(exp["removed_functions"])
    assert sorted(g.name for g in res.globals_changed) == sorted(exp["changed_globals"])
    assert _plain(g.name for g in res.added_globals) == sorted(exp["added_globals"])
    assert _plain(g.name for g in res.removed_globals) == sorted(exp["removed_globals"])
    # Everything that was paired was paired by name: the samples have full PDBs.
    assert set(res.correlation.methods()) <= {"name"}


@pytest.mark.parametrize("arch", ["x64", "x86"])
def test_hotpatch_build_noise_is_not_a_change(arch):
    """A base built without /hotpatch differs by the entry no-op and by loop-alignment
    no-ops; neither is a behaviour change."""
    from conftest import SAMPLES

    from pehotpatch.diff import PADDING_ONLY, PROLOGUE_ONLY

    res = _diff(SAMPLES / arch / "prologue_not_patchable")
    status = {f.name: f.status for f in res.functions}
    assert status.pop("telemetry_flush") == "changed"
    assert status and set(status.values()) <= {PROLOGUE_ONLY, PADDING_ONLY}
    assert PROLOGUE_ONLY in status.values()
    if arch == "x64":
        assert status["put_str"] == PADDING_ONLY


def test_diff_json_is_deterministic(tmp_path):
    from conftest import SAMPLES

    from pehotpatch.cli import main

    d = SAMPLES / "x64" / "struct_layout"
    outs = []
    for i in range(2):
        out = tmp_path / f"d{i}.json"
        assert main(["diff", str(d / "base.dll"), str(d / "intermediate.dll"), "--json", "-o", str(out)]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
