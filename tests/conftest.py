"""Shared fixtures: the committed samples, real Microsoft-built DLLs from the registry."""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
sys.path.insert(0, str(ROOT / "tools"))

IN_CI = os.environ.get("CI") == "true"
# Tests compute everything: the cache of normalised code and pairings (pehotpatch/cache.py)
# is off, for the test process and the pehp processes it starts, except where
# tests/test_cache.py turns it on.
os.environ["PEHP_NO_CACHE"] = "1"
PDB_DATA = ROOT / "tests" / "data" / "pdb"


def pdb_fixture_build():
    """tests/data/pdb/build.py (builds and dumps the committed PDB/object fixtures)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("pehp_pdb_fixture_build", PDB_DATA / "build.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def have_toolchain() -> bool:
    return all(shutil.which(t) for t in ("clang-cl-22", "lld-link-22"))


def scenario_dirs() -> list[Path]:
    """Every ``samples/<arch>/<scenario>/`` that has an expect.toml."""
    return sorted(p.parent for p in SAMPLES.glob("*/*/expect.toml"))


def load_expect(d: Path) -> dict:
    with open(d / "expect.toml", "rb") as fh:
        return tomllib.load(fh)


def _corpus(fetch, version: str) -> Path:
    try:
        return fetch(version)
    except Exception as exc:  # no network
        if IN_CI:
            raise
        pytest.skip(f"cannot download the real-world corpus: {exc}")


@pytest.fixture(scope="session")
def msvc_dlls() -> list[Path]:
    """All DLLs of one msvc-runtime release (MSVC-built, signed, with load config)."""
    import corpus

    d = _corpus(corpus.msvc_runtime, corpus.MSVC_RUNTIME_VERSIONS[0])
    return sorted(d.glob("*.dll"))


@pytest.fixture(scope="session")
def msvc_pair() -> tuple[Path, Path]:
    """The two msvc-runtime releases' directories."""
    import corpus

    return tuple(_corpus(corpus.msvc_runtime, v) for v in corpus.MSVC_RUNTIME_VERSIONS)  # type: ignore[return-value]


#: Fixtures that download from the package registry: a test using one is a `network` test.
NETWORK_FIXTURES = frozenset({"msvc_dlls", "msvc_pair", "realworld_images", "numpy_diff"})


def pytest_collection_modifyitems(config, items):
    """Mark every test that downloads (through a fixture) as `network`, so that
    `make test-fast` (-m "not network") runs offline."""
    for item in items:
        if NETWORK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.network)
