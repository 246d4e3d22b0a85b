"""``python -m fuzz``: the long run, replaying recipes, and looking at layouts.

    python -m fuzz run [--inputs N] [--seed S] [--jobs J] [--corpus] [--out DIR]
    python -m fuzz replay RECIPE.json|DIR ...
    python -m fuzz layout FILE            # the fields the mutators know in one file

Defaults come from the environment too (FUZZ_INPUTS, FUZZ_SEED, FUZZ_JOBS, FUZZ_LIMIT,
FUZZ_MEM_MB, FUZZ_CLI_EVERY, FUZZ_CORPUS=1, FUZZ_BUILT=1), which is how ``make fuzz`` passes them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .cases import COMMANDS, Case, Seeds, kind_of
from .engine import Config, format_summary, replay, run
from .layout import describe, layout_for
from .regress import keep, known_keys, signature_key


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def recipes(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(p.rglob("*.json"))
        else:
            out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    # Every input is a new image: the cache of normalised code (pehotpatch/cache.py) would
    # only fill up, and each run should depend on its input alone.
    os.environ["PEHP_NO_CACHE"] = "1"
    ap = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="fuzz every command")
    r.add_argument("--inputs", type=int, default=int(_env("FUZZ_INPUTS", "100000")))
    r.add_argument("--seed", type=int, default=int(_env("FUZZ_SEED", "1")))
    r.add_argument("--jobs", type=int, default=int(_env("FUZZ_JOBS", "2")))
    r.add_argument("--time-limit", type=float, default=float(_env("FUZZ_LIMIT", "10")))
    r.add_argument("--mem-mb", type=int, default=int(_env("FUZZ_MEM_MB", "2048")))
    r.add_argument("--cli-every", type=int, default=int(_env("FUZZ_CLI_EVERY", "500")))
    r.add_argument("--corpus", action="store_true", default=_env("FUZZ_CORPUS", "0") == "1",
                   help="also mutate the real msvc-runtime DLLs (downloaded on first use)")
    r.add_argument("--built", action="store_true", default=_env("FUZZ_BUILT", "0") == "1",
                   help="also mutate the PDB reader's C/C++ test programs (needs clang-cl-22)")
    r.add_argument("--commands", default=",".join(COMMANDS))
    r.add_argument("--out", type=Path, default=Path("fuzz-out"))
    r.add_argument("--no-minimize", action="store_true")
    r.add_argument("--no-known", action="store_true",
                   help="report the known issues of tests/data/fuzz as findings too")
    p = sub.add_parser("replay", help="replay recipes (files or directories of *.json)")
    p.add_argument("paths", nargs="+")
    p.add_argument("--no-cli", action="store_true")
    k = sub.add_parser("keep", help="add a finding to the regression corpus (tests/data/fuzz)")
    k.add_argument("finding", type=Path, help="a findings/<dir> or its recipe.json")
    k.add_argument("name")
    k.add_argument("--note", required=True, help="what was wrong and where it was fixed")
    k.add_argument("--known-issue", help="not fixed yet: who/where it is to be fixed")
    lay = sub.add_parser("layout", help="show the fields known in a PE, PDB or object file")
    lay.add_argument("file", type=Path)
    args = ap.parse_args(argv)

    if args.cmd == "run":
        cfg = Config(inputs=args.inputs, seed=args.seed, jobs=args.jobs, time_limit=args.time_limit,
                     mem_mb=args.mem_mb, cli_every=args.cli_every, corpus=args.corpus, built=args.built,
                     out=args.out, commands=tuple(args.commands.split(",")),
                     minimize=not args.no_minimize,
                     known=frozenset() if args.no_known else frozenset(known_keys()))
        summary = run(cfg)
        print(format_summary(summary))
        return 1 if summary.findings or summary.inputs < cfg.inputs else 0
    if args.cmd == "replay":
        seeds = Seeds(corpus=False)
        bad = 0
        for path in recipes(args.paths):
            doc = json.loads(path.read_text(encoding="utf-8"))
            out, problems = replay(Case.from_json(doc["case"]), seeds, cli=not args.no_cli)
            ok = out.status in ("ok", "error") and not problems
            known = bool(doc.get("known_issue")) and out.signature is not None \
                and signature_key(out.signature) == signature_key(doc["signature"])
            bad += not (ok or known)
            print(f"{'ok  ' if ok else 'KNOWN' if known else 'FAIL'} {path}: {out.status}"
                  + (f" ({out.signature})" if out.signature else f" ({out.detail})" if out.detail else ""))
            for prob in problems:
                print(f"     CLI: {prob}")
        return 1 if bad else 0
    if args.cmd == "keep":
        print(keep(args.finding, args.name, args.note, args.known_issue))
        return 0
    data = args.file.read_bytes()
    print(json.dumps(describe(layout_for(data, kind_of(args.file.name))), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
