"""Checking two build trees: pair the images, find each pair's hot-patch inputs, check them
in parallel, and collect one :class:`TreeEntry` per image."""

from __future__ import annotations

import multiprocessing
import os
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


@dataclass
class TreeEntry:
    """One image of a tree check: its verdict, or why it has none."""

    image: str  # relative path
    status: str  # patchable, rejected, error, unpaired
    message: str = ""
    check: dict[str, Any] | None = None  # the check's JSON document
    result: CheckResult | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": self.image, "status": self.status}
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


def _tree_worker(job: TreeJob) -> TreeEntry:
    from pehotpatch.api import check_pair
    from pehotpatch.render.check import check_to_json

    try:
        res = check_pair(Path(job.base), Path(job.intermediate),
                         objects=Path(job.objects) if job.objects else None,
                         functions_file=Path(job.functions_file) if job.functions_file else None,
                         ignore_pdb_mismatch=job.ignore_pdb_mismatch,
                         waivers=Path(job.waivers) if job.waivers else None,
                         allow_new_imports=job.allow_new_imports, jobs=1)
    except PehpError as exc:
        return TreeEntry(job.rel, ERROR, str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad image must not hide the others
        return TreeEntry(job.rel, ERROR, f"internal error: {type(exc).__name__}: {exc}")
    return TreeEntry(job.rel, res.verdict, check=check_to_json(res), result=res)


def run_tree(base_dir: Path, intermediate_dir: Path, *, jobs: int = 1, waivers: Path | None = None,
             allow_new_imports: bool = False, ignore_pdb_mismatch: bool = False,
             progress: Any = None) -> list[TreeEntry]:
    """Check every image pair of two trees; one entry per image, sorted by path."""
    for d in (base_dir, intermediate_dir):
        if not d.is_dir():
            raise UsageError("not a directory", d)
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
    for rel in sorted(bimgs.keys() | nimgs.keys()):
        if rel not in nimgs:
            entries.append(TreeEntry(rel, UNPAIRED, "only in the base tree"))
            continue
        if rel not in bimgs:
            entries.append(TreeEntry(rel, UNPAIRED, "only in the intermediate tree"))
            continue
        ff, objs = sidecars(nimgs[rel], per_dir[nimgs[rel].parent])
        jobs_list.append(TreeJob(rel, str(bimgs[rel]), str(nimgs[rel]), str(ff) if ff else None,
                                 str(objs) if objs else None, allow_new_imports, ignore_pdb_mismatch,
                                 str(waivers) if waivers else None))
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
