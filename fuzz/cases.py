"""Seeds and cases: what one fuzz input is, how it is generated, written and replayed.

A seed is a sample scenario (``samples:x64/fix_globals``: both images, both PDBs, both
object directories, the functions file), a real DLL present in two msvc-runtime
releases (``corpus:vcruntime140_1.dll``: the older release as base, the newer as
intermediate; no PDBs), or one of the PDB reader's test programs built with clang-cl
(``built:sample_cpp_x64``: C++ classes and methods, a /bigobj object; DLL, PDB and
object serve as both base and intermediate).  A :class:`Case` names a command, a seed, the command's options
and the edits made to each mutated file; it is written into a directory laid out the way
the command expects (the PDB next to its image, ``lib.objs/`` next to ``lib.dll`` in a
tree...).
"""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .edits import Edit, apply_edits, edit_from_json, edit_to_json
from .layout import layout_for
from .layout_model import Layout
from .mutators import mutate

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
COMMANDS = ("info", "diff", "check", "check-tree", "simulate", "inspect", "verify", "emit-final", "report",
            "plan")
COMMAND_WEIGHTS = (30, 20, 30, 20, 10, 10, 10, 10, 8, 8)
#: Commands that read a sample's final image (built once, see final_image).
FINAL_COMMANDS = ("simulate", "inspect", "verify")
# Output formats and how often each is drawn (text goes through rich, the slowest part).
FORMATS = {"info": {"json": 3, "text": 1}, "diff": {"json": 3, "text": 1},
           "check": {"text": 1, "json": 2, "sarif": 2}, "check-tree": {"text": 1, "json": 2, "sarif": 2},
           "simulate": {"text": 1, "json": 2}, "inspect": {"text": 1, "json": 2},
           "verify": {"text": 1, "json": 2}, "emit-final": {"text": 1, "json": 1}, "report": {"html": 1},
           "plan": {"text": 1, "json": 2}}
# simulate: the first calls of a sample's [run] list, and an instruction budget per call
SIMULATE_CALLS = 12
SIMULATE_BUDGET = 200_000
FINALS_DIR = ROOT / ".cache" / "fuzz-finals"
# Share of inputs mutating a real DLL when they are on (they cost ~10x a sample each).
CORPUS_SHARE = 0.12
# Real DLLs small enough for a diff in well under a second (info takes any of them).
CORPUS_DIFF_LIMIT = 130_000

WAIVERS_SEED = b"""[[waiver]]
rule = "HP404"
symbol = "g_new"
justification = "initialised by __PatchMainCallout__"
expires = 2099-01-01

[[waiver]]
rule = "HP201"
symbol = "*"
justification = "reviewed"
expires = "2099-12-31"
"""


def kind_of(role: str) -> str:
    suffix = role.rsplit(".", 1)[-1].lower()
    return {"dll": "pe", "pdb": "pdb", "obj": "coff"}.get(suffix, "raw")


