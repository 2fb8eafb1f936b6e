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

Pure: no I/O; the hashes come from a ``perfect(level, index)`` store. The walk itself
(:func:`~trainguard.ledger._fast.batch_piece_hashes`) is compiled where the C extension
was built.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from operator import lt

from trainguard.errors import LedgerIntegrityError
from trainguard.ledger import _fast
from trainguard.ledger._merkle import EMPTY_ROOT, HASH_SIZE, decompose, fold

__all__ = ["batch_plan", "verify_batch", "verify_sorted"]


def _checked(indexes: Iterable[int], size: int) -> list[int]:
    wanted = sorted(set(indexes))
    if wanted and not (wanted[0] >= 0 and wanted[-1] < size):
        bad = wanted[0] if wanted[0] < 0 else wanted[-1]
        raise ValueError(f"leaf {bad} is not in a tree of size {size}")
    return wanted


def _right_pieces(wanted: Sequence[int], size: int) -> list[tuple[int, int]]:
    """The pieces right of the last piece holding a proven leaf (folded into one hash)."""
    pieces = decompose(0, size) if size else []
    if not wanted:
        return pieces
    return [(level, index) for level, index in pieces if index << level > wanted[-1]]


def batch_plan(indexes: Iterable[int], size: int) -> list[tuple[tuple[int, int], ...]]:
    """The batch proof's hashes, in order, each as the perfect subtrees ``(level, index)``
    it folds (:func:`~trainguard.ledger._merkle.fold`): one subtree, except the
    last hash, which folds every piece right of the last piece holding a proven leaf.

    Raises:
        ValueError: an index is outside ``[0, size)``.
    """
    wanted = _checked(indexes, size)
    plan: list[tuple[tuple[int, int], ...]] = [
        (key,) for key in _fast.batch_plan_keys(size, wanted)
    ]
    right = _right_pieces(wanted, size)
    if right:
        plan.append(tuple(right))
    return plan


def verify_batch(
    size: int, leaves: Mapping[int, bytes], proof: Sequence[bytes], root: bytes
) -> None:
    """Check that every ``leaves[index]`` (a leaf *hash*) is at ``index`` in the tree with ``root``.

    Raises:
        LedgerIntegrityError: an index is outside the tree, the proof is too
            short or too long, a hash is malformed, or the recomputed root differs.
    """
    wanted = sorted(leaves)
    verify_sorted(size, wanted, [leaves[i] for i in wanted], proof, root)


def verify_sorted(
    size: int, indexes: list[int], hashes: list[bytes], proof: Sequence[bytes], root: bytes
) -> None:
    """:func:`verify_batch` for leaf hashes given as two lists, ``indexes`` increasing
    (a large report's 10^5 cited entries come sorted: no map to build and sort).

    Raises:
        LedgerIntegrityError: as :func:`verify_batch`; also for indexes not increasing.
    """
    subject = f"{len(indexes)} leaves of tree size {size}"
    # (The checks below scan 10^5 values for a large report: with map, at C speed,
    # and a Python loop only to describe what fails.)
    if len(hashes) != len(indexes) or not all(map(lt, indexes, islice(indexes, 1, None))):
        raise LedgerIntegrityError(
            "batch inclusion proof check needs one hash per leaf, leaves in increasing order",
            subject=subject,
        )
    if indexes and not (indexes[0] >= 0 and indexes[-1] < size):
        raise LedgerIntegrityError(
            "batch inclusion proof for a leaf outside the tree",
            subject=subject,
            expected=f"0 <= index < {size}",
            found=str([i for i in indexes if not 0 <= i < size][:5]),
        )
    values = (root, *hashes, *proof)
    if set(map(type, values)) != {bytes} or set(map(len, values)) != {HASH_SIZE}:
        value = next(v for v in values if type(v) is not bytes or len(v) != HASH_SIZE)
        raise LedgerIntegrityError(
            "a batch inclusion proof holds a value that is not a SHA-256 hash",
            subject=subject,
            expected=f"{HASH_SIZE} bytes",
            found=f"{len(value)} bytes" if type(value) is bytes else type(value).__name__,
        )
    wanted = indexes
    short = LedgerIntegrityError(
        "batch inclusion proof is shorter than the tree needs", subject=subject
    )
    try:
        pieces, used = _fast.batch_piece_hashes(size, wanted, hashes, list(proof))
    except ValueError:
        raise short from None
    rest = list(proof[used:])
    if _right_pieces(wanted, size):
        if not rest:
            raise short
        pieces.append(rest.pop(0))  # the fold of all pieces to the right
    if rest:
        raise LedgerIntegrityError(
            "batch inclusion proof is longer than the tree needs", subject=subject
        )
    got = fold(pieces) if size else EMPTY_ROOT
    if got != root:
        raise LedgerIntegrityError(
            "batch inclusion proof does not lead to the tree head's root",
            subject=subject,
            expected=root.hex(),
            found=got.hex(),
            hint="an entry, the proof or the tree head was altered",
        )
