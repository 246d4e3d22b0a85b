"""A longest common subsequence, shared by call-site alignment and address-order pairing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

A = TypeVar("A")
B = TypeVar("B")


def lcs(a: Sequence[A], b: Sequence[B], same: Callable[[A, B], bool] | None = None) -> list[tuple[int, int]]:
    """Index pairs of a longest common subsequence of ``a`` and ``b``: items match when
    ``same(x, y)`` (equality when not given).  Ties go to the earliest items of ``a``."""
    m, n = len(a), len(b)
    if same is None:
        match = [[x == y for y in b] for x in a]
    else:
        match = [[same(x, y) for y in b] for x in a]
    dp = [[0] * (n + 1) for _ in range(m + 1)]
    for i in range(m - 1, -1, -1):
        row, below, mi = dp[i], dp[i + 1], match[i]
        for j in range(n - 1, -1, -1):
            row[j] = below[j + 1] + 1 if mi[j] else max(below[j], row[j + 1])
    out = []
    i = j = 0
    while i < m and j < n:
        if match[i][j] and dp[i][j] == dp[i + 1][j + 1] + 1:
            out.append((i, j))
            i += 1
            j += 1
        elif dp[i + 1][j] >= dp[i][j + 1]:
            i += 1
        else:
            j += 1
    return out
