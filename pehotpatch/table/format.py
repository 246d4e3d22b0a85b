"""The Windows hot-patch table, declared once (see :mod:`pehotpatch.structs`).

Sources: the Windows SDK header winnt.h for the structures and constants ("hdr"), the
loader's observed behaviour for the validation rules ("os"), and pehp's own choices where
nothing is public ("pehp"); docs/FORMAT.md gives every field with its source.
"""

from __future__ import annotations

from typing import Final

from pehotpatch.image.machine import Machine
from pehotpatch.structs import SOURCE_HEADER, SOURCE_LOADER, SOURCE_PEHP, Field, Struct

HOT_PATCH_INFO: Final = Struct("IMAGE_HOT_PATCH_INFO", 36, (
    Field("Version", 0x00, 4, "layout version: 1 (20 bytes), 2 (24), 3 (28), 4 (36); the loader takes 1-4", SOURCE_LOADER),
    Field("Size", 0x04, 4, "bytes of the whole table: header, base list, bases, chunks and terminator", SOURCE_LOADER),
    Field("SequenceNumber", 0x08, 4, "this patch's number for its base; must not be 0; a later patch carries a higher one", SOURCE_LOADER),
    Field("BaseImageList", 0x0C, 4, "offset (from this structure) of a ULONG array of base descriptor offsets", SOURCE_HEADER),
    Field("BaseImageCount", 0x10, 4, "entries in the base list; the loader takes exactly 1", SOURCE_LOADER),
    Field("BufferOffset", 0x14, 4, "v2+; never read by the loader code examined; pehp writes 0", SOURCE_PEHP),
    Field("ExtraPatchSize", 0x18, 4, "v3+; extra ULONG words per record (record stride = 2 + this)", SOURCE_LOADER),
    Field("MinSequenceNumber", 0x1C, 4, "v4+; never seen read; pehp writes 0", SOURCE_PEHP),
    Field("Flags", 0x20, 4, "v4+; 0x2 HOTSWAP (the whole patch image becomes valid CFG targets); pehp writes 0", SOURCE_LOADER),
))

#: IMAGE_HOT_PATCH_INFO size per Version.
INFO_SIZE_BY_VERSION: Final = {1: 20, 2: 24, 3: 28, 4: 36}

HOT_PATCH_BASE: Final = Struct("IMAGE_HOT_PATCH_BASE", 32, (
    Field("SequenceNumber", 0x00, 4, "the patch's sequence number for this base (pehp: equal to the header's)", SOURCE_PEHP),
    Field("Flags", 0x04, 4, "OBLIGATORY 0x1, CAN_ROLL_BACK 0x2, MACHINE_I386 0x4, MACHINE_ARM64 0x8, MACHINE_AMD64 0x10", SOURCE_HEADER),
    Field("OriginalTimeDateStamp", 0x08, 4, "the base's FileHeader.TimeDateStamp; the loader refuses a base that differs", SOURCE_LOADER),
    Field("OriginalCheckSum", 0x0C, 4, "the base's OptionalHeader.CheckSum; the loader refuses a base that differs", SOURCE_LOADER),
    Field("CodeIntegrityInfo", 0x10, 4, "offset of IMAGE_HOT_PATCH_HASHES; meaning not public; pehp writes 0", SOURCE_PEHP),
    Field("CodeIntegritySize", 0x14, 4, "size of the hashes; pehp writes 0", SOURCE_PEHP),
    Field("PatchTable", 0x18, 4, "offset (from IMAGE_HOT_PATCH_INFO) of the first chunk", SOURCE_HEADER),
    Field("BufferOffset", 0x1C, 4, "v2+; not read by the loader code examined; pehp writes 0", SOURCE_PEHP),
))

# ---- IMAGE_HOT_PATCH_BASE.Flags --------------------------------------------------------
BASE_OBLIGATORY: Final = 0x1
BASE_CAN_ROLL_BACK: Final = 0x2
BASE_MACHINE_I386: Final = 0x4
BASE_MACHINE_ARM64: Final = 0x8
BASE_MACHINE_AMD64: Final = 0x10
BASE_FLAGS_KNOWN: Final = 0x1F
MACHINE_FLAG: Final = {Machine.X86: BASE_MACHINE_I386, Machine.ARM64: BASE_MACHINE_ARM64,
                       Machine.X64: BASE_MACHINE_AMD64}
MACHINE_OF_FLAG: Final = {v: k for k, v in MACHINE_FLAG.items()}

# ---- IMAGE_HOT_PATCH_INFO.Flags ---------------------------------------------------------
INFO_HOTSWAP: Final = 0x2
INFO_FLAGS_KNOWN: Final = 0x2

# ---- chunk header -----------------------------------------------------------------------
CHUNK_INVERSE: Final = 0x80000000
CHUNK_OBLIGATORY: Final = 0x40000000
CHUNK_RESERVED: Final = 0x3FF03000
CHUNK_TYPE_MASK: Final = 0x000FC000
CHUNK_COUNT_MASK: Final = 0x00000FFF
MAX_RECORDS_PER_CHUNK: Final = 0xFFF

TYPE_SITE_RVA: Final = 0x8000  # word 0 is the RVA of a site that is written
TYPE_TARGET_RVA: Final = 0x4000  # word 1 is an RVA in the referred image

FUNCTION: Final = 0x1C000
ABSOLUTE: Final = 0x2C000
REL32: Final = 0x3C000
CALL_TARGET: Final = 0x44000
INDIRECT: Final = 0x5C000
NO_CALL_TARGET: Final = 0x64000
DYNAMIC_VALUE: Final = 0x78000

TYPE_NAMES: Final = {FUNCTION: "FUNCTION", ABSOLUTE: "ABSOLUTE", REL32: "REL32", CALL_TARGET: "CALL_TARGET",
                     INDIRECT: "INDIRECT", NO_CALL_TARGET: "NO_CALL_TARGET", DYNAMIC_VALUE: "DYNAMIC_VALUE"}
TYPES_BY_NAME: Final = {v: k for k, v in TYPE_NAMES.items()}
#: Types the loader code examined applies; the others pehp neither writes nor trusts.
APPLIED_TYPES: Final = frozenset({FUNCTION, ABSOLUTE, CALL_TARGET, INDIRECT})

#: Minimum FUNCTION site RVA the loader accepts.
MIN_FUNCTION_SITE: Final = 0x10

#: pehp writes version 4 with one extra word per record (the redirected function's first bytes).
EMIT_VERSION: Final = 4
EMIT_EXTRA_WORDS: Final = 1

#: The section pehp adds to hold the table.
SECTION_NAME: Final = ".hpatch"


def write_extent(rtype: int, machine: Machine) -> tuple[int, int]:
    """(offset from the site, bytes) the loader writes for a record of ``rtype``."""
    if rtype == FUNCTION:
        return (0, 8) if machine is Machine.ARM64 else (-6, 8)
    if rtype == REL32:
        return (0, 4)
    return (0, machine.pointer_size)
