"""Timing probe for `pehp simulate` (run by bench/run.py in its own process).

    _simulate_probe.py patch BASE FINAL     map both images and apply FINAL's table
    _simulate_probe.py samples              every patchable sample's [run] call sequence

Prints one JSON line with the phases' wall times in seconds.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def patch(base: str, final: str) -> dict:
    from pehotpatch.emulate.engine import World
    from pehotpatch.emulate.hptable import read_table
    from pehotpatch.emulate.patcher import Patcher
    from pehotpatch.image.pe_reader import load_pe

    t0 = time.perf_counter()
    bp, fp = load_pe(base), load_pe(final)
    table = read_table(fp)
    t1 = time.perf_counter()
    w = World(bp.machine)
    b = w.load(bp, "base", 0)
    p = w.load(fp, "patch", 1, bind_imports=False)
    t2 = time.perf_counter()
    patcher = Patcher(w, b)
    report, findings = patcher.apply(p, table, final)
    t3 = time.perf_counter()
    undo = patcher.undo()
    t4 = time.perf_counter()
    w.close()
    return {"read_s": round(t1 - t0, 4), "map_s": round(t2 - t1, 4), "apply_s": round(t3 - t2, 4),
            "map_and_patch_s": round(t3 - t0, 4), "undo_s": round(t4 - t3, 4),
            "applied": report.applied, "refused": report.refused, "records": report.records,
            "findings": len(findings), "undo_identical": undo.identical}


def samples() -> dict:
    from pehotpatch.api import emit_final, simulate

    out: dict[str, dict] = {}
    tmp = Path(tempfile.mkdtemp(prefix="pehp-bench-simulate-"))
    for expect in sorted((ROOT / "samples").glob("*/*/expect.toml")):
        d = expect.parent
        doc = tomllib.loads(expect.read_text())
        calls = doc.get("run", {}).get("calls")
        if doc["check"]["verdict"] != "patchable" or not calls:
            continue
        final = tmp / f"{d.parent.name}-{d.name}.dll"
        emit_final(d / "base.dll", d / "intermediate.dll", final, objects=d / "intermediate.objs",
                   functions_file=d / "hotpatch_functions.txt", jobs=1)
        t0 = time.perf_counter()
        r = simulate(d / "base.dll", final, calls, pdb_final=d / "intermediate.pdb", undo=True)
        out[f"{d.parent.name}/{d.name}"] = {"calls": len(calls), "s": round(time.perf_counter() - t0, 4),
                                            "ok": r.ok}
    return {"samples": out, "max_s": max(v["s"] for v in out.values()),
            "all_ok": all(v["ok"] for v in out.values())}


if __name__ == "__main__":
    doc = patch(sys.argv[2], sys.argv[3]) if sys.argv[1] == "patch" else samples()
    print(json.dumps(doc))
