"""`pehp diff` names exactly what changed in source, per sample scenario (expect.toml)."""

from __future__ import annotations

import pytest
from conftest import load_expect, scenario_dirs

from pehotpatch.diff import diff_images
from pehotpatch.image.loader import load_image

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
