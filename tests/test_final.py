"""The final image on every patchable sample: written by `pehp emit-final`, read back by three
independent readers (LIEF, pefile, llvm-readobj-22), verified by `pehp verify`, deterministic,
inputs untouched; cumulative patches; and the refusals (rejected pair, plan refusals)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_expect, scenario_dirs

from pehotpatch.cli import main

PATCHABLE = [d for d in scenario_dirs()
             if load_expect(d).get("check", {}).get("verdict") == "patchable"
             and (d / "hotpatch_functions.txt").is_file()]
IDS = [f"{d.parent.name}/{d.name}" for d in PATCHABLE]


def hp_args(d: Path) -> list[str]:
    return ["--objects", str(d / "intermediate.objs"), "--functions-file", str(d / "hotpatch_functions.txt")]


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def finals(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("finals")
    made = {}
    for d, name in zip(PATCHABLE, IDS, strict=True):
        dest = out / (name.replace("/", "-") + ".dll")
        before = {p: sha(p) for p in (d / "base.dll", d / "intermediate.dll", d / "intermediate.pdb")}
        code = main(["emit-final", str(d / "base.dll"), str(d / "intermediate.dll"), "-o", str(dest), *hp_args(d)])
        assert code == 0, name
        assert {p: sha(p) for p in before} == before, f"{name}: an input changed"
        made[name] = dest
    return made


def test_every_patchable_sample_is_covered():
    arches = {d.parent.name for d in PATCHABLE}
    assert arches == {"x64", "x86", "arm64"}
    assert len(PATCHABLE) >= 12


@pytest.mark.parametrize("name", IDS)
def test_final_reparses_with_lief_and_pefile(finals, name):
    import lief
    import pefile

    from pehotpatch.api import inspect_image

    final = finals[name]
    rd = inspect_image(final)
    assert rd.valid, rd.violations
    b = lief.PE.parse(str(final))
    assert b is not None and b.load_configuration.hotpatch_table_offset == rd.rva
    assert [s.name for s in b.sections][-1] == ".hpatch"
    pe = pefile.PE(str(final))
    assert pe.DIRECTORY_ENTRY_LOAD_CONFIG.struct.HotPatchTableOffset == rd.rva
    assert pe.verify_checksum()
    inter = pefile.PE(str(PATCHABLE[IDS.index(name)] / "intermediate.dll"))
    assert pe.FILE_HEADER.NumberOfSections == inter.FILE_HEADER.NumberOfSections + 1
    assert pe.OPTIONAL_HEADER.SizeOfImage > inter.OPTIONAL_HEADER.SizeOfImage
    # the table bytes as pefile reads them at the RVA are the ones pehp decodes
    assert pe.get_data(rd.rva, rd.size) == rd.raw


@pytest.mark.toolchain
@pytest.mark.parametrize("name", IDS)
def test_final_reparses_with_llvm_readobj(finals, name):
    tool = shutil.which("llvm-readobj-22")
    if tool is None:
        pytest.skip("llvm-readobj-22 is not installed")
    from pehotpatch.api import inspect_image

    out = subprocess.run([tool, "--coff-load-config", "--sections", str(finals[name])],
                         capture_output=True, text=True, check=True).stdout
    rva = inspect_image(finals[name]).rva
    assert f"HotPatchTableOffset: {rva:#X}".lower() in out.lower()
    assert "Name: .hpatch" in out


@pytest.mark.parametrize("name", IDS)
def test_verify_passes_and_rerun_is_byte_identical(finals, name, tmp_path, capsys):
    d = PATCHABLE[IDS.index(name)]
    final = finals[name]
    assert main(["verify", str(final), "--base", str(d / "base.dll"), "--intermediate",
                 str(d / "intermediate.dll"), *hp_args(d)]) == 0
    assert "every one the plan calls for" in capsys.readouterr().out
    again = tmp_path / "again.dll"
    assert main(["emit-final", str(d / "base.dll"), str(d / "intermediate.dll"), "-o", str(again), *hp_args(d)]) == 0
    assert again.read_bytes() == final.read_bytes()


def test_table_holds_what_the_scenario_needs(finals):
    """fix_globals: one forward record (telemetry_record), a bound __ref_ slot per mutable
    global it touches, a backward record per unpatched callee; the first bytes are the base's."""
    from pehotpatch.api import inspect_image
    from pehotpatch.image.pe_reader import load_pe
    from pehotpatch.table.format import ABSOLUTE, FUNCTION

    for arch in ("x64", "x86", "arm64"):
        rd = inspect_image(finals[f"{arch}/fix_globals"])
        t = rd.table
        assert t is not None
        fwd = t.records(FUNCTION, inverse=False)
        assert len(fwd) == 1
        base = load_pe(PATCHABLE[IDS.index(f"{arch}/fix_globals")] / "base.dll")
        assert fwd[0].extra[0] == int.from_bytes(base.read(fwd[0].site, 4), "little")
        assert len(t.records(ABSOLUTE, inverse=True)) == 5  # g_config, g_record_count, g_last_value, g_peak_value, g_last_error
        assert len(t.records(FUNCTION, inverse=True)) == 3  # now_ticks, clamp_value, ring_push
        # the base descriptor names this base
        assert (t.base_timestamp, t.base_checksum) == (base.timestamp, base.checksum)


