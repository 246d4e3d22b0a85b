"""The PE header checksum (the value the loader compares for drivers and boot images).

Algorithm: sum the file as little-endian 16-bit words with end-around carry folding,
skipping the 4-byte CheckSum field itself, then add the file length.
"""

from __future__ import annotations

from array import array


def pe_checksum(data: bytes | bytearray | memoryview, checksum_offset: int) -> int:
    """Return the PE checksum of ``data`` whose CheckSum field sits at ``checksum_offset``."""
    buf = bytearray(data)
    if 0 <= checksum_offset <= len(buf) - 4:
        buf[checksum_offset : checksum_offset + 4] = b"\0\0\0\0"
    if len(buf) % 2:
        buf.append(0)
    words = array("H")
    words.frombytes(bytes(buf))
    if array("H", [1]).tobytes() != b"\x01\x00":  # big-endian host
        words.byteswap()
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (total + len(data)) & 0xFFFFFFFF
