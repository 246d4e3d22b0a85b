"""`pehp check` and `pehp check-tree`: the patchability gate for CI.

``register(app)`` adds both commands to the `pehp` typer app.  The commands are
defined inside it so that this module can be imported before or after :mod:`pehotpatch.cli`
has finished defining the shared options it reuses.

Exit codes: 0 patchable, 1 rejected (some unwaived error), 2 usage or input error
(``check-tree``: some image pair could not be read; the others are still reported).
"""

# No `from __future__ import annotations`: typer reads these annotations at runtime,
# and the commands are defined in a function scope.

import io
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from pehotpatch.errors import EXIT_ERROR, EXIT_OK, EXIT_REJECTED, PehpError, UsageError

IMAGE_SUFFIXES = (".dll", ".exe", ".sys", ".pyd")


class OutputFormat(StrEnum):
    text = "text"
    json = "json"
    sarif = "sarif"


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


def check_pair(base: Path, intermediate: Path, *, pdb_base: Path | None = None, pdb: Path | None = None,
               objects: Path | None = None, functions_file: Path | None = None,
               ignore_pdb_mismatch: bool = False, waivers: Path | None = None,
               allow_new_imports: bool = False, jobs: int | None = None):
    """Load, diff and check one pair; raises :class:`PehpError` on bad input."""
    return _check_loaded(base, intermediate, pdb_base=pdb_base, pdb=pdb, objects=objects,
                         functions_file=functions_file, ignore_pdb_mismatch=ignore_pdb_mismatch,
                         waivers=waivers, allow_new_imports=allow_new_imports, jobs=jobs)[0]


def _check_loaded(base: Path, intermediate: Path, *, pdb_base: Path | None, pdb: Path | None,
                  objects: Path | None, functions_file: Path | None, ignore_pdb_mismatch: bool,
                  waivers: Path | None, allow_new_imports: bool, jobs: int | None):
    """:func:`check_pair`, also returning the two loaded images (for the files they came from)."""
    from pehotpatch.check import CheckOptions, run_check
    from pehotpatch.cli import load_pair
    from pehotpatch.diff import diff_images
    from pehotpatch.waivers import load_waivers

    wv = load_waivers(waivers) if waivers is not None else None
    b, n = load_pair(base, intermediate, pdb_base, pdb, objects, functions_file, ignore_pdb_mismatch)
    res = diff_images(b, n, jobs=jobs)
    return run_check(res, CheckOptions(allow_new_imports=allow_new_imports), wv), b, n


def _tree_worker(job: TreeJob) -> dict[str, Any]:
    from pehotpatch.render.check import check_to_json

    try:
        res = check_pair(Path(job.base), Path(job.intermediate),
                         objects=Path(job.objects) if job.objects else None,
                         functions_file=Path(job.functions_file) if job.functions_file else None,
                         ignore_pdb_mismatch=job.ignore_pdb_mismatch,
                         waivers=Path(job.waivers) if job.waivers else None,
                         allow_new_imports=job.allow_new_imports, jobs=1)
    except PehpError as exc:
        return {"image": job.rel, "status": "error", "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one bad image must not hide the others
        return {"image": job.rel, "status": "error", "message": f"internal error: {type(exc).__name__}: {exc}"}
    return {"image": job.rel, "status": res.verdict, "check": check_to_json(res), "result": res}


def run_tree(base_dir: Path, intermediate_dir: Path, *, jobs: int = 1, waivers: Path | None = None,
             allow_new_imports: bool = False, ignore_pdb_mismatch: bool = False,
             progress: Any = None) -> list[dict[str, Any]]:
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
    entries: list[dict[str, Any]] = []
    jobs_list: list[TreeJob] = []
    for rel in sorted(bimgs.keys() | nimgs.keys()):
        if rel not in nimgs:
            entries.append({"image": rel, "status": "unpaired", "message": "only in the base tree"})
            continue
        if rel not in bimgs:
            entries.append({"image": rel, "status": "unpaired", "message": "only in the intermediate tree"})
            continue
        ff, objs = sidecars(nimgs[rel], per_dir[nimgs[rel].parent])
        jobs_list.append(TreeJob(rel, str(bimgs[rel]), str(nimgs[rel]), str(ff) if ff else None,
                                 str(objs) if objs else None, allow_new_imports, ignore_pdb_mismatch,
                                 str(waivers) if waivers else None))
    task = progress.add_task("checking", total=len(jobs_list)) if progress is not None else None

    def done(entry: dict[str, Any]) -> None:
        entries.append(entry)
        if progress is not None:
            progress.update(task, advance=1, description=entry["image"])

    if jobs <= 1 or len(jobs_list) <= 1:
        for j in jobs_list:
            done(_tree_worker(j))
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context(method)) as pool:
            futs: list[Future] = [pool.submit(_tree_worker, j) for j in jobs_list]
            for fut, j in zip(futs, jobs_list, strict=True):
                try:
                    done(fut.result())
                except Exception as exc:  # noqa: BLE001 - a crashed worker
                    done({"image": j.rel, "status": "error", "message": f"worker failed: {exc}"})
    entries.sort(key=lambda e: e["image"])
    return entries


def tree_exit_code(entries: Sequence[dict[str, Any]]) -> int:
    if any(e["status"] == "error" for e in entries):
        return EXIT_ERROR
    if any(e["status"] == "rejected" for e in entries):
        return EXIT_REJECTED
    return EXIT_OK


