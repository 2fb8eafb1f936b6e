"""Batch inclusion proofs: many leaves proven in one tree head, shared hashes listed once.

One RFC 9162 inclusion proof per leaf repeats the hashes near the root for
every leaf and costs ``log2(n)`` stored hashes each. A batch proof (a
"multiproof") instead lists, once, the hashes of the subtrees holding none of
the proven leaves that are needed to recompute the root from those leaves:
about ``k * log2(n / k)`` hashes for ``k`` leaves instead of ``k * log2(n)``.

The tree of ``n`` leaves is the fold of the perfect subtrees of
``decompose(0, n)`` (its *pieces*). The proof lists, piece by piece from the
left: for a piece holding no proven leaf, its hash; otherwise, level by level
from the leaves up and left to right within a level, the sibling of every
known node whose sibling is not known; and last, one hash folding every piece
right of the last piece holding a proven leaf. The verifier walks the same order, so
a proof cannot be reordered, shortened or padded, and any changed hash, leaf
or index changes the recomputed root (:func:`verify_batch` raises).

Pure: no I/O; the hashes come from a ``perfect(level, index)`` store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from trainguard.errors import LedgerIntegrityError
from trainguard.ledger._merkle import EMPTY_ROOT, HASH_SIZE, decompose, fold

__all__ = ["batch_plan", "verify_batch"]


def _pieces(indexes: Iterable[int], size: int) -> list[tuple[int, int, list[int]]]:
    """``(level, index, proven leaves relative to the piece)`` for each piece, left to right."""
    wanted = sorted(set(indexes))
    if wanted and not (wanted[0] >= 0 and wanted[-1] < size):
        bad = wanted[0] if wanted[0] < 0 else wanted[-1]
        raise ValueError(f"leaf {bad} is not in a tree of size {size}")
    out, k = [], 0
    for level, index in decompose(0, size) if size else []:
        lo, hi = index << level, (index + 1) << level
        inside = []
        while k < len(wanted) and wanted[k] < hi:
            inside.append(wanted[k] - lo)
            k += 1
        out.append((level, index, inside))
    return out


def _last_proven(pieces: Sequence[tuple[int, int, list[int]]]) -> int:
    return max((k for k, (_, _, rel) in enumerate(pieces) if rel), default=-1)


def batch_plan(indexes: Iterable[int], size: int) -> list[tuple[tuple[int, int], ...]]:
    """The batch proof's hashes, in order, each as the perfect subtrees ``(level, index)``
    it folds (:func:`~trainguard.ledger._merkle.fold`): one subtree, except the
    last hash, which folds every piece right of the last piece holding a proven leaf.

    Raises:
        ValueError: an index is outside ``[0, size)``.
    """
    pieces = _pieces(indexes, size)
    last = _last_proven(pieces)
    plan: list[tuple[tuple[int, int], ...]] = []
    for level, index, known in pieces[: last + 1]:
        if not known:
            plan.append(((level, index),))
            continue
        for lv in range(level):
            base = (index << level) >> lv  # the piece's first node index at this level
            present = set(known)
            plan.extend(((lv, base + (i ^ 1)),) for i in known if i ^ 1 not in present)
            known = sorted({i >> 1 for i in known})
    if last + 1 < len(pieces):
        plan.append(tuple((level, index) for level, index, _ in pieces[last + 1 :]))
    return plan


def verify_batch(
    size: int, leaves: Mapping[int, bytes], proof: Sequence[bytes], root: bytes
) -> None:
    """Check that every ``leaves[index]`` (a leaf *hash*) is at ``index`` in the tree with ``root``.

    Raises:
        LedgerIntegrityError: an index is outside the tree, the proof is too
            short or too long, a hash is malformed, or the recomputed root differs.
    """
    subject = f"{len(leaves)} leaves of tree size {size}"
    if any(not 0 <= i < size for i in leaves):
        raise LedgerIntegrityError(
            "batch inclusion proof for a leaf outside the tree",
            subject=subject,
            expected=f"0 <= index < {size}",
            found=str(sorted(i for i in leaves if not 0 <= i < size)[:5]),
        )
    for value in (root, *leaves.values(), *proof):
        if len(value) != HASH_SIZE:
            raise LedgerIntegrityError(
                "a batch inclusion proof holds a value that is not a SHA-256 hash",
                subject=subject,
                expected=f"{HASH_SIZE} bytes",
                found=f"{len(value)} bytes",
            )
    sha256 = hashlib.sha256
    supply = iter(proof)
    pieces = _pieces(leaves, size)
    last = _last_proven(pieces)
    piece_hashes = []
    try:
        for level, index, rel in pieces[: last + 1]:
            if not rel:
                piece_hashes.append(next(supply))
                continue
            lo = index << level
            known = {i: leaves[lo + i] for i in rel}
            for _ in range(level):
                parents: dict[int, bytes] = {}
                for i in sorted(known):
                    if i & 1 and i ^ 1 in known:
                        continue  # combined with its left sibling already
                    if i & 1:
                        left, right = next(supply), known[i]
                    else:
                        left = known[i]
                        right = known[i ^ 1] if i ^ 1 in known else next(supply)
                    parents[i >> 1] = sha256(b"\x01" + left + right).digest()
                known = parents
            piece_hashes.append(known[0])
        if last + 1 < len(pieces):
            piece_hashes.append(next(supply))  # the fold of all pieces to the right
    except StopIteration:
        raise LedgerIntegrityError(
            "batch inclusion proof is shorter than the tree needs", subject=subject
        ) from None
    if next(supply, None) is not None:
        raise LedgerIntegrityError(
            "batch inclusion proof is longer than the tree needs", subject=subject
        )
    got = fold(piece_hashes) if size else EMPTY_ROOT
    if got != root:
        raise LedgerIntegrityError(
            "batch inclusion proof does not lead to the tree head's root",
            subject=subject,
            expected=root.hex(),
            found=got.hex(),
            hint="an entry, the proof or the tree head was altered",
        )
