"""From a patch plan to the table's chunks, in the order the loader applies them: the
patch image is bound to the base first (INVERSE chunks), then the base is redirected."""

from __future__ import annotations

from pehotpatch.image.machine import Machine
from pehotpatch.plan.model import PatchPlan
from pehotpatch.table.format import ABSOLUTE, CALL_TARGET, FUNCTION, INDIRECT, MACHINE_FLAG
from pehotpatch.table.model import Chunk, HotPatchTable, Record, split_chunks


def table_from_plan(plan: PatchPlan) -> HotPatchTable:
    machine = Machine(plan.base.machine)
    t = HotPatchTable(sequence=plan.sequence, base_timestamp=plan.base.timestamp,
                      base_checksum=plan.base.checksum, base_flags=MACHINE_FLAG[machine])
    groups: list[tuple[int, bool, list[Record]]] = [
        (ABSOLUTE, True, [Record(d.slot_rva, d.base_rva) for d in plan.data]),
        (INDIRECT, True, [Record(i.patch_slot_rva, i.base_slot_rva) for i in plan.imports]),
        (FUNCTION, True, [Record(b.patch_rva, b.base_rva, (b.first_bytes,)) for b in plan.backward]),
        (CALL_TARGET, True, [Record(c.patch_rva, c.base_rva) for c in plan.call_targets]),
        (FUNCTION, False, [Record(f.base_rva, f.patch_rva, (f.first_bytes,)) for f in plan.forward]),
    ]
    chunks: list[Chunk] = []
    for rtype, inverse, records in groups:
        records.sort(key=lambda r: (r.site, r.target))
        chunks.extend(split_chunks(rtype, records, inverse=inverse))
    t.chunks = chunks
    return t