def _write_text(render, output: Path | None, overwrite: bool, inputs: list[Path]) -> None:
    from pehotpatch.cli import _console

    if output is None:
        render(_console())
        return
    from rich.console import Console

    from pehotpatch.output import validate_text, write_atomic

    buf = io.StringIO()
    render(Console(file=buf, width=120, color_system=None, highlight=False, soft_wrap=False))
    write_atomic(output, buf.getvalue().encode("utf-8"), overwrite=overwrite, inputs=inputs,
                 validate=validate_text)


def register(app: typer.Typer) -> None:
    """Add ``check`` and ``check-tree`` to the `pehp` app (once; a second call does nothing)."""
    if any(c.name == "check" for c in app.registered_commands):
        return
    from pehotpatch.cli import (
        BaseImage,
        FunctionsFile,
        IgnoreMismatch,
        IntermediateImage,
        Jobs,
        Objects,
        PdbBase,
        PdbNew,
        emit_document,
        preflight_output,
        used_inputs,
    )

    Format = Annotated[OutputFormat, typer.Option("--format", "-f", help="text, json, or sarif (SARIF 2.1.0).")]
    Output = Annotated[Path | None, typer.Option("--output", "-o", help="Write the report to a file.")]
    Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
    Waivers = Annotated[Path | None, typer.Option("--waivers", help="TOML file of accepted findings.")]
    AllowImports = Annotated[
        bool, typer.Option("--allow-new-imports", help="New function imports are notes, not errors (HP212).")
    ]

    @app.command("check")
    def check(
        base: BaseImage,
        intermediate: IntermediateImage,
        pdb_base: PdbBase = None,
        pdb: PdbNew = None,
        objects: Objects = None,
        functions_file: FunctionsFile = None,
        ignore_pdb_mismatch: IgnoreMismatch = False,
        fmt: Format = OutputFormat.text,
        output: Output = None,
        overwrite: Overwrite = False,
        waivers: Waivers = None,
        allow_new_imports: AllowImports = False,
        jobs: Jobs = None,
    ) -> None:
        """Decide whether the intermediate can be hot-patched onto the base (exit 0 patchable, 1 rejected)."""
        given = (base, intermediate, pdb_base, pdb, objects, functions_file, waivers)
        preflight_output(output, overwrite, list(given))
        res, b, n = _check_loaded(base, intermediate, pdb_base=pdb_base, pdb=pdb, objects=objects,
                                  functions_file=functions_file, ignore_pdb_mismatch=ignore_pdb_mismatch,
                                  waivers=waivers, allow_new_imports=allow_new_imports, jobs=jobs)
        inputs = used_inputs(b, n, extra=given)
        if fmt is OutputFormat.json:
            from pehotpatch.render.check import check_to_json

            emit_document(check_to_json(res), output, overwrite=overwrite, inputs=inputs)
        elif fmt is OutputFormat.sarif:
            from pehotpatch.render.sarif import sarif_log

            emit_document(sarif_log([res]), output, overwrite=overwrite, inputs=inputs, kind="sarif")
        else:
            from pehotpatch.render.check import render_check

            _write_text(lambda c: render_check(res, c), output, overwrite, inputs)
        if res.exit_code:
            raise typer.Exit(res.exit_code)

    @app.command("check-tree")
    def check_tree(
        base_dir: Annotated[Path, typer.Argument(help="Tree of deployed (base) images.")],
        intermediate_dir: Annotated[Path, typer.Argument(help="Tree of rebuilt images, same relative paths.")],
        fmt: Format = OutputFormat.text,
        output: Output = None,
        overwrite: Overwrite = False,
        waivers: Waivers = None,
        allow_new_imports: AllowImports = False,
        ignore_pdb_mismatch: IgnoreMismatch = False,
        jobs: Annotated[int, typer.Option("--jobs", "-j", help="Images checked in parallel.")] = 1,
    ) -> None:
        """Check every image pair of two trees (paired by relative path; PDBs next to the images).

        Exit 1 if any image is rejected, 2 if some pair could not be read."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        if jobs < 1:
            raise UsageError("--jobs must be at least 1")
        inputs: list[Path] = [base_dir, intermediate_dir] + ([waivers] if waivers else [])
        preflight_output(output, overwrite, list(inputs))
        err = Console(stderr=True)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=True, disable=not err.is_terminal) as prog:
            entries = run_tree(base_dir, intermediate_dir, jobs=jobs, waivers=waivers,
                               allow_new_imports=allow_new_imports, ignore_pdb_mismatch=ignore_pdb_mismatch,
                               progress=prog)
        for e in entries:
            if e["status"] == "error":
                sys.stderr.write(f"pehp: error: {e['message']}\n")
        public = [{k: v for k, v in e.items() if k != "result"} for e in entries]
        if fmt is OutputFormat.json:
            from pehotpatch.render.check import tree_to_json

            emit_document(tree_to_json(public), output, overwrite=overwrite, inputs=inputs)
        elif fmt is OutputFormat.sarif:
            from pehotpatch.render.sarif import sarif_log

            results = [e["result"] for e in entries if "result" in e]
            errors = [(e["image"], e["message"]) for e in entries if e["status"] == "error"]
            emit_document(sarif_log(results, errors), output, overwrite=overwrite, inputs=inputs,
                          kind="sarif")
        else:
            from pehotpatch.render.check import render_tree

            _write_text(lambda c: render_tree(public, c), output, overwrite, inputs)
        code = tree_exit_code(entries)
        if code:
            raise typer.Exit(code)
