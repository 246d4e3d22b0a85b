"""Child process of bench/run.py: load one PDB the way pehp does and touch what it read.

    python bench/_pdb_probe.py FILE.pdb [N_LAYOUTS]

Prints one JSON object: in-process times (import, load_pdb, touching) and counts.  Run
as a separate process so that its peak RSS (measured by the parent with wait4) is the
PDB reader's alone.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> int:
    path = sys.argv[1]
    n_layouts = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    t0 = time.perf_counter()
    from pehotpatch.image.pdb import load_pdb

    t1 = time.perf_counter()
    pdb = load_pdb(path)
    t2 = time.perf_counter()

    # every procedure's signature (computed by load_pdb, or lazily: either way, touched)
    n_sig = sig_chars = 0
    for p in pdb.procedures:
        s = p.signature
        if s:
            n_sig += 1
            sig_chars += len(s)
    n_data = sum(1 for d in pdb.globals_ if d.type_name)
    t3 = time.perf_counter()

    # a few hundred type layouts, spread over the type stream
    types = pdb.types
    udts: list[int] = []
    try:
        from pehotpatch.image.codeview.leaves import LF_CLASS, LF_STRUCTURE, LF_UNION

        recs = getattr(types, "types", None)
        if recs is not None:
            udts = recs.indexes_of_kinds(frozenset({LF_STRUCTURE, LF_CLASS, LF_UNION}))
    except ImportError:
        pass
    n_layouts_done = n_fields = n_forward = 0
    if udts:
        step = max(1, len(udts) // (n_layouts * 2))  # forward refs are about half of them
        for ti in udts[::step]:
            lay = types.layout(ti)
            if lay.is_forward_ref:
                n_forward += 1
                continue
            n_layouts_done += 1
            n_fields += len(lay.fields)
            for f in lay.fields:
                _ = (f.name, f.offset, f.type_name, f.size)
            if n_layouts_done >= n_layouts:
                break
    t4 = time.perf_counter()

    json.dump({
        "import_s": round(t1 - t0, 4),
        "load_pdb_s": round(t2 - t1, 4),
        "touch_signatures_s": round(t3 - t2, 4),
        "layouts_s": round(t4 - t3, 4),
        "load_and_touch_s": round(t4 - t1, 4),
        "modules": len(pdb.modules),
        "procedures": len(pdb.procedures),
        "signatures": n_sig,
        "signature_chars": sig_chars,
        "data_symbols": n_data,
        "publics": len(pdb.publics),
        "udt_records": len(udts),
        "layouts": n_layouts_done,
        "layout_fields": n_fields,
        "forward_refs_skipped": n_forward,
    }, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