class Seeds:
    """The seed files: every sample scenario, optionally the real msvc-runtime DLLs."""

    def __init__(self, corpus: bool = False, built: bool = False, samples: Path = SAMPLES):
        self.samples = samples
        self.built = built_seeds() if built else {}
        self.scenarios = sorted(p.parent.relative_to(samples).as_posix()
                                for p in samples.glob("*/*/expect.toml"))
        self.corpus_dirs: tuple[Path, Path] | None = None
        self.corpus_names: list[str] = []
        if corpus:
            self.corpus_dirs = corpus_dirs()
            a, b = self.corpus_dirs
            self.corpus_names = sorted(p.name for p in a.glob("*.dll") if (b / p.name).is_file())
        self._bytes: dict[str, bytes] = {}
        self._layouts: dict[str, Layout] = {}
        self._runs: dict[str, list[str]] = {}

    def run_calls(self, seed: str) -> list[str]:
        """A sample's ``[run] calls`` (empty for other seeds and non-patchable samples)."""
        if seed not in self._runs:
            calls: list[str] = []
            if seed.startswith("samples:"):
                import tomllib

                with open(self.samples / seed.split(":", 1)[1] / "expect.toml", "rb") as fh:
                    doc = tomllib.load(fh)
                if doc.get("check", {}).get("verdict") == "patchable":
                    calls = list(doc.get("run", {}).get("calls", []))
            self._runs[seed] = calls
        return self._runs[seed]

    def ids(self, command: str) -> list[str]:
        if command in FINAL_COMMANDS:
            return [f"samples:{s}" for s in self.scenarios if self.run_calls(f"samples:{s}")]
        out = [f"samples:{s}" for s in self.scenarios] + sorted(self.built)
        if command == "emit-final":
            return out
        for n in self.corpus_names:
            if command == "info" or self.file(f"corpus:{n}", "intermediate.dll").stat().st_size \
                    <= CORPUS_DIFF_LIMIT:
                out.append(f"corpus:{n}")
        return out

    def roles(self, seed: str) -> list[str]:
        if seed.startswith("corpus:"):
            return ["base.dll", "intermediate.dll"]
        if seed.startswith("built:"):
            obj = seed.split(":", 1)[1].removesuffix("_bigobj") + ".obj"
            return ["base.dll", "base.pdb", "intermediate.dll", "intermediate.pdb",
                    f"base.objs/{obj}", f"intermediate.objs/{obj}"]
        d = self.samples / seed.split(":", 1)[1]
        roles = ["base.dll", "base.pdb", "intermediate.dll", "intermediate.pdb",
                 "hotpatch_functions.txt", "waivers.toml"]
        for side in ("base", "intermediate"):
            roles += sorted(f"{side}.objs/{p.name}" for p in (d / f"{side}.objs").glob("*.obj"))
        if self.run_calls(seed):
            roles.append("final.dll")
        return roles

    def file(self, seed: str, role: str) -> Path:
        kind, name = seed.split(":", 1)
        if kind == "built":
            if seed not in self.built:
                self.built = built_seeds()
            stem = name.removesuffix("_bigobj")
            return self.built[seed] / f"{stem}.{role.rsplit('.', 1)[1]}"
        if role == "final.dll":
            return final_image(self.samples / name)
        if kind == "corpus":
            if self.corpus_dirs is None:
                self.corpus_dirs = corpus_dirs()
            return self.corpus_dirs[0 if role.startswith("base") else 1] / name
        return self.samples / name / role

    def data(self, seed: str, role: str) -> bytes:
        if role == "waivers.toml":
            return WAIVERS_SEED
        p = self.file(seed, role)
        key = str(p)
        got = self._bytes.get(key)
        if got is None:
            got = self._bytes[key] = p.read_bytes()
        return got

    def layout(self, seed: str, role: str) -> Layout:
        key = "waivers" if role == "waivers.toml" else str(self.file(seed, role))
        got = self._layouts.get(key)
        if got is None:
            got = self._layouts[key] = layout_for(self.data(seed, role), kind_of(role))
        return got


def final_image(d: Path) -> Path:
    """The final image of sample ``d`` (emit_final), built once into .cache/fuzz-finals
    under a name that changes with the sample's images."""
    import hashlib
    import os

    digest = hashlib.sha256((d / "base.dll").read_bytes() + (d / "intermediate.dll").read_bytes())
    out = FINALS_DIR / f"{d.parent.name}-{d.name}-{digest.hexdigest()[:12]}.dll"
    if not out.is_file():
        from pehotpatch.api import emit_final

        FINALS_DIR.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        emit_final(d / "base.dll", d / "intermediate.dll", tmp, objects=d / "intermediate.objs",
                   functions_file=d / "hotpatch_functions.txt", overwrite=True, jobs=1)
        os.replace(tmp, out)
    return out


