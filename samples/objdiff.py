#!/usr/bin/env python3
"""Function-level comparison of a sample scenario's base and intermediate objects.

    python3 samples/objdiff.py samples/x64/fix_globals [...]

This is how the `[diff]` function lists of each expect.toml were checked: it
disassembles `base.objs/*.obj` and `intermediate.objs/*.obj` with
llvm-objdump-22 and compares every function.  Objects are used rather than the
linked images because /Gy puts each function in its own section and every
reference to another symbol stays a named relocation, so a function compares
equal exactly when its code is the same up to layout.  Alignment padding
(`nop` forms) and the 2-byte `/hotpatch` prologue nop are ignored, and branch
targets are compared without their offsets.

A function that is listed in hotpatch_functions.txt but otherwise unchanged
would still differ here (its globals are reached through __ref_ pointers); no
scenario contains such a function.

Not part of pehp: a development aid for the sample corpus (needs llvm-objdump-22).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

OBJDUMP = "llvm-objdump-22"

_LABEL = re.compile(r"^[0-9a-f]+ <(.+)>:$")
_ADDRESS = re.compile(r"^\s*[0-9a-f]+:\s*")
_TARGET = re.compile(r"(#\s*)?0x[0-9a-f]+ <[^>]*>")
_NOP = re.compile(r"^(nop|xchg\s+%ax, %ax$)")


def source_name(symbol: str, machine: str) -> str:
    """The C name of an object-file function symbol (x86 adds '_' and '@N')."""
    if machine == "x86":
        symbol = re.sub(r"@\d+$", "", symbol)
        if symbol.startswith("_"):
            symbol = symbol[1:]
    return symbol


def functions(obj_dir: Path, machine: str) -> dict[str, list[str]]:
    """Map each function's C name to its normalized instruction and relocation lines."""
    result: dict[str, list[str]] = {}
    for obj in sorted(obj_dir.glob("*.obj")):
        text = subprocess.run(
            [OBJDUMP, "-dr", "--no-show-raw-insn", str(obj)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        current: list[str] | None = None
        for line in text.splitlines():
            label = _LABEL.match(line)
            if label:
                current = result.setdefault(source_name(label.group(1), machine), [])
                continue
            if line.startswith("Disassembly of section"):
                current = None
                continue
            if current is None or not line.strip():
                continue
            line = _ADDRESS.sub("", line).strip()  # instruction: drop its offset
            line = re.sub(r"^[0-9a-f]{8,}:\s*", "", line)  # relocation: drop its offset
            if _NOP.match(line):
                continue
            current.append(_TARGET.sub("<target>", line))
    return result


def machine_of(scenario_dir: Path) -> str:
    return scenario_dir.parent.name


def compare(scenario_dir: Path) -> dict[str, list[str]]:
    """changed/added/removed function names (C names) of one scenario directory."""
    machine = machine_of(scenario_dir)
    base = functions(scenario_dir / "base.objs", machine)
    inter = functions(scenario_dir / "intermediate.objs", machine)
    return {
        "changed_functions": sorted(f for f in base if f in inter and base[f] != inter[f]),
        "added_functions": sorted(f for f in inter if f not in base),
        "removed_functions": sorted(f for f in base if f not in inter),
    }


def main(argv: list[str]) -> int:
    for arg in argv:
        print(f"{arg}:")
        for key, names in compare(Path(arg)).items():
            print(f"  {key} = {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