def test_cumulative_patch_reports_what_reverts(finals, tmp_path, capsys):
    """Patch 2 (body_fix) for the same base as patch 1 (fix_globals) does not redirect
    telemetry_record: emit-final --previous says it reverts; the same sequence is refused."""
    first = finals["x64/fix_globals"]
    d = PATCHABLE[IDS.index("x64/body_fix")]
    assert (d / "base.dll").read_bytes() == (PATCHABLE[IDS.index("x64/fix_globals")] / "base.dll").read_bytes()
    out = tmp_path / "final2.dll"
    code = main(["emit-final", str(d / "base.dll"), str(d / "intermediate.dll"), "-o", str(out), *hp_args(d),
                 "--previous", str(first)])
    assert code == 2 and not out.exists()
    assert "higher --sequence" in capsys.readouterr().err
    assert main(["emit-final", str(d / "base.dll"), str(d / "intermediate.dll"), "-o", str(out), *hp_args(d),
                 "--previous", str(first), "--sequence", "2"]) == 0
    text = capsys.readouterr().out
    assert "reverts: telemetry_record" in text
    from pehotpatch.api import inspect_image

    assert inspect_image(out).table.sequence == 2  # type: ignore[union-attr]


def test_rejected_pair_writes_nothing(tmp_path, capsys):
    d = Path(__file__).resolve().parents[1] / "samples" / "x64" / "inline_pulls"
    out = tmp_path / "final.dll"
    code = main(["emit-final", str(d / "base.dll"), str(d / "intermediate.dll"), "-o", str(out), *hp_args(d)])
    captured = capsys.readouterr()
    assert code == 1 and not out.exists() and list(tmp_path.iterdir()) == []
    assert "HP501" in captured.out  # the check's findings say why
    assert captured.err.startswith("pehp: error:") and "nothing written" in captured.err
    assert captured.err.count("\n") == 1
    # --force writes it, and says so
    assert main(["emit-final", str(d / "base.dll"), str(d / "intermediate.dll"), "-o", str(out), *hp_args(d),
                 "--force", "--json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["forced"] is True and doc["check_verdict"] == "rejected"
    assert any("--force" in n for n in doc["notes"])


def test_plan_json_round_trips(tmp_path):
    import json

    from pehotpatch.api import plan_pair
    from pehotpatch.plan.model import PatchPlan

    d = PATCHABLE[IDS.index("x86/fix_globals")]
    p = plan_pair(d / "base.dll", d / "intermediate.dll", functions_file=d / "hotpatch_functions.txt")
    doc = json.loads(json.dumps(p.to_json()))
    assert PatchPlan.from_json(doc).to_json() == p.to_json()
    assert doc["schema"] == "pehp-plan" and doc["applicable"] is True
    assert {x["target"] for x in doc["data"]} == {"g_config", "g_record_count", "g_last_value", "g_peak_value",
                                                  "g_last_error"}


def test_inspect_on_an_image_without_table(capsys):
    d = PATCHABLE[0]
    assert main(["inspect", str(d / "base.dll")]) == 0
    assert "no hot-patch table" in capsys.readouterr().out


def test_console_script_emit_final(tmp_path):
    d = PATCHABLE[IDS.index("x64/fix_globals")]
    out = tmp_path / "f.dll"
    r = subprocess.run([sys.executable, "-m", "pehotpatch.cli", "emit-final", str(d / "base.dll"),
                        str(d / "intermediate.dll"), "-o", str(out), *hp_args(d)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and "hot-patch table" in r.stdout


@pytest.mark.parametrize("scenario, reference, target, words", [
    ("fnptr_identity", "gate_is_default+0x10", "handler_default", "address of the unpatched function"),
    ("tls_ref", "__ref_t_depth", "t_depth", "TLS template"),
])
def test_plan_refuses_what_no_record_can_bind(tmp_path, capsys, scenario, reference, target, words):
    """A taken address of an unpatched function and a __ref_ slot into .tls: the plan names
    the reference and why; emit-final writes nothing (the check rejects these pairs too)."""
    d = Path(__file__).resolve().parents[1] / "samples" / "x64" / scenario
    assert main(["plan", str(d / "base.dll"), str(d / "intermediate.dll"), *hp_args(d), "--json"]) == 1
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["applicable"] is False
    [ref] = doc["refusals"]
    assert ref["reference"].startswith(reference) and ref["target"] == target and words in ref["reason"]
    out = tmp_path / "final.dll"
    assert main(["emit-final", str(d / "base.dll"), str(d / "intermediate.dll"), "-o", str(out), *hp_args(d)]) == 1
    assert not out.exists()


def test_new_import_is_refused_or_left_to_the_patch_iat(capsys):
    """An import the base lacks (Sleep): refused by default, an own import of the patch
    image with --allow-new-imports; an IAT copy from the base is never invented for it."""
    import json

    d = Path(__file__).resolve().parents[1] / "samples" / "x64" / "new_import"
    args = ["plan", str(d / "base.dll"), str(d / "intermediate.dll"), *hp_args(d), "--json"]
    assert main(args) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [r["target"] for r in doc["refusals"]] == ["kernel32.dll!Sleep"]
    assert main([*args, "--allow-new-imports"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [o["name"] for o in doc["own_imports"]] == ["kernel32.dll!Sleep"]
    assert doc["imports"] == [] and doc["refusals"] == []
