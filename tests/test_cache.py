"""The cache of normalised code and pairings (pehotpatch/cache.py): a run that reads it gives
exactly the result of one that computes, on every sample pair with and without PDBs; what is
read back is really used; a damaged or foreign entry is ignored; the cache can be turned off;
an unusable cache directory costs nothing but speed."""

from __future__ import annotations

import json
import marshal
import os
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLES

import pehotpatch.codemap as codemap
import pehotpatch.correlate as correlate_mod
from pehotpatch import cache
from pehotpatch.api import check_pair, diff_pair
from pehotpatch.render.check import check_to_json
from pehotpatch.render.diff import diff_to_json

PAIRS = sorted(d for d in SAMPLES.glob("*/*") if (d / "base.dll").is_file() and (d / "intermediate.dll").is_file())


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.delenv("PEHP_NO_CACHE", raising=False)
    monkeypatch.setenv("PEHP_CACHE_DIR", str(d))
    return d


def _functions_file(d: Path) -> Path | None:
    f = d / "hotpatch_functions.txt"
    return f if f.is_file() else None


def _outputs(base: Path, inter: Path, ff: Path | None) -> tuple[str, str]:
    d = diff_pair(base, inter, functions_file=ff, jobs=1)
    c = check_pair(base, inter, functions_file=ff, jobs=1)
    return (json.dumps(diff_to_json(d, verbose=True), sort_keys=True),
            json.dumps(check_to_json(c), sort_keys=True))


def _no_computing(monkeypatch) -> None:
    """From here on, normalising an image's functions or pairing them from scratch fails."""
    def refuse(*_a, **_k):
        raise AssertionError("computed although the cache holds it")

    monkeypatch.setattr(codemap, "_build_codemaps", refuse)
    monkeypatch.setattr(codemap, "normalize_function", refuse)
    monkeypatch.setattr(correlate_mod, "_pair_functions", refuse)


@pytest.mark.parametrize("alone", [False, True], ids=["pdbs", "dlls-alone"])
@pytest.mark.parametrize("d", PAIRS, ids=lambda d: f"{d.parent.name}/{d.name}")
def test_a_run_from_the_cache_equals_a_computed_one(d, alone, cache_dir, tmp_path, monkeypatch):
    base, inter = d / "base.dll", d / "intermediate.dll"
    if alone:  # structural pairing only: no PDB next to the images
        (tmp_path / "b").mkdir()
        (tmp_path / "n").mkdir()
        base, inter = shutil.copy(base, tmp_path / "b"), shutil.copy(inter, tmp_path / "n")
    ff = _functions_file(d)
    monkeypatch.setenv("PEHP_NO_CACHE", "1")
    computed = _outputs(base, inter, ff)
    assert not cache_dir.exists()  # off: nothing written
    monkeypatch.delenv("PEHP_NO_CACHE")
    assert _outputs(base, inter, ff) == computed  # fills the cache
    names = [p.name.split("-")[0] for p in cache_dir.glob("*.entry")]
    assert names.count("pairing") == 1 and names.count("codemap") >= 2
    _no_computing(monkeypatch)
    assert _outputs(base, inter, ff) == computed  # reads it


def test_a_changed_image_is_not_read_from_the_cache(cache_dir, tmp_path, monkeypatch):
    """The key holds the image's bytes: the same file name with other contents is computed."""
    d = SAMPLES / "x64" / "body_fix"
    inter = tmp_path / "intermediate.dll"
    shutil.copy(d / "intermediate.dll", inter)
    diff_pair(d / "base.dll", inter, jobs=1)
    shutil.copy(SAMPLES / "x64" / "fix_globals" / "intermediate.dll", inter)  # other bytes, same name
    calls = []
    real = codemap._build_codemaps
    monkeypatch.setattr(codemap, "_build_codemaps", lambda ixs, **k: calls.append(len(ixs)) or real(ixs, **k))
    res = diff_to_json(diff_pair(d / "base.dll", inter, jobs=1), verbose=True)
    assert calls == [1]  # the base from the cache, the other image computed
    monkeypatch.setenv("PEHP_NO_CACHE", "1")
    assert res == diff_to_json(diff_pair(d / "base.dll", inter, jobs=1), verbose=True)


