"""Declarations of the PE structures pehp reads and writes (see :mod:`pehotpatch.structs`).

Offsets are from the PE/COFF specification and winnt.h.  The reader (:mod:`pehotpatch.image.pe`),
the writer of final images and the fuzzer's structure-aware mutators all use these.
"""

from __future__ import annotations

from pehotpatch.structs import SOURCE_LOADER, SOURCE_SPEC, Struct, declare

DOS_HEADER = declare(
    "IMAGE_DOS_HEADER", 0x40,
    ("e_magic", 0x00, 2, "'MZ'", SOURCE_SPEC),
    ("e_lfanew", 0x3C, 4, "file offset of the PE signature", SOURCE_SPEC),
)

FILE_HEADER = declare(
    "IMAGE_FILE_HEADER", 20,
    ("Machine", 0, 2, "target machine", SOURCE_SPEC),
    ("NumberOfSections", 2, 2, "entries in the section table", SOURCE_SPEC),
    ("TimeDateStamp", 4, 4, "link time, or a content hash with /Brepro; identifies a hot-patch base", SOURCE_SPEC),
    ("PointerToSymbolTable", 8, 4, "file offset of the COFF symbol table", SOURCE_SPEC),
    ("NumberOfSymbols", 12, 4, "COFF symbol count", SOURCE_SPEC),
    ("SizeOfOptionalHeader", 16, 2, "bytes of optional header after this one", SOURCE_SPEC),
    ("Characteristics", 18, 2, "IMAGE_FILE_* flags", SOURCE_SPEC),
)


def _optional(pe32_plus: bool) -> Struct:
    p = 8 if pe32_plus else 4
    head = [
        ("Magic", 0, 2, "0x10b PE32, 0x20b PE32+", SOURCE_SPEC),
        ("MajorLinkerVersion", 2, 1, "", SOURCE_SPEC),
        ("MinorLinkerVersion", 3, 1, "", SOURCE_SPEC),
        ("SizeOfCode", 4, 4, "sum of code sections' raw sizes", SOURCE_SPEC),
        ("SizeOfInitializedData", 8, 4, "sum of initialised-data sections' raw sizes", SOURCE_SPEC),
        ("SizeOfUninitializedData", 12, 4, "", SOURCE_SPEC),
        ("AddressOfEntryPoint", 16, 4, "entry point RVA", SOURCE_SPEC),
        ("BaseOfCode", 20, 4, "", SOURCE_SPEC),
    ]
    if pe32_plus:
        head.append(("ImageBase", 24, 8, "preferred load address", SOURCE_SPEC))
    else:
        head += [("BaseOfData", 24, 4, "", SOURCE_SPEC), ("ImageBase", 28, 4, "preferred load address", SOURCE_SPEC)]
    tail = [
        ("SectionAlignment", 32, 4, "", SOURCE_SPEC),
        ("FileAlignment", 36, 4, "", SOURCE_SPEC),
        ("MajorOperatingSystemVersion", 40, 2, "", SOURCE_SPEC),
        ("MinorOperatingSystemVersion", 42, 2, "", SOURCE_SPEC),
        ("MajorImageVersion", 44, 2, "", SOURCE_SPEC),
        ("MinorImageVersion", 46, 2, "", SOURCE_SPEC),
        ("MajorSubsystemVersion", 48, 2, "", SOURCE_SPEC),
        ("MinorSubsystemVersion", 50, 2, "", SOURCE_SPEC),
        ("Win32VersionValue", 52, 4, "", SOURCE_SPEC),
        ("SizeOfImage", 56, 4, "virtual size of the image, section-aligned", SOURCE_SPEC),
        ("SizeOfHeaders", 60, 4, "headers' raw size, file-aligned", SOURCE_SPEC),
        ("CheckSum", 64, 4, "PE checksum; identifies a hot-patch base together with TimeDateStamp", SOURCE_SPEC),
        ("Subsystem", 68, 2, "", SOURCE_SPEC),
        ("DllCharacteristics", 70, 2, "IMAGE_DLLCHARACTERISTICS_* flags", SOURCE_SPEC),
        ("SizeOfStackReserve", 72, p, "", SOURCE_SPEC),
        ("SizeOfStackCommit", 72 + p, p, "", SOURCE_SPEC),
        ("SizeOfHeapReserve", 72 + 2 * p, p, "", SOURCE_SPEC),
        ("SizeOfHeapCommit", 72 + 3 * p, p, "", SOURCE_SPEC),
        ("LoaderFlags", 72 + 4 * p, 4, "", SOURCE_SPEC),
        ("NumberOfRvaAndSizes", 76 + 4 * p, 4, "data directory entries that follow", SOURCE_SPEC),
    ]
    return declare("IMAGE_OPTIONAL_HEADER64" if pe32_plus else "IMAGE_OPTIONAL_HEADER32",
                   80 + 4 * p, *head, *tail)


OPTIONAL_HEADER64 = _optional(True)
OPTIONAL_HEADER32 = _optional(False)

DATA_DIRECTORY = declare(
    "IMAGE_DATA_DIRECTORY", 8,
    ("VirtualAddress", 0, 4, "RVA of the directory", SOURCE_SPEC),
    ("Size", 4, 4, "size in bytes (for the security directory: a file offset and size)", SOURCE_SPEC),
)

