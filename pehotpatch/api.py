"""pehp as a library: the functions a script calls, one per step of the pipeline.

Every function takes paths (or the results of an earlier step) and keyword-only options,
returns a typed result, and raises :class:`pehotpatch.errors.PehpError` (one line naming the
file and the problem) on bad input.  The `pehp` command line is a thin shell over these.

>>> import pehotpatch as pehp
>>> d = pehp.diff_pair("samples/x64/fix_globals/base.dll",
...                    "samples/x64/fix_globals/intermediate.dll")
>>> [f.new.name for f in d.changed_functions]
['telemetry_record']
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.check import CheckResult
    from pehotpatch.diff import DiffResult
    from pehotpatch.image.loader import LoadedImage
    from pehotpatch.tree import TreeEntry
    from pehotpatch.waivers import Waiver

PathLike = str | os.PathLike[str]


def _p(p: PathLike | None) -> Path | None:
    return None if p is None else Path(p)


def load_image(image: PathLike, *, pdb: PathLike | None = None, objects: PathLike | None = None,
               functions_file: PathLike | None = None,
               ignore_pdb_mismatch: bool = False) -> LoadedImage:
    """One image with its symbols (PDB found next to it unless given), and, for an
    intermediate, its hot-patch set from ``objects`` and ``functions_file``.

    >>> li = load_image("samples/x64/fix_globals/intermediate.dll",
    ...                 functions_file="samples/x64/fix_globals/hotpatch_functions.txt")
    >>> li.pe.machine.value, sorted(li.hotpatch.names)
    ('x64', ['telemetry_record'])
    """
    from pehotpatch.image.loader import load_image as _load

    return _load(Path(image), pdb=_p(pdb), objects=_p(objects), functions_file=_p(functions_file),
                 ignore_pdb_mismatch=ignore_pdb_mismatch)


def load_pair(base: PathLike, intermediate: PathLike, *, pdb_base: PathLike | None = None,
              pdb: PathLike | None = None, objects: PathLike | None = None,
              functions_file: PathLike | None = None,
              ignore_pdb_mismatch: bool = False) -> tuple[LoadedImage, LoadedImage]:
    """The base and the intermediate, loaded (the hot-patch inputs belong to the intermediate).

    >>> b, n = load_pair("samples/x64/fix_globals/base.dll",
    ...                  "samples/x64/fix_globals/intermediate.dll")
    >>> b.pe.machine == n.pe.machine
    True
    """
    b = load_image(base, pdb=pdb_base, ignore_pdb_mismatch=ignore_pdb_mismatch)
    n = load_image(intermediate, pdb=pdb, objects=objects, functions_file=functions_file,
                   ignore_pdb_mismatch=ignore_pdb_mismatch)
    return b, n


def diff_loaded(base: LoadedImage, intermediate: LoadedImage, *, jobs: int | None = None) -> DiffResult:
    """Correlate and compare two loaded images (see :func:`diff_pair`)."""
    from pehotpatch.diff import diff_images

    return diff_images(base, intermediate, jobs=jobs)


def diff_pair(base: PathLike, intermediate: PathLike, *, pdb_base: PathLike | None = None,
              pdb: PathLike | None = None, objects: PathLike | None = None,
              functions_file: PathLike | None = None, ignore_pdb_mismatch: bool = False,
              jobs: int | None = None) -> DiffResult:
    """Every function and global of the two builds, paired, and what really changed.

    >>> d = diff_pair("samples/x64/body_fix/base.dll", "samples/x64/body_fix/intermediate.dll")
    >>> [f.new.name for f in d.changed_functions], d.added_functions
    (['telemetry_checksum'], [])
    """
    b, n = load_pair(base, intermediate, pdb_base=pdb_base, pdb=pdb, objects=objects,
                     functions_file=functions_file, ignore_pdb_mismatch=ignore_pdb_mismatch)
    return diff_loaded(b, n, jobs=jobs)


def check_diff(diff: DiffResult, *, waivers: PathLike | list[Waiver] | None = None,
               allow_new_imports: bool = False) -> CheckResult:
    """The gate's verdict on a diff: findings with rule IDs, waivers applied."""
    from pehotpatch.check import run_check
    from pehotpatch.rules.options import CheckOptions
    from pehotpatch.waivers import load_waivers

    wv = load_waivers(Path(waivers)) if isinstance(waivers, str | os.PathLike) else waivers
    return run_check(diff, CheckOptions(allow_new_imports=allow_new_imports), wv)


def check_pair(base: PathLike, intermediate: PathLike, *, pdb_base: PathLike | None = None,
               pdb: PathLike | None = None, objects: PathLike | None = None,
               functions_file: PathLike | None = None, ignore_pdb_mismatch: bool = False,
               waivers: PathLike | None = None, allow_new_imports: bool = False,
               jobs: int | None = None) -> CheckResult:
    """Load, diff and check one pair: is the fix hot-patchable onto the base?

    >>> r = check_pair("samples/x64/inline_pulls/base.dll",
    ...                "samples/x64/inline_pulls/intermediate.dll",
    ...                objects="samples/x64/inline_pulls/intermediate.objs",
    ...                functions_file="samples/x64/inline_pulls/hotpatch_functions.txt")
    >>> r.verdict, r.exit_code, "HP501" in r.rule_ids()
    ('rejected', 1, True)
    """
    from pehotpatch.waivers import load_waivers

    wv = load_waivers(Path(waivers)) if waivers is not None else None  # bad waivers fail before loading
    d = diff_pair(base, intermediate, pdb_base=pdb_base, pdb=pdb, objects=objects,
                  functions_file=functions_file, ignore_pdb_mismatch=ignore_pdb_mismatch, jobs=jobs)
    return check_diff(d, waivers=wv, allow_new_imports=allow_new_imports)


def check_tree(base_dir: PathLike, intermediate_dir: PathLike, *, jobs: int = 1,
               waivers: PathLike | None = None, allow_new_imports: bool = False,
               ignore_pdb_mismatch: bool = False, progress: Any = None) -> list[TreeEntry]:
    """Check every image pair of two build trees (paired by relative path; each pair's
    PDBs, ``<stem>.hotpatch_functions.txt`` and ``<stem>.objs/`` found beside it).

    >>> entries = check_tree("samples/x64", "samples/x64")
    >>> sorted({e.status for e in entries})
    ['patchable']
    """
    from pehotpatch.tree import run_tree

    return run_tree(Path(base_dir), Path(intermediate_dir), jobs=jobs, waivers=_p(waivers),
                    allow_new_imports=allow_new_imports, ignore_pdb_mismatch=ignore_pdb_mismatch,
                    progress=progress)


__all__ = ["load_image", "load_pair", "diff_loaded", "diff_pair", "check_diff", "check_pair", "check_tree"]