def test_damaged_entries_are_ignored_and_rewritten(cache_dir, monkeypatch):
    d = SAMPLES / "x64" / "body_fix"
    monkeypatch.setenv("PEHP_NO_CACHE", "1")
    computed = _outputs(d / "base.dll", d / "intermediate.dll", None)
    monkeypatch.delenv("PEHP_NO_CACHE")
    _outputs(d / "base.dll", d / "intermediate.dll", None)
    entries = sorted(cache_dir.glob("*.entry"))
    assert len(entries) >= 3
    def sealed(data: bytes) -> bytes:  # a valid checksum over data of the wrong shape
        import hashlib

        return hashlib.blake2b(data, digest_size=16).digest() + data

    damage = [b"", b"\x00garbage", sealed(marshal.dumps([("not", "a", "function")])),
              sealed(marshal.dumps(({1: 2}, 3)))]
    for k, p in enumerate(entries):
        p.write_bytes(damage[k % len(damage)])
    assert _outputs(d / "base.dll", d / "intermediate.dll", None) == computed
    # rewritten: a third run computes nothing
    _no_computing(monkeypatch)
    assert _outputs(d / "base.dll", d / "intermediate.dll", None) == computed


def test_a_flipped_byte_in_an_entry_is_never_read_back(cache_dir, monkeypatch):
    """Every entry holds a checksum: a byte changed anywhere in it (a digest, an address,
    which would still unmarshal) makes the run compute instead of using wrong values."""
    d = SAMPLES / "x64" / "body_fix"
    monkeypatch.setenv("PEHP_NO_CACHE", "1")
    computed = _outputs(d / "base.dll", d / "intermediate.dll", None)
    monkeypatch.delenv("PEHP_NO_CACHE")
    _outputs(d / "base.dll", d / "intermediate.dll", None)
    for p in cache_dir.glob("*.entry"):
        raw = bytearray(p.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        p.write_bytes(bytes(raw))
        assert cache.get(p.name.removesuffix(".entry")) is None
    assert _outputs(d / "base.dll", d / "intermediate.dll", None) == computed


def test_a_pairing_that_does_not_fit_the_images_is_not_used(cache_dir, monkeypatch):
    d = SAMPLES / "x64" / "body_fix"
    diff_pair(d / "base.dll", d / "intermediate.dll", jobs=1)
    (entry,) = cache_dir.glob("pairing-*.entry")
    pairs, dmap = cache.get(entry.name.removesuffix(".entry"))
    b, n, m = pairs[0]
    cache.put(entry.name.removesuffix(".entry"), ([(b + 1, n, m), *pairs[1:]], dmap))  # no function there
    calls = []
    real = correlate_mod._pair_functions
    monkeypatch.setattr(correlate_mod, "_pair_functions", lambda p: calls.append(1) or real(p))
    res = diff_pair(d / "base.dll", d / "intermediate.dll", jobs=1)
    assert calls == [1]
    assert [f.new.name for f in res.changed_functions] == ["telemetry_checksum"]


def test_an_unusable_cache_directory_only_costs_speed(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.delenv("PEHP_NO_CACHE", raising=False)
    monkeypatch.setenv("PEHP_CACHE_DIR", str(blocker / "cache"))
    d = SAMPLES / "x64" / "body_fix"
    res = diff_pair(d / "base.dll", d / "intermediate.dll", jobs=1)
    assert [f.new.name for f in res.changed_functions] == ["telemetry_checksum"]
    assert blocker.read_text() == "not a directory"


def test_where_the_cache_lives(tmp_path, monkeypatch):
    monkeypatch.delenv("PEHP_NO_CACHE", raising=False)
    monkeypatch.delenv("PEHP_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.directory() == tmp_path / "xdg" / "pehp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.directory() == tmp_path / "home" / ".cache" / "pehp"
    monkeypatch.setenv("PEHP_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.directory() == tmp_path / "mine"
    for off in ("1", "yes"):
        monkeypatch.setenv("PEHP_NO_CACHE", off)
        assert cache.directory() is None
    monkeypatch.setenv("PEHP_NO_CACHE", "0")
    assert cache.directory() == tmp_path / "mine"


def test_keys_change_with_every_part():
    k = cache.key("codemap", b"a", b"bc")
    assert k.startswith("codemap-")
    assert len({k, cache.key("codemap", b"ab", b"c"), cache.key("pairing", b"a", b"bc"),
                cache.key("codemap", b"a", b"bd")}) == 4
    assert cache.key("codemap", b"a", b"bc") == k


def test_the_cache_is_kept_under_its_size(cache_dir, monkeypatch):
    monkeypatch.setattr(cache, "MAX_BYTES", 2500)
    monkeypatch.setattr(cache, "PRUNE_EVERY_S", 0.0)
    for i in range(6):
        cache.put(f"t-{i}", b"x" * 1000)
        p = cache_dir / f"t-{i}.entry"
        assert cache.get(f"t-{i}") == b"x" * 1000
        os.utime(p, (1000 + i, 1000 + i))  # oldest first
    left = sorted(p.name for p in cache_dir.glob("*.entry"))
    assert left == ["t-4.entry", "t-5.entry"]
    assert [p.name for p in cache_dir.glob(".*")] == [".pruned"]  # no temporary file left


def test_pruning_waits_between_runs(cache_dir, monkeypatch):
    """A large cache is not listed after every write: at most once per PRUNE_EVERY_S."""
    monkeypatch.setattr(cache, "MAX_BYTES", 2500)
    for i in range(6):
        cache.put(f"t-{i}", b"x" * 1000)
    assert len(list(cache_dir.glob("*.entry"))) == 6  # pruned before the first write only
    os.utime(cache_dir / ".pruned", (0, 0))  # long ago
    cache.put("t-6", b"x" * 1000)
    assert len(list(cache_dir.glob("*.entry"))) == 2


@pytest.mark.network
def test_numpy_from_the_cache_equals_computed(cache_dir, monkeypatch):
    """numpy 2.5.4 -> 2.5.5 ``_multiarray_umath``, no PDB: the parallel normalisation (two
    processes, the rebuild's templates reused for the base) and the structural pairing,
    stored and read back, give the diff and the verification of a final image exactly."""
    import corpus

    from pehotpatch.api import emit_final, verify_final

    try:
        base, inter = (corpus.numpy_image(v, "_multiarray_umath*.pyd") for v in corpus.NUMPY_VERSIONS)
    except Exception as exc:  # no network
        from conftest import IN_CI

        if IN_CI:
            raise
        pytest.skip(f"cannot download the real-world corpus: {exc}")
    monkeypatch.setenv("PEHP_NO_CACHE", "1")
    computed = diff_to_json(diff_pair(base, inter), verbose=True)
    changed = sorted({f["name"] for f in computed["functions"] if f["status"] in ("changed", "changed-through-data")})
    ff = cache_dir.parent / "functions.txt"
    ff.write_text("\n".join(changed) + "\n")
    final = cache_dir.parent / "final.dll"
    emit_final(base, inter, final, functions_file=ff, force=True)
    cold = verify_final(final, base=base, intermediate=inter, functions_file=ff)
    assert cold.ok and cold.checked_records > 100
    monkeypatch.delenv("PEHP_NO_CACHE")
    assert diff_to_json(diff_pair(base, inter), verbose=True) == computed  # fills the cache
    _no_computing(monkeypatch)
    assert diff_to_json(diff_pair(base, inter), verbose=True) == computed
    warm = verify_final(final, base=base, intermediate=inter, functions_file=ff)
    assert (warm.ok, warm.checked_records, warm.findings) == (cold.ok, cold.checked_records, cold.findings)
