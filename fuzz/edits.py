"""Byte edits: the one representation every mutator produces and every recipe stores.

An edit is a tuple applied to a bytearray in order:

``("w", off, data)``  overwrite ``len(data)`` bytes at ``off`` (clipped to the end)
``("i", off, data)``  insert ``data`` before ``off``
``("d", off, n)``     delete ``n`` bytes at ``off``
``("t", n)``          truncate to ``n`` bytes

Offsets past the end are clipped, so an edit list stays applicable after an earlier
edit has been dropped (which minimisation does).
"""

from __future__ import annotations

from typing import Any

Edit = tuple[Any, ...]


def apply_edits(data: bytes, edits: list[Edit]) -> bytes:
    b = bytearray(data)
    for e in edits:
        op = e[0]
        if op == "w":
            off, chunk = min(e[1], len(b)), e[2]
            b[off : off + len(chunk)] = chunk[: max(0, len(b) - off)]
        elif op == "i":
            off = min(e[1], len(b))
            b[off:off] = e[2]
        elif op == "d":
            off = min(e[1], len(b))
            del b[off : off + e[2]]
        elif op == "t":
            del b[e[1] :]
        else:
            raise ValueError(f"unknown edit {op!r}")
    return bytes(b)


def edit_to_json(e: Edit) -> list[Any]:
    if e[0] in ("w", "i"):
        return [e[0], e[1], e[2].hex()]
    return list(e)


def edit_from_json(j: list[Any]) -> Edit:
    if j[0] in ("w", "i"):
        return (j[0], int(j[1]), bytes.fromhex(j[2]))
    if j[0] == "d":
        return ("d", int(j[1]), int(j[2]))
    if j[0] == "t":
        return ("t", int(j[1]))
    raise ValueError(f"unknown edit {j[0]!r}")
