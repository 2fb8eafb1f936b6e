"""RFC 6962 / RFC 9162 Merkle tree hashing and proofs. Pure: no I/O, no state.

Leaves are hashed ``SHA-256(0x00 || data)`` and interior nodes
``SHA-256(0x01 || left || right)`` (RFC 9162 §2.1.1), so a leaf can never be
passed off as a node. The tree of ``n`` leaves splits at ``k``, the largest
power of two below ``n``.

Storage keeps the hashes of *perfect* subtrees (``2**level`` leaves starting
at a multiple of ``2**level``): once filled they never change, so an append
writes O(log n) new ones and never rewrites an old one. Every range a proof
needs is either such a perfect subtree or a *right-edge* range ``[lo, n)``
whose hash folds the perfect subtrees of its binary decomposition
(:func:`decompose`). Proof generation here therefore works from a function
that returns perfect-subtree hashes, whatever stores them.

Verification follows RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2
(consistency) and raises :class:`~trainguard.errors.LedgerIntegrityError`.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from trainguard.errors import LedgerIntegrityError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "consistency_proof",
    "consistency_ranges",
    "decompose",
    "extend",
    "fold",
    "inclusion_proof",
    "inclusion_proofs",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "perfect_levels",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
#: The root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256

#: ``perfect(level, index)`` returns the hash of leaves
#: ``[index * 2**level, (index + 1) * 2**level)``; level 0 is a leaf hash.
PerfectHash = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def perfect_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every perfect subtree hash over ``leaves``, level by level.

    ``levels[l][j]`` is the hash of leaves ``[j * 2**l, (j + 1) * 2**l)``; a
    level holds ``len(leaves) >> l`` nodes. One list comprehension per level
    keeps the interpreter out of the way: this is verification's hot loop.
    """
    sha256 = hashlib.sha256
    levels = [list(leaves)]
    current = levels[0]
    while len(current) >= 2:
        current = [
            sha256(b"\x01" + current[i] + current[i + 1]).digest()
            for i in range(0, len(current) - 1, 2)
        ]
        levels.append(current)
    return levels


def extend(
    size: int, pieces: Sequence[bytes], leaves: Sequence[bytes], min_level: int = 1
) -> tuple[list[tuple[int, int, bytes]], bytes]:
    """Append ``leaves`` to a tree of ``size`` leaves given its compact range.

    ``pieces`` are the perfect subtrees of ``decompose(0, size)``, largest
    first. Returns every perfect subtree ``(level, index, hash)`` of level
    ``min_level`` or more that the new leaves complete, and the new root.
    Level by level, like :func:`perfect_levels`: appends are O(k + log n)
    hashes and no per-leaf interpreter loop.
    """
    old = decompose(0, size) if size else []
    frontier = {level: h for (level, _), h in zip(old, pieces, strict=True)}
    if not leaves:
        return [], fold(list(pieces)) if size else EMPTY_ROOT
    sha256 = hashlib.sha256
    new: list[tuple[int, int, bytes]] = []
    total = size + len(leaves)
    # The last node completed at each level: the new root folds only these and old pieces.
    last: dict[int, tuple[int, bytes]] = {0: (total - 1, leaves[-1])}
    current, start, level = list(leaves), size, 0
    while True:
        if start & 1:  # the level's last old node is the left sibling of the first new one
            current.insert(0, frontier[level])
            start -= 1
        pairs = len(current) // 2
        if not pairs:
            break
        current = [
            sha256(b"\x01" + current[2 * i] + current[2 * i + 1]).digest() for i in range(pairs)
        ]
        start >>= 1
        level += 1
        last[level] = (start + pairs - 1, current[-1])
        if level >= min_level:
            new.extend((level, start + i, h) for i, h in enumerate(current))

    def piece(lv: int, index: int) -> bytes:
        got = last.get(lv)
        # A piece of the new tree was completed now (the last at its level) or is an old piece.
        return got[1] if got is not None and got[0] == index else frontier[lv]

    return new, root_of(total, piece)


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def decompose(lo: int, hi: int) -> list[tuple[int, int]]:
    """The perfect subtrees ``(level, index)`` covering ``[lo, hi)``, left to right.

    ``lo`` must be a multiple of the largest piece, which holds for every range
    a proof asks for (perfect subtrees and right-edge ranges): the pieces are
    the set bits of ``hi - lo``, largest first.
    """
    if not 0 <= lo < hi:
        raise ValueError(f"empty or negative range [{lo}, {hi})")
    pieces = []
    start, width = lo, hi - lo
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            if start % (1 << level):
                raise ValueError(f"range [{lo}, {hi}) is not aligned for decomposition")
            pieces.append((level, start >> level))
            start += 1 << level
    return pieces