SECTION_HEADER = declare(
    "IMAGE_SECTION_HEADER", 40,
    ("Name0", 0, 8, "the 8-byte name, NUL-padded", SOURCE_SPEC),
    ("VirtualSize", 8, 4, "", SOURCE_SPEC),
    ("VirtualAddress", 12, 4, "RVA", SOURCE_SPEC),
    ("SizeOfRawData", 16, 4, "file-aligned raw size", SOURCE_SPEC),
    ("PointerToRawData", 20, 4, "file offset", SOURCE_SPEC),
    ("PointerToRelocations", 24, 4, "", SOURCE_SPEC),
    ("PointerToLinenumbers", 28, 4, "", SOURCE_SPEC),
    ("NumberOfRelocations", 32, 2, "", SOURCE_SPEC),
    ("NumberOfLinenumbers", 34, 2, "", SOURCE_SPEC),
    ("Characteristics", 36, 4, "IMAGE_SCN_* flags", SOURCE_SPEC),
)


def _load_config(p: int) -> Struct:
    """IMAGE_LOAD_CONFIG_DIRECTORY32/64 up to GuardMemcpyFunctionPointer (0xC0 / 0x140 bytes)."""
    rows: list[tuple[str, int, int, str] | tuple[str, int, int, str, str]] = []
    off = 0

    def add(name: str, width: int, text: str = "", source: str = "hdr") -> None:
        nonlocal off
        rows.append((name, off, width, text, source))
        off += width

    add("Size", 4, "bytes of this structure present; must equal the directory size (checked by the loader)",
        SOURCE_LOADER)
    add("TimeDateStamp", 4)
    add("MajorVersion", 2)
    add("MinorVersion", 2)
    add("GlobalFlagsClear", 4)
    add("GlobalFlagsSet", 4)
    add("CriticalSectionDefaultTimeout", 4)
    if p == 8:
        add("DeCommitFreeBlockThreshold", 8)
        add("DeCommitTotalFreeThreshold", 8)
        add("LockPrefixTable", 8)
        add("MaximumAllocationSize", 8)
        add("VirtualMemoryThreshold", 8)
        add("ProcessAffinityMask", 8)
        add("ProcessHeapFlags", 4)
    else:
        add("DeCommitFreeBlockThreshold", 4)
        add("DeCommitTotalFreeThreshold", 4)
        add("LockPrefixTable", 4)
        add("MaximumAllocationSize", 4)
        add("VirtualMemoryThreshold", 4)
        add("ProcessHeapFlags", 4)
        add("ProcessAffinityMask", 4)
    add("CSDVersion", 2)
    add("DependentLoadFlags", 2)
    add("EditList", p)
    add("SecurityCookie", p)
    add("SEHandlerTable", p)
    add("SEHandlerCount", p)
    add("GuardCFCheckFunctionPointer", p)
    add("GuardCFDispatchFunctionPointer", p)
    add("GuardCFFunctionTable", p, "VA of the CFG function table")
    add("GuardCFFunctionCount", p, "entries in the CFG function table")
    add("GuardFlags", 4, "IMAGE_GUARD_* flags; bits 28-31: extra bytes per CFG table entry")
    add("CodeIntegrityFlags", 2)
    add("CodeIntegrityCatalog", 2)
    add("CodeIntegrityCatalogOffset", 4)
    add("CodeIntegrityReserved", 4)
    add("GuardAddressTakenIatEntryTable", p)
    add("GuardAddressTakenIatEntryCount", p)
    add("GuardLongJumpTargetTable", p)
    add("GuardLongJumpTargetCount", p)
    add("DynamicValueRelocTable", p)
    add("CHPEMetadataPointer", p, "must be 0 in a 64-bit hot-patch image (24H2+)", SOURCE_LOADER)
    add("GuardRFFailureRoutine", p)
    add("GuardRFFailureRoutineFunctionPointer", p)
    add("DynamicValueRelocTableOffset", 4)
    add("DynamicValueRelocTableSection", 2)
    add("Reserved2", 2)
    add("GuardRFVerifyStackPointerFunctionPointer", p)
    add("HotPatchTableOffset", 4, "RVA of IMAGE_HOT_PATCH_INFO, 0 when there is none", SOURCE_LOADER)
    add("Reserved3", 4)
    add("EnclaveConfigurationPointer", p)
    add("VolatileMetadataPointer", p)
    add("GuardEHContinuationTable", p)
    add("GuardEHContinuationCount", p)
    add("GuardXFGCheckFunctionPointer", p)
    add("GuardXFGDispatchFunctionPointer", p)
    add("GuardXFGTableDispatchFunctionPointer", p)
    add("CastGuardOsDeterminedFailureMode", p)
    add("GuardMemcpyFunctionPointer", p)
    return declare("IMAGE_LOAD_CONFIG_DIRECTORY64" if p == 8 else "IMAGE_LOAD_CONFIG_DIRECTORY32", off, *rows)


LOAD_CONFIG64 = _load_config(8)
LOAD_CONFIG32 = _load_config(4)


def load_config_struct(pointer_size: int) -> Struct:
    return LOAD_CONFIG64 if pointer_size == 8 else LOAD_CONFIG32


def min_hotpatch_load_config(pointer_size: int) -> int:
    """The smallest load config Size the loader takes for a hot-patch image: up to the end of
    HotPatchTableOffset (0xF4 on 64-bit, 0x98 on x86)."""
    return load_config_struct(pointer_size).field("HotPatchTableOffset").end
