"""Real-world images from the package registry, downloaded on demand (never committed).

    python tools/corpus.py msvc 14.42.34433      # prints the extracted directory

Wheels are fetched with ``pip download`` into ``.cache/wheels`` and unpacked into
``.cache/corpus/<name>-<version>/``; later calls reuse them.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"

MSVC_RUNTIME_VERSIONS = ("14.42.34433", "14.44.35112")
NUMPY_VERSIONS = ("2.5.4", "2.5.5")


def _download(project: str, version: str) -> Path:
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    norm = project.replace("-", "_")
    found = sorted(wheels.glob(f"{norm}-{version}-*win_amd64.whl"))
    if found:
        return found[0]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
         "--platform", "win_amd64", "--python-version", "3.12", f"{project}=={version}",
         "-d", str(wheels)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    found = sorted(wheels.glob(f"{norm}-{version}-*win_amd64.whl"))
    if not found:
        raise RuntimeError(f"pip download gave no win_amd64 wheel for {project}=={version}")
    return found[0]


def _extract(wheel: Path, dest: Path, suffixes: tuple[str, ...], keep: str = "") -> Path:
    if dest.is_dir() and any(dest.iterdir()):
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            name = info.filename
            if not name.lower().endswith(suffixes) or keep not in name:
                continue
            rel = Path(name.split(keep, 1)[1]) if keep else Path(name)
            if rel.is_absolute() or ".." in rel.parts:
                continue
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
    tmp.rename(dest)
    return dest


def msvc_runtime(version: str) -> Path:
    """Directory holding the DLLs of one msvc-runtime release."""
    wheel = _download("msvc-runtime", version)
    return _extract(wheel, CACHE / "corpus" / f"msvc-runtime-{version}", (".dll",), "/Scripts/")


def numpy(version: str) -> Path:
    """Directory holding the .pyd/.dll files of one numpy win_amd64 release (wheel layout)."""
    wheel = _download("numpy", version)
    return _extract(wheel, CACHE / "corpus" / f"numpy-{version}", (".pyd", ".dll"))


def numpy_image(version: str, pattern: str) -> Path:
    """One image of a numpy release, e.g. ``numpy_image("2.5.5", "_multiarray_umath*.pyd")``."""
    found = sorted(numpy(version).rglob(pattern))
    if not found:
        raise FileNotFoundError(f"no {pattern} in numpy {version}")
    return found[0]


if __name__ == "__main__":
    kind, version = sys.argv[1], sys.argv[2]
    print({"msvc": msvc_runtime, "numpy": numpy}[kind](version))
