"""Pairing by address order: the helpers behind :meth:`pehotpatch.correlate._Pairer.by_order`.

Between two paired neighbours, the unpaired functions of a run pair in address order;
runs of different lengths along the longest in-order sequence of functions of similar
size, and only where that choice is not a guess among look-alikes."""

from __future__ import annotations

import bisect

from pehotpatch.correlate.lcs import lcs
from pehotpatch.image.symbols import Function


def similar(b: Function, n: Function) -> bool:
    return 4 * abs(b.size - n.size) <= max(b.size, n.size)


def sole_match(b: Function, n: Function, bi: list[Function], ni: list[Function]) -> bool:
    """``n`` is the only function of its run similar in size to ``b``, and ``b`` the only
    one of its run similar to ``n``: among look-alikes (one template instantiated for
    several types) the alignment's choice is a guess."""
    return (sum(similar(b, x) for x in ni) == 1 and sum(similar(x, n) for x in bi) == 1)


def align(bi: list[Function], ni: list[Function]) -> list[tuple[Function, Function]]:
    """The longest sequence of in-order pairs of similar size (an LCS)."""
    return [(bi[i], ni[j]) for i, j in lcs(bi, ni, similar)]


def in_order(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The longest subsequence of ``pairs`` (sorted by base address) whose new addresses
    increase too: pairs that cross it would make the gaps between anchors meaningless."""
    tails: list[int] = []  # tails[k]: new address ending the best chain of length k+1
    tail_idx: list[int] = []
    prev = [-1] * len(pairs)
    for i, (_b, n) in enumerate(pairs):
        k = bisect.bisect_left(tails, n)
        if k == len(tails):
            tails.append(n)
            tail_idx.append(i)
        else:
            tails[k] = n
            tail_idx[k] = i
        prev[i] = tail_idx[k - 1] if k else -1
    out = []
    i = tail_idx[-1] if tail_idx else -1
    while i >= 0:
        out.append(pairs[i])
        i = prev[i]
    return out[::-1]
