"""check-tree pairs trees as users lay them out: by relative path, across versioned folders
(extracted wheels, numbered build folders), by unique file name; --pair-by forces one way;
--functions-file/--objects name directories of per-image files."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import SAMPLES, _corpus

from pehotpatch.cli import main
from pehotpatch.tree import BY_NAME, BY_PATH, BY_VERSIONED_PATH, pair_images, versioned_key


def test_versioned_key_masks_folder_versions_only():
    assert versioned_key("pkg-1.2.data/data/x140.dll") == versioned_key("pkg-1.3.data/data/x140.dll")
    assert versioned_key("build-1234/bin/a.dll") == "build-#/bin/a.dll"
    assert versioned_key("a/x140.dll") != versioned_key("a/x141.dll")  # file names are kept


def test_pairing_order_path_then_versioned_then_name():
    base = ["common/a.dll", "pkg-1.2.data/data/b.dll", "pkg-1.2.data/data/Scripts/b.dll",
            "old/place/c.dll", "x/d.dll", "y/d.dll", "gone.dll"]
    new = ["common/a.dll", "pkg-1.3.data/data/b.dll", "pkg-1.3.data/data/Scripts/b.dll",
           "new/spot/c.dll", "z/d.dll", "added.dll"]
    pairs, only_b, only_n = pair_images(base, new)
    got = {(p.base, p.intermediate, p.how) for p in pairs}
    assert got == {
        ("common/a.dll", "common/a.dll", BY_PATH),
        ("pkg-1.2.data/data/b.dll", "pkg-1.3.data/data/b.dll", BY_VERSIONED_PATH),
        ("pkg-1.2.data/data/Scripts/b.dll", "pkg-1.3.data/data/Scripts/b.dll", BY_VERSIONED_PATH),
        ("old/place/c.dll", "new/spot/c.dll", BY_NAME),
    }
    # d.dll is in two places in the base: its name is not unique, so it is not guessed
    assert only_b == ["gone.dll", "x/d.dll", "y/d.dll"] and only_n == ["added.dll", "z/d.dll"]


def test_pair_by_forces_one_way():
    base, new = ["build-1234/a.dll", "common/b.dll"], ["build-1240/a.dll", "other/b.dll"]
    pairs, only_b, only_n = pair_images(base, new, "path")
    assert pairs == [] and only_b == base and only_n == new
    pairs, _, _ = pair_images(base, new, "name")
    assert {(p.base, p.how) for p in pairs} == {("build-1234/a.dll", BY_NAME), ("common/b.dll", BY_NAME)}


def _tree(root: Path, layout: dict[str, tuple[str, str]], side: str) -> None:
    """``layout``: relative image path -> (arch, scenario); copies the sample's image and PDB."""
    for rel, (arch, scenario) in layout.items():
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / arch / scenario / f"{side}.dll", dst)
        shutil.copy(SAMPLES / arch / scenario / f"{side}.pdb", dst.with_suffix(".pdb"))


def run_json(capsys, *args: str) -> tuple[int, dict]:
    code = main(["check-tree", *args, "-f", "json"])
    return code, json.loads(capsys.readouterr().out)