def fold(hashes: Sequence[bytes]) -> bytes:
    """Fold piece hashes (largest first) into the hash of their union, right to left."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def _range_hash(lo: int, hi: int, perfect: PerfectHash) -> bytes:
    return fold([perfect(level, index) for level, index in decompose(lo, hi)])


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form the inclusion proof of ``index`` (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = 1 << ((hi - lo - 1).bit_length() - 1)  # _split, inlined: proofs come in thousands
        if index - lo < k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()  # the proof lists the deepest sibling first
    return ranges


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """The leaf ranges whose hashes form the consistency proof ``old -> new`` (RFC 9162 §2.1.4.1)."""
    if not 0 <= old <= new:
        raise ValueError(f"no consistency proof from size {old} to size {new}")
    if old == 0 or old == new:
        return []
    ranges: list[tuple[int, int]] = []
    lo, hi, m, complete = 0, new, old, True
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                ranges.append((lo, hi))
            break
        k = _split(n)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    ranges.reverse()
    return ranges


def inclusion_proof(index: int, size: int, perfect: PerfectHash) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree of ``size`` leaves."""
    return [_range_hash(lo, hi, perfect) for lo, hi in inclusion_ranges(index, size)]


def inclusion_proofs(
    indexes: Iterable[int],
    size: int,
    perfect_many: Callable[[set[tuple[int, int]]], Mapping[tuple[int, int], bytes]],
) -> dict[int, list[bytes]]:
    """Audit paths of many leaves at once, fetching every hash needed in one call.

    A leaf's path is its siblings inside the perfect piece of ``decompose(0,
    size)`` that holds it, then the fold of the pieces to its right (if any),
    then the pieces to its left, nearest first: the same path as
    :func:`inclusion_proof`, but the part above the pieces is shared by every
    leaf, so thousands of proofs cost little more than their siblings.
    """
    pieces = decompose(0, size) if size else []
    starts, start = [], 0
    for level, _ in pieces:
        starts.append(start)
        start += 1 << level
    plans: dict[int, tuple[int, list[tuple[int, int]]]] = {}
    need: set[tuple[int, int]] = set(pieces)
    for i in indexes:
        if not 0 <= i < size:
            raise ValueError(f"leaf {i} is not in a tree of size {size}")
        k = bisect.bisect_right(starts, i) - 1
        siblings = [(lv, (i >> lv) ^ 1) for lv in range(pieces[k][0])]
        need.update(siblings)
        plans[i] = (k, siblings)
    found = perfect_many(need)
    piece_hashes = [found[p] for p in pieces]
    right: list[bytes | None] = [None] * len(pieces)
    acc: bytes | None = None
    for k in range(len(pieces) - 1, -1, -1):
        right[k] = acc
        acc = piece_hashes[k] if acc is None else node_hash(piece_hashes[k], acc)
    proofs = {}
    for i, (k, siblings) in plans.items():
        path = [found[key] for key in siblings]
        suffix = right[k]
        if suffix is not None:
            path.append(suffix)
        path.extend(reversed(piece_hashes[:k]))
        proofs[i] = path
    return proofs


def consistency_proof(old: int, new: int, perfect: PerfectHash) -> list[bytes]:
    """The proof that the tree of ``old`` leaves is a prefix of the tree of ``new`` leaves."""
    return [_range_hash(lo, hi, perfect) for lo, hi in consistency_ranges(old, new)]


