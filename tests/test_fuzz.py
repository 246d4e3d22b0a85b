"""The fuzz harness (fuzz/): the CI subset of `make fuzz`, the regression corpus, and the
harness's own machinery (time limit, classification, minimisation, the CLI contract).

The short run is deterministic (fixed seed, samples only, no network) and covers every
command; every recipe in tests/data/fuzz is replayed in-process and through the CLI.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import pefile
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz import targets  # noqa: E402
from fuzz.cases import COMMANDS, Case, Seeds, generate, materialize  # noqa: E402
from fuzz.contract import contract_problems  # noqa: E402
from fuzz.edits import apply_edits, edit_from_json, edit_to_json  # noqa: E402
from fuzz.engine import FAILURES, Config, case_for, execute, format_summary, minimize, replay, run  # noqa: E402
from fuzz.layout import layout_for  # noqa: E402
from fuzz.mutators import op_type_cycle  # noqa: E402
from fuzz.regress import known_keys, load, recipes, seed_digests, signature_key  # noqa: E402
from pehotpatch.errors import FormatError, InputError  # noqa: E402

CI_INPUTS = 3000
CI_SEED = 20261121
X64 = ROOT / "samples" / "x64" / "fix_globals"
X86 = ROOT / "samples" / "x86" / "fix_globals"


@pytest.fixture(scope="module")
def seeds() -> Seeds:
    return Seeds(corpus=False)


# ---- the CI subset of `make fuzz` -------------------------------------------------------------


def test_short_deterministic_run_over_every_command(tmp_path):
    cfg = Config(inputs=CI_INPUTS, seed=CI_SEED, jobs=2, time_limit=30.0, cli_every=60,
                 out=tmp_path, progress=False, known=frozenset(known_keys()))
    s = run(cfg)
    report = format_summary(s)
    assert s.inputs == CI_INPUTS, report
    assert s.findings == [], report
    for command in COMMANDS:
        c = s.counts[command]
        # bad input is reported as such, and mutated inputs also get through to the end
        assert c["error"] > 0 and c["ok"] > 0, (command, report)
    assert s.cli_checks >= CI_INPUTS // 60 - 2, report
    assert json.loads((tmp_path / "summary.json").read_text())["inputs"] == CI_INPUTS


@pytest.mark.parametrize("path", recipes(), ids=lambda p: p.stem)
def test_regression_recipe(path, seeds, tmp_path):
    doc = load(path)
    case = Case.from_json(doc["case"])
    assert seed_digests(case, seeds) == doc["seed_sha256"], (
        f"a seed file of {path.name} changed since the recipe was recorded: re-find the input "
        "(python -m fuzz run) and re-record it with python -m fuzz keep")
    out, problems = replay(case, seeds)
    if doc.get("known_issue"):
        reproduced = out.signature is not None and signature_key(out.signature) == signature_key(doc["signature"])
        assert reproduced, f"{path.name} no longer fails ({out.status}): remove its known_issue"
        pytest.xfail(doc["known_issue"])
    assert out.status not in FAILURES, out.detail
    assert problems == []


# ---- generation, edits, layouts -------------------------------------------------------------


def test_cases_are_a_function_of_seed_and_index(seeds):
    cfg = Config(seed=5)
    a = [case_for(cfg, seeds, i).dumps() for i in range(40)]
    assert a == [case_for(cfg, seeds, i).dumps() for i in range(40)]
    assert len(set(a)) == 40
    assert {Case.from_json(json.loads(x)).command for x in a} == set(COMMANDS)
    for x in a:  # the recipe form round-trips
        assert Case.from_json(json.loads(x)).dumps() == x


def test_edits_apply_in_order_and_round_trip():
    edits = [("w", 1, b"XY"), ("i", 0, b"<"), ("d", 4, 1), ("w", 100, b"Z"), ("t", 5)]
    assert apply_edits(b"abcdefgh", edits) == b"<aXYe"
    assert [edit_from_json(edit_to_json(e)) for e in edits] == edits


def test_pe_layout_knows_the_hotpatch_field_where_pefile_finds_it():
    for d, field_off in ((X64, 0xF0), (X86, 0x94)):
        data = (d / "intermediate.dll").read_bytes()
        pe = pefile.PE(data=data, fast_load=True)
        lc = pe.OPTIONAL_HEADER.DATA_DIRECTORY[10]
        want = pe.get_offset_from_rva(lc.VirtualAddress) + field_off
        lay = layout_for(data, "pe")
        (f,) = [f for f in lay.groups["pe.hotpatch"] if f.name == "LoadConfig.HotPatchTableOffset"]
        assert f.off == want and f.size == 4
        (n,) = [f for f in lay.groups["pe.coff"] if f.name == "FileHeader.NumberOfSections"]
        assert n.off == pe.FILE_HEADER.get_file_offset() + 2
        secs = [f for f in lay.groups["pe.sections"] if f.name.endswith(".PointerToRawData")]
        assert [f.off for f in secs] == [s.get_file_offset() + 20 for s in pe.sections]


def test_type_cycles_made_by_the_mutator_are_format_errors(tmp_path):
    from pehotpatch.image.pdb import load_pdb

    data = (X64 / "intermediate.pdb").read_bytes()
    lay = layout_for(data, "pdb")
    assert lay.type_refs and "pdb.dbi.modules" in lay.groups and "pdb.msf" in lay.groups
    rng = random.Random(3)
    cycles = 0
    for k in range(25):
        p = tmp_path / f"{k}.pdb"
        p.write_bytes(apply_edits(data, op_type_cycle(rng, data, lay)))
        try:
            types = load_pdb(p).types
            for ti in range(types.types.first_index, types.types.end_index):
                types.type_name(ti)
                types.type_size(ti)
                types.layout(ti)
        except FormatError as exc:
            cycles += "cycle" in str(exc)
    assert cycles > 0


def test_materialized_tree_is_laid_out_for_check_tree(seeds, tmp_path):
    case = Case("check-tree", "samples:x64/fix_globals",
                {"format": "json", "objects": True, "functions_file": True, "waivers": True})
    inp = materialize(case, seeds, tmp_path / "t")
    names = sorted(p.relative_to(inp.root).as_posix() for p in inp.files)
    assert "base/lib.dll" in names and "base/lib.pdb" in names and "intermediate/lib.pdb" in names
    assert "intermediate/lib.hotpatch_functions.txt" in names and "waivers.toml" in names
    assert any(n.startswith("intermediate/lib.objs/") for n in names)
    assert execute(case, seeds, tmp_path / "run", 60).status == "ok"


# ---- classification, time limit, minimisation ------------------------------------------------


def _case_with_edits(n: int, seeds: Seeds) -> Case:
    rng = random.Random(11)
    while True:
        case = generate(rng, seeds, ("info",))
        if not case.options.get("symbols"):
            break
    side = case.options["side"]
    case.edits = {f"{side}.dll": [("w", 300 + 8 * k, b"\x11") for k in range(n)]}
    return case


def test_outcomes_are_classified(seeds, tmp_path, monkeypatch):
    case = _case_with_edits(3, seeds)

    def boom(case, inp):
        raise KeyError("x")

    def bad_input(case, inp):
        raise InputError("corrupt", "f.dll")

    def spin(case, inp):
        while True:
            time.sleep(0.01)

    for fn, status in ((boom, "crash"), (bad_input, "error"), (spin, "timeout")):
        monkeypatch.setitem(targets.TARGETS, "info", fn)
        out = execute(case, seeds, tmp_path, 0.5)
        assert out.status == status
        if status != "error":
            assert out.signature and out.signature.split(" at ")[0] in ("KeyError", "timeout")
            assert "test_fuzz.py" in out.signature
    assert not (tmp_path / "case").exists(), "the case directory is removed after each input"


def test_minimize_keeps_only_the_edit_that_matters(seeds, tmp_path, monkeypatch):
    case = _case_with_edits(9, seeds)
    side = case.options["side"]
    case.edits[f"{side}.dll"].insert(4, ("w", 77, b"\xab"))

    def picky(case, inp):
        if inp.image.read_bytes()[77] == 0xAB:
            raise ValueError("the byte")

    monkeypatch.setitem(targets.TARGETS, "info", picky)
    out = execute(case, seeds, tmp_path, 5)
    assert out.status == "crash"
    small = minimize(case, seeds, tmp_path, 5, out.signature)
    assert small.edits == {f"{side}.dll": [("w", 77, b"\xab")]}


# ---- the CLI contract -------------------------------------------------------------------------


def test_contract_problems(tmp_path):
    out = tmp_path / "report.json"
    assert contract_problems("check", True, 2, "pehp: error: a.dll: truncated\n", out, tmp_path) == []
    out.write_text("{}")
    assert contract_problems("check", True, 0, "", out, tmp_path) == []
    assert contract_problems("check", True, 2, "pehp: error: x\n", out, tmp_path) == [
        "an output was written although the command failed"]
    assert "exit code 1" in contract_problems("diff", True, 1, "", out, tmp_path)
    out.write_text("{")
    assert any("not valid JSON" in p for p in contract_problems("info", True, 0, "", out, tmp_path))
    out.unlink()
    assert contract_problems("info", True, 0, "", out, tmp_path) == [
        "no output written although the command succeeded"]
    two = "pehp: error: a\npehp: error: b\n"
    assert len(contract_problems("diff", True, 2, two, out, tmp_path)) == 1
    assert contract_problems("check-tree", True, 2, two, out, tmp_path) == []
    crash = "pehp: internal error: KeyError: 3 (rerun with --debug for a traceback)\n"
    assert len(contract_problems("check", True, 2, crash, out, tmp_path)) == 2
    (tmp_path / ".report.json.x.tmp").write_text("")
    assert any("stray" in p for p in contract_problems("check", True, 2, "pehp: error: y\n", out, tmp_path))


def test_real_cli_keeps_the_contract_on_a_truncated_pdb(seeds, tmp_path):
    """One fixed bad input through the real `pehp`: exit 2, one line, no output, inputs intact."""
    from fuzz.contract import check_cli

    case = Case("check", "samples:x64/fix_globals", {"format": "sarif", "explicit_pdb": True},
                {"intermediate.pdb": [("t", 5000)]})
    assert execute(case, seeds, tmp_path / "a", 60).status == "error"
    assert check_cli(case, seeds, tmp_path / "b") == []
    assert not any((tmp_path / "b" / "out").iterdir())


def test_names_with_markup_are_printed_literally(seeds, tmp_path):
    """The fixed renderers print an export name "[/]" and a finding naming "[/bold]" as is."""
    import io

    from rich.console import Console

    from pehotpatch.api import check_tree
    from pehotpatch.image.pe_reader import load_pe
    from pehotpatch.render.check import render_tree
    from pehotpatch.render.info import render_info

    def text(render) -> str:
        buf = io.StringIO()
        render(Console(file=buf, width=200, color_system=None))
        return buf.getvalue()

    doc = load(ROOT / "tests" / "data" / "fuzz" / "markup-info-export-name.json")
    inp = materialize(Case.from_json(doc["case"]), seeds, tmp_path / "info")
    assert "[/]" in text(lambda c: render_info(load_pe(inp.image), c))
    doc = load(ROOT / "tests" / "data" / "fuzz" / "markup-check-tree-text.json")
    inp = materialize(Case.from_json(doc["case"]), seeds, tmp_path / "tree")
    entries = [e.to_json() for e in check_tree(inp.base, inp.intermediate)]
    assert "[/bold]" in text(lambda c: render_tree(entries, c))
