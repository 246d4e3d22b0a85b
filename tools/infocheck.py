"""Cross-check ``pehp info --json`` against two independent readers: pefile and llvm-readobj-22.

Each reader's output is reduced to the same plain view (machine, image base, entry point,
sections, exports, imports, load config, CodeView) and the views are compared field by
field.  Used by tests/test_realworld_info.py and tools/realworld.py.

    python tools/infocheck.py IMAGE...     # prints the differences, exit 1 if any
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

READOBJ = "llvm-readobj-22"
MACHINES = {"x64": 0x8664, "x86": 0x14C, "arm64": 0xAA64}
FIELDS = ("machine", "image_base", "entry", "sections", "exports", "imports", "load_config", "codeview")

View = dict[str, Any]


def _hex(s: str | None) -> int | None:
    return None if s is None else int(s, 16)


# ---- pehp info --json ---------------------------------------------------------------------
def pehp_view(doc: dict[str, Any]) -> View:
    """The view of a ``pehp info --json`` document."""
    lc = doc.get("load_config")
    cv = doc.get("codeview")
    return {
        "machine": MACHINES[doc["machine"]],
        "image_base": _hex(doc["image_base"]),
        "entry": _hex(doc["entry_point"]),
        "sections": [(s["name"], _hex(s["rva"]), _hex(s["virtual_size"]), _hex(s["raw_size"]),
                      _hex(s["characteristics"])) for s in doc["sections"]],
        "exports": sorted((e["ordinal"], e["name"], None if e["forwarder"] else _hex(e["rva"]), e["forwarder"])
                          for e in doc["exports"]),
        "imports": sorted((i["dll"], i["name"], i["ordinal"], _hex(i["iat_rva"]) if not i["delayed"] else None,
                           i["delayed"]) for i in doc["imports"]),
        "load_config": None if lc is None else (_hex(lc["size"]), _hex(lc["guard_flags"]),
                                                _hex(lc["hotpatch_table_offset"])),
        "codeview": None if cv is None else (cv["guid"].lower(), cv["age"]),
    }


# ---- pefile -------------------------------------------------------------------------------
def pefile_view(path: str | Path) -> View:
    import pefile

    # pefile stops reading export names after 8192 by default ("assuming corrupt");
    # numpy's OpenBLAS exports 10064.
    pe = pefile.PE(str(path), fast_load=True, max_symbol_exports=1 << 20)
    pe.parse_data_directories(directories=[pefile.DIRECTORY_ENTRY[n] for n in (
        "IMAGE_DIRECTORY_ENTRY_EXPORT", "IMAGE_DIRECTORY_ENTRY_IMPORT", "IMAGE_DIRECTORY_ENTRY_DELAY_IMPORT",
        "IMAGE_DIRECTORY_ENTRY_DEBUG", "IMAGE_DIRECTORY_ENTRY_LOAD_CONFIG")])
    base = pe.OPTIONAL_HEADER.ImageBase
    exports = []
    if hasattr(pe, "DIRECTORY_ENTRY_EXPORT"):
        for e in pe.DIRECTORY_ENTRY_EXPORT.symbols:
            if not e.address and not e.forwarder:
                continue  # an unused slot of the address table
            fwd = e.forwarder.decode() if e.forwarder else None
            exports.append((e.ordinal, e.name.decode() if e.name else None, None if fwd else e.address, fwd))
    imports = []
    for entry in getattr(pe, "DIRECTORY_ENTRY_IMPORT", []):
        for imp in entry.imports:
            imports.append((entry.dll.decode(), None if imp.import_by_ordinal else imp.name.decode(),
                            imp.ordinal if imp.import_by_ordinal else None, imp.address - base, False))
    for entry in getattr(pe, "DIRECTORY_ENTRY_DELAY_IMPORT", []):
        for imp in entry.imports:
            imports.append((entry.dll.decode(), None if imp.import_by_ordinal else imp.name.decode(),
                            imp.ordinal if imp.import_by_ordinal else None, None, True))
    lc = None
    if hasattr(pe, "DIRECTORY_ENTRY_LOAD_CONFIG"):
        s = pe.DIRECTORY_ENTRY_LOAD_CONFIG.struct
        lc = (s.Size, getattr(s, "GuardFlags", None), getattr(s, "HotPatchTableOffset", None))
    cv = None
    for d in getattr(pe, "DIRECTORY_ENTRY_DEBUG", []):
        e = d.entry
        if d.struct.Type == 2 and e is not None and getattr(e, "CvSignature", b"") == b"RSDS":
            g = uuid.UUID(fields=(e.Signature_Data1, e.Signature_Data2, e.Signature_Data3, e.Signature_Data4,
                                  e.Signature_Data5, int.from_bytes(e.Signature_Data6, "big")))
            cv = (str(g), e.Age)
            break
    return {
        "machine": pe.FILE_HEADER.Machine,
        "image_base": base,
        "entry": pe.OPTIONAL_HEADER.AddressOfEntryPoint,
        "sections": [(s.Name.rstrip(b"\0").decode("latin-1"), s.VirtualAddress, s.Misc_VirtualSize,
                      s.SizeOfRawData, s.Characteristics) for s in pe.sections],
        "exports": sorted(exports, key=_order),
        "imports": sorted(imports, key=_order),
        "load_config": lc,
        "codeview": cv,
    }


def _order(t: tuple) -> tuple:
    return tuple((x is None, x if x is not None else 0) if not isinstance(x, str) else (False, x) for x in t)


# ---- llvm-readobj-22 ----------------------------------------------------------------------
def have_readobj() -> bool:
    return shutil.which(READOBJ) is not None


def readobj_view(path: str | Path) -> View:
    """Parse llvm-readobj's LLVM-style text output into the view."""
    out = subprocess.run([READOBJ, "--file-headers", "--sections", "--coff-exports", "--coff-imports",
                          "--coff-load-config", "--coff-debug-directory", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return parse_readobj(out)


# "Key: value", or "Key [ (0x...)" opening a list of flags (the value is the hex number)
_KV = re.compile(r"^(\s*)([A-Za-z][\w /]*?)(?:: (.*)| \[ \((0x[0-9A-Fa-f]+)\))$")


def _blocks(text: str, opener: str) -> list[list[str]]:
    """The lines of every top-level ``opener {`` / ``opener [`` block."""
    out: list[list[str]] = []
    cur: list[str] | None = None
    for line in text.splitlines():
        if cur is None:
            if line in (f"{opener} {{", f"{opener} ["):
                cur = []
        elif line in ("}", "]"):
            out.append(cur)
            cur = None
        else:
            cur.append(line)
    return out


def _fields(lines: list[str], indent: int = 2) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        m = _KV.match(line)
        if m and len(m.group(1)) == indent:
            out.setdefault(m.group(2), m.group(3) if m.group(3) is not None else m.group(4))
    return out


def parse_readobj(text: str) -> View:
    fh = _fields(_blocks(text, "ImageFileHeader")[0])
    oh = _fields(_blocks(text, "ImageOptionalHeader")[0])
    machine = int(re.search(r"\((0x[0-9A-Fa-f]+)\)", fh["Machine"]).group(1), 16)  # type: ignore[union-attr]
    sections = []
    sec_lines = _blocks(text, "Sections")
    for chunk in _split(sec_lines[0] if sec_lines else [], "  Section {"):
        f = _fields(chunk, 4)
        name = f["Name"].rsplit(" (", 1)[0]
        sections.append((name, int(f["VirtualAddress"], 16), int(f["VirtualSize"], 16), int(f["RawDataSize"]),
                         int(f["Characteristics"], 16)))
    exports = []
    for lines in _blocks(text, "Export"):
        f = _fields(lines)
        fwd = f.get("ForwardedTo")
        exports.append((int(f["Ordinal"]), f.get("Name") or None, None if fwd else int(f["RVA"], 16), fwd))
    ptr = 8 if machine != 0x14C else 4
    imports = []
    for kind in ("Import", "DelayImport"):
        for lines in _blocks(text, kind):
            f = _fields(lines)
            iat = int(f["ImportAddressTableRVA"], 16) if kind == "Import" else None
            k = 0
            for line in lines:
                m = re.match(r"^ {2,4}Symbol: (.*) \((\d+)\)$", line)
                if not m:
                    continue
                name, number = m.group(1), int(m.group(2))
                # a named import prints its hint, an ordinal import an empty name and the ordinal
                imports.append((f["Name"], name or None, None if name else number,
                                iat + k * ptr if iat is not None else None, kind == "DelayImport"))
                k += 1
    lc = None
    lcb = _blocks(text, "LoadConfig")
    if lcb:
        f = _fields(lcb[0])
        gf = f.get("GuardFlags")
        lc = (int(f["Size"], 16), int(gf, 16) if gf else None,
              int(f["HotPatchTableOffset"], 16) if "HotPatchTableOffset" in f else None)
    cv = None
    for chunk in _split(sum(_blocks(text, "DebugDirectory"), []), "  DebugEntry {"):
        f = _fields(chunk, 6)
        if "PDBGUID" in f:
            cv = (f["PDBGUID"].strip("{}").lower(), int(f["PDBAge"]))
            break
    return {
        "machine": machine,
        "image_base": int(oh["ImageBase"], 16),
        "entry": int(oh["AddressOfEntryPoint"], 16),
        "sections": sections,
        "exports": sorted(exports, key=_order),
        "imports": sorted(imports, key=_order),
        "load_config": lc,
        "codeview": cv,
    }


def _split(lines: list[str], opener: str) -> list[list[str]]:
    out: list[list[str]] = []
    for line in lines:
        if line == opener:
            out.append([])
        elif out:
            out[-1].append(line)
    return out


# ---- comparing ------------------------------------------------------------------------------
def differences(ours: View, theirs: View, who: str, *, limit: int = 5) -> list[str]:
    """Human-readable differences between two views (empty when they agree)."""
    out = []
    for key in FIELDS:
        a, b = ours[key], theirs[key]
        if key == "imports" and who == "llvm-readobj":
            a = sorted(a, key=_order)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            only_a = [x for x in a if x not in b][:limit]
            only_b = [x for x in b if x not in a][:limit]
            out.append(f"{key}: pehp has {len(a)}, {who} {len(b)}; only pehp {only_a}; only {who} {only_b}")
        else:
            out.append(f"{key}: pehp {a!r}, {who} {b!r}")
    return out


def pehp_info_json(path: str | Path) -> dict[str, Any]:
    """``pehp info --json`` run through the CLI entry point in this process."""
    import contextlib
    import io
    import json

    from pehotpatch.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["info", str(path), "--json"])
    if code:
        raise RuntimeError(f"pehp info {path} exited {code}")
    return json.loads(buf.getvalue())


def check_image(path: str | Path, doc: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """``{"pefile": [...], "llvm-readobj": [...]}``: the differences each reader finds."""
    ours = pehp_view(doc if doc is not None else pehp_info_json(path))
    out = {"pefile": differences(ours, pefile_view(path), "pefile")}
    if have_readobj():
        out["llvm-readobj"] = differences(ours, readobj_view(path), "llvm-readobj")
    return out


if __name__ == "__main__":
    bad = 0
    for arg in sys.argv[1:]:
        for who, diffs in check_image(arg).items():
            for d in diffs:
                bad += 1
                print(f"{arg}: {who}: {d}")
    sys.exit(1 if bad else 0)
