"""Shared helpers for the check/rules/SARIF tests: sample diffs (computed once), ways to
derive a variant of a real diff for the rules no sample exercises, and the CLI."""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path

from pehotpatch.check import CheckOptions, CheckResult, run_check
from pehotpatch.diff import DiffResult, diff_images
from pehotpatch.load import load_image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def sample_dir(arch: str, scenario: str) -> Path:
    return SAMPLES / arch / scenario


@cache
def sample_diff(arch: str, scenario: str, *, pdb: bool = True) -> DiffResult:
    """The diff of one sample scenario (PDBs, objects and functions file as CI gives them).

    Cached: tests must derive variants with :func:`variant`, never mutate it."""
    d = sample_dir(arch, scenario)
    base = load_image(d / "base.dll", discover_pdb=pdb)
    new = load_image(d / "intermediate.dll", objects=d / "intermediate.objs",
                     functions_file=d / "hotpatch_functions.txt", discover_pdb=pdb)
    return diff_images(base, new, jobs=1)


def sample_check(arch: str, scenario: str, *, waivers=None, **opts) -> CheckResult:
    return run_check(sample_diff(arch, scenario), CheckOptions(**opts), waivers)


def variant(diff: DiffResult, **fields) -> DiffResult:
    """A copy of ``diff`` with some fields replaced (the original is left alone)."""
    return dataclasses.replace(diff, **fields)


def image_variant(diff: DiffResult, **fields) -> DiffResult:
    return variant(diff, image=dataclasses.replace(diff.image, **fields))


def side_variant(diff: DiffResult, side: str, **fields) -> DiffResult:
    """Replace fields of the base or intermediate LoadedImage (``side``: base/new)."""
    return variant(diff, **{side: dataclasses.replace(getattr(diff, side), **fields)})


def pe_variant(diff: DiffResult, side: str, **fields) -> DiffResult:
    li = getattr(diff, side)
    return side_variant(diff, side, pe=dataclasses.replace(li.pe, **fields))


def check(diff: DiffResult, waivers=None, **opts) -> CheckResult:
    return run_check(diff, CheckOptions(**opts), waivers)


def of(res: CheckResult, rule: str, *, waived: bool = False):
    src = res.waived if waived else res.findings
    return [f for f in src if f.rule == rule]


def register_cli():
    from pehotpatch import cli

    return cli