def root_of(size: int, perfect: PerfectHash) -> bytes:
    """The root of the first ``size`` leaves, from O(log size) perfect subtrees."""
    return EMPTY_ROOT if size == 0 else _range_hash(0, size, perfect)


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise LedgerIntegrityError(
            f"{name} is not a SHA-256 hash",
            expected=f"{HASH_SIZE} bytes",
            found=f"{len(value)} bytes",
        )


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` (a leaf *hash*) is at ``index`` in the tree with ``root``.

    Raises:
        LedgerIntegrityError: the proof does not lead from the leaf to the root.
    """
    subject = f"leaf {index} of tree size {size}"
    if not 0 <= index < size:
        raise LedgerIntegrityError(
            "inclusion proof for a leaf outside the tree",
            subject=subject,
            expected=f"0 <= index < {size}",
            found=str(index),
        )
    for name, value in (("leaf hash", leaf), ("root", root), *(("proof", p) for p in proof)):
        _check_hash(name, value)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise LedgerIntegrityError(
                "inclusion proof is longer than the path to the root", subject=subject
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise LedgerIntegrityError(
            "inclusion proof is shorter than the path to the root", subject=subject
        )
    if r != root:
        raise LedgerIntegrityError(
            "inclusion proof does not lead to the tree head's root",
            subject=subject,
            expected=root.hex(),
            found=r.hex(),
            hint="the entry, the proof or the tree head was altered",
        )


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree ``(old, old_root)`` is a prefix of ``(new, new_root)``.

    ``old`` must be at least 1: every tree extends the empty one.

    Raises:
        LedgerIntegrityError: the proof is malformed or the trees diverge.
    """
    subject = f"tree sizes {old} -> {new}"
    if not 0 <= old <= new:
        raise LedgerIntegrityError(
            "consistency proof between sizes that shrink",
            subject=subject,
            expected="old size <= new size",
            found=f"{old} > {new}",
            hint="the log was truncated or rolled back",
        )
    if old == 0:
        # Every log extends the empty tree; a "proof" of it proves nothing, so
        # callers must not ask for one (the published vectors reject it too).
        raise LedgerIntegrityError(
            "a consistency proof from the empty tree proves nothing", subject=subject
        )
    if old == new:
        if proof:
            raise LedgerIntegrityError(
                "consistency proof between equal sizes must be empty", subject=subject
            )
        if old_root != new_root:
            raise LedgerIntegrityError(
                "two tree heads of the same size have different roots",
                subject=subject,
                expected=old_root.hex(),
                found=new_root.hex(),
                hint="the log was rewritten (a split view)",
            )
        return
    if not proof:
        raise LedgerIntegrityError("consistency proof is empty", subject=subject)
    for name, value in (
        ("old root", old_root),
        ("new root", new_root),
        *(("proof", p) for p in proof),
    ):
        _check_hash(name, value)
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise LedgerIntegrityError("consistency proof is too long", subject=subject)
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise LedgerIntegrityError("consistency proof is too short", subject=subject)
    if fr != old_root or sr != new_root:
        raise LedgerIntegrityError(
            "consistency proof does not connect the two tree heads",
            subject=subject,
            expected=f"old {old_root.hex()}, new {new_root.hex()}",
            found=f"old {fr.hex()}, new {sr.hex()}",
            hint="the log was rewritten between the two tree heads",
        )


class CompactRange:
    """The perfect-subtree hashes of a growing prefix: an O(log n) stack.

    Push leaf hashes in order; :meth:`root` is the Merkle tree hash of all of
    them. ``on_node`` (optional) sees every perfect subtree ``(level, index,
    hash)`` as it completes, which is how appends learn the nodes to store and
    verification checks the stored ones. Start from stored pieces with
    ``CompactRange(size, pieces)``.
    """

    __slots__ = ("_hashes", "_levels", "on_node", "size")

    def __init__(
        self,
        size: int = 0,
        pieces: Iterable[bytes] = (),
        on_node: Callable[[int, int, bytes], None] | None = None,
    ) -> None:
        self.size = size
        self._hashes = list(pieces)
        self._levels = [
            level for level in range(size.bit_length() - 1, -1, -1) if size >> level & 1
        ]
        if len(self._hashes) != len(self._levels):
            raise ValueError(f"a compact range of size {size} has {len(self._levels)} pieces")
        self.on_node = on_node

    def push(self, leaf: bytes) -> None:
        """Append one leaf hash."""
        hashes, levels = self._hashes, self._levels
        index, h, level = self.size, leaf, 0
        while levels and levels[-1] == level:
            levels.pop()
            h = node_hash(hashes.pop(), h)
            level += 1
            if self.on_node is not None:
                self.on_node(level, index >> level, h)
        hashes.append(h)
        levels.append(level)
        self.size = index + 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.push(leaf)

    def pieces(self) -> list[tuple[int, bytes]]:
        """``(level, hash)`` of the perfect subtrees covering the prefix, largest first."""
        return list(zip(self._levels, self._hashes, strict=True))

    def root(self) -> bytes:
        return fold(self._hashes)