def test_numbered_build_folders_with_per_image_functions_files(tmp_path, capsys):
    b, n = tmp_path / "base", tmp_path / "new"
    _tree(b, {"build-1234/bin/telemetry.dll": ("x64", "body_fix"), "build-1234/x86/gl.dll": ("x86", "fix_globals")},
          "base")
    _tree(n, {"build-1240/bin/telemetry.dll": ("x64", "body_fix"), "build-1240/x86/gl.dll": ("x86", "fix_globals")},
          "intermediate")
    # without its functions file, body_fix's changed function is not in the hot-patch set
    code, doc = run_json(capsys, str(b), str(n))
    by = {e["image"]: e for e in doc["images"]}
    e = by["build-1240/bin/telemetry.dll"]
    assert (e["status"], e["pairing"], e["base"]) == ("rejected", BY_VERSIONED_PATH, "build-1234/bin/telemetry.dll")
    assert [f["rule"] for f in e["check"]["findings"] if f["severity"] == "error"] == ["HP501"]
    assert by["build-1240/x86/gl.dll"]["status"] == "patchable" and code == 1
    # a directory of per-image functions files (the image's folder under it, or directly in it)
    ff = tmp_path / "hp" / "build-1240" / "bin"
    ff.mkdir(parents=True)
    shutil.copy(SAMPLES / "x64" / "body_fix" / "hotpatch_functions.txt", ff / "telemetry.hotpatch_functions.txt")
    code, doc = run_json(capsys, str(b), str(n), "--functions-file", str(tmp_path / "hp"))
    assert code == 0 and {e["status"] for e in doc["images"]} == {"patchable"}
    assert {e["pairing"] for e in doc["images"]} == {BY_VERSIONED_PATH}
    # objects: <stem>.objs/ in the directory given
    objs = tmp_path / "objs"
    shutil.copytree(SAMPLES / "x64" / "body_fix" / "intermediate.objs", objs / "telemetry.objs")
    code, doc = run_json(capsys, str(b), str(n), "--objects", str(objs))
    e = {e["image"]: e for e in doc["images"]}["build-1240/bin/telemetry.dll"]
    assert code == 0 and e["status"] == "patchable"
    assert e["check"]["hotpatch_set"] == {"telemetry_checksum": ["objects"]}
    # --pair-by path: nothing pairs, and the text says why
    code, doc = run_json(capsys, str(b), str(n), "--pair-by", "path")
    assert {e["status"] for e in doc["images"]} == {"unpaired"} and len(doc["images"]) == 4
    assert main(["check-tree", str(b), str(n), "--functions-file", str(tmp_path / "hp")]) == 0
    out = capsys.readouterr().out
    assert "build-1240/bin/telemetry.dll: paired across versioned folders with base build-1234/bin/telemetry.dll" in out


def test_moved_image_pairs_by_unique_name(tmp_path, capsys):
    b, n = tmp_path / "base", tmp_path / "new"
    _tree(b, {"lib/old/telemetry.dll": ("x64", "body_fix")}, "base")
    _tree(n, {"bin/telemetry.dll": ("x64", "body_fix")}, "intermediate")
    shutil.copy(SAMPLES / "x64" / "body_fix" / "hotpatch_functions.txt", n / "bin" / "hotpatch_functions.txt")
    code, doc = run_json(capsys, str(b), str(n))
    (e,) = doc["images"]
    assert (code, e["status"], e["pairing"], e["base"]) == (0, "patchable", BY_NAME, "lib/old/telemetry.dll")


@pytest.mark.parametrize("args,says", [(["--pair-by", "guess"], "'guess' is not one of 'auto', 'path', 'name'"),
                                       (["--functions-file", "/nonexistent/hp"], "pehp: error: /nonexistent/hp"),
                                       (["--objects", "/nonexistent/objs"], "pehp: error: /nonexistent/objs")])
def test_bad_pairing_options_exit_2(tmp_path, capsys, args, says):
    b, n = tmp_path / "b", tmp_path / "n"
    _tree(b, {"a.dll": ("x64", "body_fix")}, "base")
    _tree(n, {"a.dll": ("x64", "body_fix")}, "intermediate")
    assert main(["check-tree", str(b), str(n), *args]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.network
def test_two_extracted_msvc_runtime_wheels_pair_every_dll(tmp_path, capsys):
    """Two msvc-runtime wheels extracted as they are (versioned .data folders, the same DLL
    names in data/ and data/Scripts/): every image pairs."""
    import corpus

    roots = []
    for v in corpus.MSVC_RUNTIME_VERSIONS:
        wheel = _corpus(lambda ver: corpus._download("msvc-runtime", ver), v)
        root = tmp_path / v
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(root)
        roots.append(root)
    images = sorted(p.relative_to(roots[1]).as_posix() for p in roots[1].rglob("*")
                    if p.suffix.lower() in (".dll", ".pyd"))
    assert len(images) > 20 and any(".data/data/Scripts/" in i for i in images)
    code, doc = run_json(capsys, str(roots[0]), str(roots[1]), "-j", "2")
    assert [e["image"] for e in doc["images"]] == images
    assert "unpaired" not in {e["status"] for e in doc["images"]}, doc["summary"]
    dlls = [e for e in doc["images"] if e["image"].endswith(".dll")]
    assert dlls and {e["pairing"] for e in dlls} == {BY_VERSIONED_PATH}
    for e in dlls:
        assert e["base"] == e["image"].replace(corpus.MSVC_RUNTIME_VERSIONS[1], corpus.MSVC_RUNTIME_VERSIONS[0])
