"""Checking two build trees: pair the images, find each pair's hot-patch inputs, check them
in parallel, and collect one :class:`TreeEntry` per image.

Images are paired by their path relative to each tree.  Trees as users lay them out often
differ by a versioned folder (two extracted wheels, ``pkg-1.2.data/...`` against
``pkg-1.3.data/...``; ``build-1234/`` against ``build-1240/``), so by default
(``pair_by="auto"``) the images left over are then paired by their path with the version
numbers of its folders masked, and the rest by file name where the name is unique on both
sides.  ``pair_by="path"`` or ``"name"`` forces one way.  Each entry says how it was paired.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pehotpatch.errors import EXIT_ERROR, EXIT_OK, EXIT_REJECTED, PehpError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.check import CheckResult

IMAGE_SUFFIXES = (".dll", ".exe", ".sys", ".pyd")

PATCHABLE, REJECTED, ERROR, UNPAIRED = "patchable", "rejected", "error", "unpaired"

#: How two images were paired (``TreeEntry.pairing``).
BY_PATH, BY_VERSIONED_PATH, BY_NAME = "path", "versioned-path", "name"
#: ``pair_by`` values: auto (path, then versioned path, then unique name), path, name.
PAIR_MODES = ("auto", BY_PATH, BY_NAME)

_VERSION = re.compile(r"\d+(?:[._-]\d+)*")


@dataclass(frozen=True)
class Pair:
    base: str  # relative paths
    intermediate: str
    how: str  # BY_PATH, BY_VERSIONED_PATH, BY_NAME


@dataclass(frozen=True)
class TreeJob:
    rel: str
    base: str
    intermediate: str
    functions_file: str | None
    objects: str | None
    allow_new_imports: bool
    ignore_pdb_mismatch: bool
    waivers: str | None
    base_rel: str = ""
    pairing: str = BY_PATH


@dataclass
class TreeEntry:
    """One image of a tree check: its verdict, or why it has none."""

    image: str  # relative path (of the intermediate image when paired)
    status: str  # patchable, rejected, error, unpaired
    message: str = ""
    check: dict[str, Any] | None = None  # the check's JSON document
    result: CheckResult | None = None
    base: str | None = None  # the base image's relative path, when paired
    pairing: str | None = None  # path, versioned-path or name, when paired

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image, "status": self.status}
        if self.pairing is not None:
            out["pairing"] = self.pairing
            out["base"] = self.base
        if self.message:
            out["message"] = self.message
        if self.check is not None:
            out["check"] = self.check
        return out


def find_images(root: Path) -> dict[str, Path]:
    """Relative POSIX path -> file, for every PE image under ``root`` (by extension)."""
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for fn in sorted(filenames):
            if fn.lower().endswith(IMAGE_SUFFIXES):
                p = Path(dirpath) / fn
                out[p.relative_to(root).as_posix()] = p
    return out


def sidecars(image: Path, images_in_dir: int) -> tuple[Path | None, Path | None]:
    """The functions file and objects directory that go with an intermediate image:
    ``<stem>.hotpatch_functions.txt`` (or ``hotpatch_functions.txt`` when the image is
    alone in its directory) and ``<stem>.objs/``."""
    ff: Path | None = image.with_name(image.stem + ".hotpatch_functions.txt")
    if ff is not None and not ff.is_file():
        alone = image.with_name("hotpatch_functions.txt")
        ff = alone if alone.is_file() and images_in_dir == 1 else None
    objs = image.with_name(image.stem + ".objs")
    return ff, (objs if objs.is_dir() else None)


def versioned_key(rel: str) -> str:
    """``rel`` with the version numbers of its folders masked (the file name kept):
    ``pkg-1.2.data/data/x.dll`` and ``pkg-1.3.data/data/x.dll`` have the same key."""
    parts = rel.split("/")
    return "/".join([_VERSION.sub("#", p) for p in parts[:-1]] + parts[-1:])


def _unique_matches(base: list[str], new: list[str], key: Callable[[str], str]) -> list[tuple[str, str]]:
    bk: dict[str, list[str]] = {}
    nk: dict[str, list[str]] = {}
    for r in base:
        bk.setdefault(key(r), []).append(r)
    for r in new:
        nk.setdefault(key(r), []).append(r)
    return [(bk[k][0], nk[k][0]) for k in sorted(bk.keys() & nk.keys()) if len(bk[k]) == 1 and len(nk[k]) == 1]


def _name(rel: str) -> str:
    return rel.rsplit("/", 1)[-1].lower()


def pair_images(base: Sequence[str], new: Sequence[str], pair_by: str = "auto"
                ) -> tuple[list[Pair], list[str], list[str]]:
    """Pair two trees' images (relative paths): the pairs, and the images left only in the
    base and only in the intermediate tree."""
    if pair_by not in PAIR_MODES:
        raise UsageError(f"--pair-by must be one of {', '.join(PAIR_MODES)}, not {pair_by!r}")
    left_b, left_n = sorted(base), sorted(new)
    pairs: list[Pair] = []
    steps: list[tuple[str, Callable[[str], str]]] = []
    if pair_by in ("auto", BY_PATH):
        steps.append((BY_PATH, lambda r: r))
    if pair_by == "auto":
        steps.append((BY_VERSIONED_PATH, versioned_key))
    if pair_by in ("auto", BY_NAME):
        steps.append((BY_NAME, _name))
    for how, key in steps:
        found = _unique_matches(left_b, left_n, key)
        pairs += [Pair(b, n, how) for b, n in found]
        used_b, used_n = {b for b, _ in found}, {n for _, n in found}
        left_b = [r for r in left_b if r not in used_b]
        left_n = [r for r in left_n if r not in used_n]
    pairs.sort(key=lambda p: p.intermediate)
    return pairs, left_b, left_n


def _unpaired_message(side: str, rel: str, others: Sequence[str], pair_by: str) -> str:
    msg = f"only in the {side} tree"
    same = [o for o in others if _name(o) == _name(rel)]
    if same and pair_by != BY_PATH:
        msg += f" (its name is not unique: {len(same)} image(s) of that name in the other tree)"
    return msg


def _hotpatch_inputs(image: Path, rel: str, images_in_dir: int, functions_file: Path | None,
                     objects: Path | None) -> tuple[Path | None, Path | None]:
    """The functions file and objects of an intermediate image: beside it (:func:`sidecars`),
    or in the directories given (per image: ``<rel>``'s folder under them, or directly,
    ``<stem>.hotpatch_functions.txt``/``<stem>.txt`` and ``<stem>.objs/``/``<stem>/``); a
    file given as ``functions_file`` serves every image."""
    ff, objs = sidecars(image, images_in_dir)
    stem = image.stem
    if functions_file is not None:
        if functions_file.is_dir():
            ff = _first_existing(functions_file, rel, [f"{stem}.hotpatch_functions.txt", f"{stem}.txt"],
                                 Path.is_file) or ff
        else:
            ff = functions_file
    if objects is not None:
        objs = _first_existing(objects, rel, [f"{stem}.objs", stem], Path.is_dir) or objs
    return ff, objs


def _first_existing(root: Path, rel: str, names: list[str], test: Callable[[Path], bool]) -> Path | None:
    folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
    for d in ([root / folder] if folder else []) + [root]:
        for n in names:
            if test(d / n):
                return d / n
    return None


def check_job(job: TreeJob) -> CheckResult:
    """Load, diff and check one pair of a tree (what ``pehotpatch.api.check_pair`` does,
    from the stages below the API, which calls this module)."""
    from pehotpatch.check import run_check
    from pehotpatch.diff import diff_images
    from pehotpatch.load import load_image
    from pehotpatch.rules.options import CheckOptions
    from pehotpatch.waivers import load_waivers

    wv = load_waivers(Path(job.waivers)) if job.waivers else None
    b = load_image(Path(job.base), ignore_pdb_mismatch=job.ignore_pdb_mismatch)
    n = load_image(Path(job.intermediate), objects=Path(job.objects) if job.objects else None,
                   functions_file=Path(job.functions_file) if job.functions_file else None,
                   ignore_pdb_mismatch=job.ignore_pdb_mismatch)
    return run_check(diff_images(b, n, jobs=1), CheckOptions(allow_new_imports=job.allow_new_imports), wv)


def _tree_worker(job: TreeJob) -> TreeEntry:
    from pehotpatch.render.check import check_to_json

    try:
        res = check_job(job)
    except PehpError as exc:
        return TreeEntry(job.rel, ERROR, str(exc), base=job.base_rel, pairing=job.pairing)
    except Exception as exc:  # noqa: BLE001 - one bad image must not hide the others
        return TreeEntry(job.rel, ERROR, f"internal error: {type(exc).__name__}: {exc}", base=job.base_rel,
                         pairing=job.pairing)
    return TreeEntry(job.rel, res.verdict, check=check_to_json(res), result=res, base=job.base_rel,
                     pairing=job.pairing)


def run_tree(base_dir: Path, intermediate_dir: Path, *, jobs: int = 1, waivers: Path | None = None,
             allow_new_imports: bool = False, ignore_pdb_mismatch: bool = False,
             progress: Any = None, pair_by: str = "auto", functions_file: Path | None = None,
             objects: Path | None = None) -> list[TreeEntry]:
    """Check every image pair of two trees; one entry per image, sorted by path."""
    for d in (base_dir, intermediate_dir):
        if not d.is_dir():
            raise UsageError("not a directory", d)
    if pair_by not in PAIR_MODES:
        raise UsageError(f"--pair-by must be one of {', '.join(PAIR_MODES)}, not {pair_by!r}")
    if functions_file is not None and not functions_file.exists():
        raise UsageError("no such file or directory", functions_file)
    if objects is not None and not objects.is_dir():
        raise UsageError("not a directory", objects)
    if waivers is not None:
        from pehotpatch.waivers import load_waivers

        load_waivers(waivers)  # fail once, early, on a bad waivers file
    bimgs, nimgs = find_images(base_dir), find_images(intermediate_dir)
    if not bimgs and not nimgs:
        raise UsageError(f"no PE images ({', '.join(IMAGE_SUFFIXES)}) under {base_dir} or {intermediate_dir}")
    per_dir: dict[Path, int] = {}
    for p in nimgs.values():
        per_dir[p.parent] = per_dir.get(p.parent, 0) + 1
    entries: list[TreeEntry] = []
    jobs_list: list[TreeJob] = []
    pairs, only_base, only_new = pair_images(list(bimgs), list(nimgs), pair_by)
    entries += [TreeEntry(r, UNPAIRED, _unpaired_message("base", r, only_new, pair_by)) for r in only_base]
    entries += [TreeEntry(r, UNPAIRED, _unpaired_message("intermediate", r, only_base, pair_by)) for r in only_new]
    for pr in pairs:
        img = nimgs[pr.intermediate]
        ff, objs = _hotpatch_inputs(img, pr.intermediate, per_dir[img.parent], functions_file, objects)
        jobs_list.append(TreeJob(pr.intermediate, str(bimgs[pr.base]), str(img), str(ff) if ff else None,
                                 str(objs) if objs else None, allow_new_imports, ignore_pdb_mismatch,
                                 str(waivers) if waivers else None, base_rel=pr.base, pairing=pr.how))
    task = progress.add_task("checking", total=len(jobs_list)) if progress is not None else None

    def done(entry: TreeEntry) -> None:
        entries.append(entry)
        if progress is not None:
            progress.update(task, advance=1, description=entry.image)

    _run_jobs(jobs_list, jobs, done)
    entries.sort(key=lambda e: e.image)
    return entries


def _run_jobs(jobs_list: list[TreeJob], jobs: int, done: Callable[[TreeEntry], None]) -> None:
    if jobs <= 1 or len(jobs_list) <= 1:
        for j in jobs_list:
            done(_tree_worker(j))
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context(method)) as pool:
        futs: list[Future[TreeEntry]] = [pool.submit(_tree_worker, j) for j in jobs_list]
        for fut, j in zip(futs, jobs_list, strict=True):
            try:
                done(fut.result())
            except Exception as exc:  # noqa: BLE001 - a crashed worker
                done(TreeEntry(j.rel, ERROR, f"worker failed: {exc}"))


def tree_exit_code(entries: Sequence[TreeEntry]) -> int:
    if any(e.status == ERROR for e in entries):
        return EXIT_ERROR
    if any(e.status == REJECTED for e in entries):
        return EXIT_REJECTED
    return EXIT_OK
