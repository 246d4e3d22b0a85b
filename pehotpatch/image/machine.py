"""The three machines pehp understands."""

from __future__ import annotations

from enum import StrEnum


class Machine(StrEnum):
    X64 = "x64"
    X86 = "x86"
    ARM64 = "arm64"

    @property
    def pointer_size(self) -> int:
        return 4 if self is Machine.X86 else 8

    @classmethod
    def from_coff(cls, value: int) -> Machine | None:
        return _COFF.get(value)

_COFF = {0x8664: Machine.X64, 0x14C: Machine.X86, 0xAA64: Machine.ARM64}