def corpus_dirs() -> tuple[Path, Path]:
    """The two msvc-runtime releases (downloaded into .cache on first use)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import corpus  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(ROOT / "tools"))
    a, b = (corpus.msvc_runtime(v) for v in corpus.MSVC_RUNTIME_VERSIONS)
    return a, b


# The PDB reader's test programs (tests/data/pdb/build.py): (source, machine, /bigobj)
BUILT = (("sample", "x64", False), ("sample", "x86", False), ("sample", "arm64", False),
         ("sample_cpp", "x64", False), ("sample_cpp", "x86", False), ("sample_cpp", "arm64", False),
         ("sample_cpp", "x64", True))
BUILT_DIR = ROOT / ".cache" / "fuzz-seeds"


def built_seeds() -> dict[str, Path]:
    """Seed id -> directory of DLL, PDB and object, built once into .cache/fuzz-seeds
    (empty when clang-cl-22 / lld-link-22 are not installed)."""
    if not (shutil.which("clang-cl-22") and shutil.which("lld-link-22")):
        return {}
    spec = importlib.util.spec_from_file_location(
        "pehp_pdb_fixture_build", ROOT / "tests" / "data" / "pdb" / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    out: dict[str, Path] = {}
    for name, arch, bigobj in BUILT:
        d = BUILT_DIR / (f"{name}_{arch}" + ("_bigobj" if bigobj else ""))
        if not (d / "built").is_file():
            build.build_sample(name, arch, d, bigobj=bigobj)
            (d / "built").write_text("")
        out[f"built:{d.name}"] = d
    return out


@dataclass
class Case:
    command: str
    seed: str
    options: dict[str, Any]
    edits: dict[str, list[Edit]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"command": self.command, "seed": self.seed, "options": self.options,
                "edits": {r: [edit_to_json(e) for e in es] for r, es in sorted(self.edits.items())}}

    @classmethod
    def from_json(cls, j: dict[str, Any]) -> Case:
        return cls(j["command"], j["seed"], dict(j["options"]),
                   {r: [edit_from_json(e) for e in es] for r, es in j["edits"].items()})

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    def n_edits(self) -> int:
        return sum(len(es) for es in self.edits.values())


def relevant_roles(case: Case, seeds: Seeds) -> list[str]:
    """The files the command reads (so the only ones worth mutating and writing)."""
    o = case.options
    have = seeds.roles(case.seed)
    if case.command == "info":
        side = o["side"]
        roles = [f"{side}.dll"]
        if symbols_wanted(case):
            roles.append(f"{side}.pdb")
            if o.get("objects"):
                roles += [r for r in have if r.startswith(f"{side}.objs/")]
            if o.get("functions_file"):
                roles.append("hotpatch_functions.txt")
        return [r for r in roles if r in have]
    if case.command == "simulate":
        return [r for r in ("base.dll", "base.pdb", "final.dll", "intermediate.pdb") if r in have]
    if case.command == "inspect":
        return [r for r in ("final.dll", "intermediate.pdb") if r in have]
    if case.command == "verify":
        roles = ["base.dll", "final.dll", "intermediate.pdb"]
        if o.get("functions_file"):
            roles.append("hotpatch_functions.txt")
        return [r for r in roles if r in have]
    roles = ["base.dll", "base.pdb", "intermediate.dll", "intermediate.pdb"]
    if o.get("objects"):
        roles += [r for r in have if r.startswith("intermediate.objs/")]
    if o.get("functions_file"):
        roles.append("hotpatch_functions.txt")
    if o.get("waivers"):
        roles.append("waivers.toml")
    return [r for r in roles if r in have]


def symbols_wanted(case: Case) -> bool:
    o = case.options
    return bool(o.get("symbols") or o.get("explicit_pdb") or o.get("objects")
                or o.get("functions_file"))


def generate(rng: random.Random, seeds: Seeds, commands: tuple[str, ...] = COMMANDS) -> Case:
    weights = [COMMAND_WEIGHTS[COMMANDS.index(c)] for c in commands]
    command = rng.choices(commands, weights=weights)[0]
    ids = seeds.ids(command)
    real = [i for i in ids if i.startswith("corpus:")]
    if real and rng.random() < CORPUS_SHARE:
        seed = rng.choice(real)
    else:
        seed = rng.choice([i for i in ids if not i.startswith("corpus:")])
    sample = not seed.startswith("corpus:")

    def coin(p: float) -> bool:
        return sample and rng.random() < p

    formats = FORMATS[command]
    o: dict[str, Any] = {"format": rng.choices(list(formats), weights=list(formats.values()))[0],
                         "ignore_pdb_mismatch": coin(0.3)}
    if command == "simulate":
        calls = seeds.run_calls(seed)[:SIMULATE_CALLS]
        o.update(calls=calls, patch_after=rng.randrange(len(calls) + 1), undo=rng.random() < 0.5,
                 explicit_pdb=coin(0.5), budget=SIMULATE_BUDGET)
    elif command == "inspect":
        o["explicit_pdb"] = coin(0.5)
    elif command == "verify":
        o["functions_file"] = coin(0.8)
    elif command == "info":
        o["side"] = rng.choice(("base", "intermediate"))
        o["symbols"] = coin(0.6)
        if o["symbols"]:
            o.update(objects=coin(0.5), functions_file=coin(0.5), explicit_pdb=coin(0.3))
    else:
        o.update(objects=coin(0.5), functions_file=coin(0.6))
        if command != "check-tree":
            o["explicit_pdb"] = coin(0.3)
        if command == "diff":
            o["verbose"] = rng.random() < 0.5
        elif command == "emit-final":
            o.update(force=rng.random() < 0.3, sequence=rng.choice((1, 1, 2, 0)))
        elif command == "plan":
            o.update(sequence=rng.choice((1, 1, 2, 0)), allow_new_imports=rng.random() < 0.3)
        else:
            o.update(waivers=coin(0.15), allow_new_imports=rng.random() < 0.2)
        if command == "check-tree":
            o["unpaired"] = rng.random() < 0.1
    case = Case(command, seed, o)
    roles = relevant_roles(case, seeds)
    weights = [{"pe": 45, "pdb": 35, "coff": 15}.get(kind_of(r), 5) for r in roles]
    n = min(len(roles), rng.choices((1, 2, 3), weights=(70, 25, 5))[0])
    chosen: set[str] = set()
    while len(chosen) < n:
        chosen.add(rng.choices(roles, weights=weights)[0])
    for role in sorted(chosen):
        case.edits[role] = mutate(rng, seeds.data(seed, role), seeds.layout(seed, role))
    return case


@dataclass
class Inputs:
    """Where a materialised case's files are, as the command's arguments."""

    root: Path
    files: list[Path]  # every input file written
    image: Path | None = None  # info
    base: Path | None = None  # diff, check; check-tree: the base tree
    intermediate: Path | None = None
    final: Path | None = None  # simulate
    pdb_base: Path | None = None  # explicit --pdb-base / --pdb (info: --pdb; simulate: the final's)
    pdb: Path | None = None
    objects: Path | None = None
    functions_file: Path | None = None
    waivers: Path | None = None


def file_bytes(case: Case, seeds: Seeds, role: str) -> bytes:
    data = seeds.data(case.seed, role)
    edits = case.edits.get(role)
    return apply_edits(data, edits) if edits else data


def materialize(case: Case, seeds: Seeds, root: Path) -> Inputs:
    """Write the case's input files under ``root`` (which must not exist yet)."""
    root.mkdir(parents=True)
    o = case.options
    roles = relevant_roles(case, seeds)
    inp = Inputs(root, [])
    if case.command == "check-tree":
        placed = {"base.dll": "base/lib.dll", "base.pdb": "base/lib.pdb",
                  "intermediate.dll": "intermediate/lib.dll", "intermediate.pdb": "intermediate/lib.pdb",
                  "hotpatch_functions.txt": "intermediate/lib.hotpatch_functions.txt",
                  "waivers.toml": "waivers.toml"}
        (root / "base").mkdir()
        (root / "intermediate").mkdir()
        inp.base, inp.intermediate = root / "base", root / "intermediate"
    else:
        placed = {}
    for role in roles:
        rel = placed.get(role)
        if rel is None:
            rel = role.replace("intermediate.objs/", "intermediate/lib.objs/", 1) \
                if case.command == "check-tree" else role
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(file_bytes(case, seeds, role))
        inp.files.append(p)
    if case.command == "check-tree":
        if o.get("unpaired"):
            p = root / "intermediate" / "extra.dll"
            p.write_bytes(seeds.data(case.seed, "intermediate.dll"))
            inp.files.append(p)
        inp.waivers = root / "waivers.toml" if o.get("waivers") else None
        return inp
    if case.command == "simulate":
        inp.base, inp.final = root / "base.dll", root / "final.dll"
        if o.get("explicit_pdb"):
            inp.pdb_base, inp.pdb = root / "base.pdb", root / "intermediate.pdb"
        return inp
    if case.command in ("inspect", "verify"):
        inp.final = root / "final.dll"
        if case.command == "verify":
            inp.base = root / "base.dll"
            inp.pdb = root / "intermediate.pdb"  # the final image's PDB (it is the intermediate's)
            if o.get("functions_file"):
                inp.functions_file = root / "hotpatch_functions.txt"
        elif o.get("explicit_pdb"):
            inp.pdb = root / "intermediate.pdb"
        return inp
    if case.command == "info":
        side = o["side"]
        inp.image = root / f"{side}.dll"
        if o.get("explicit_pdb"):
            inp.pdb = root / f"{side}.pdb"
        if o.get("objects"):
            inp.objects = root / f"{side}.objs"
            inp.objects.mkdir(exist_ok=True)
    else:
        inp.base, inp.intermediate = root / "base.dll", root / "intermediate.dll"
        if o.get("explicit_pdb"):
            inp.pdb_base, inp.pdb = root / "base.pdb", root / "intermediate.pdb"
        if o.get("objects"):
            inp.objects = root / "intermediate.objs"
            inp.objects.mkdir(exist_ok=True)
        if o.get("waivers"):
            inp.waivers = root / "waivers.toml"
    if o.get("functions_file"):
        inp.functions_file = root / "hotpatch_functions.txt"
    return inp


def _pair_inputs(case: Case, inp: Inputs) -> list[str]:
    """PDB, waivers, import, objects, functions-file and PDB-mismatch options of a pair."""
    o = case.options
    args: list[str] = []
    if inp.pdb_base is not None and inp.pdb is not None:
        args += ["--pdb-base", str(inp.pdb_base), "--pdb", str(inp.pdb)]
    if inp.waivers is not None:
        args += ["--waivers", str(inp.waivers)]
    if o.get("allow_new_imports"):
        args.append("--allow-new-imports")
    if inp.objects is not None:
        args += ["--objects", str(inp.objects)]
    if inp.functions_file is not None:
        args += ["--functions-file", str(inp.functions_file)]
    if o.get("ignore_pdb_mismatch"):
        args.append("--ignore-pdb-mismatch")
    return args


def cli_args(case: Case, inp: Inputs, output: Path) -> list[str]:
    """The `pehp` arguments that run ``case`` writing its report to ``output``."""
    o = case.options
    args: list[str]
    if case.command == "simulate":
        args = ["simulate", str(inp.base), str(inp.final), "-k", str(o["patch_after"]),
                "--budget", str(o["budget"])]
        for c in o["calls"]:
            args += ["-c", c]
        if o.get("undo"):
            args.append("--undo")
        if inp.pdb_base is not None and inp.pdb is not None:
            args += ["--pdb-base", str(inp.pdb_base), "--pdb", str(inp.pdb)]
        if o["format"] == "json":
            args.append("--json")
        return args + ["-o", str(output)]
    if case.command == "inspect":
        args = ["inspect", str(inp.final)]
        if inp.pdb is not None:
            args += ["--pdb", str(inp.pdb)]
        if o["format"] == "json":
            args.append("--json")
        return args + ["-o", str(output)]
    if case.command == "verify":
        args = ["verify", str(inp.final), "--base", str(inp.base), "--pdb", str(inp.pdb), "-j", "1"]
        if inp.functions_file is not None:
            args += ["--functions-file", str(inp.functions_file)]
        if o["format"] == "json":
            args.append("--json")
        return args + ["-o", str(output)]
    if case.command in ("plan", "report", "emit-final"):
        # the check's inputs, plus each command's own options
        args = [case.command, str(inp.base), str(inp.intermediate), "-j", "1", *_pair_inputs(case, inp)]
        if case.command != "report":
            args += ["--sequence", str(o["sequence"])]
        if o.get("force"):
            args.append("--force")
        if case.command == "report":
            args.append("--quiet")
        elif o["format"] == "json":
            args.append("--json")
        return args + ["-o", str(output)]
    if case.command == "info":
        args = ["info", str(inp.image)]
        if o.get("symbols"):
            args.append("--symbols")
        if inp.pdb is not None:
            args += ["--pdb", str(inp.pdb)]
    else:
        args = [case.command, str(inp.base), str(inp.intermediate)]
        if inp.pdb_base is not None and inp.pdb is not None:
            args += ["--pdb-base", str(inp.pdb_base), "--pdb", str(inp.pdb)]
        if case.command != "diff":
            args += ["--format", o["format"]]
        if o.get("verbose"):
            args.append("-v")
        if inp.waivers is not None:
            args += ["--waivers", str(inp.waivers)]
        if o.get("allow_new_imports"):
            args.append("--allow-new-imports")
        args += ["-j", "1"]
    if case.command != "check-tree":
        if inp.objects is not None:
            args += ["--objects", str(inp.objects)]
        if inp.functions_file is not None:
            args += ["--functions-file", str(inp.functions_file)]
    if o.get("ignore_pdb_mismatch"):
        args.append("--ignore-pdb-mismatch")
    return args + ["-o", str(output)]
