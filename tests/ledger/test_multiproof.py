"""Batch inclusion proofs (multiproofs): they verify, stay small, and reject every change."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ledger.test_merkle import _flip, perfect_from
from trainguard.errors import LedgerIntegrityError
from trainguard.ledger import _merkle as m
from trainguard.ledger._multiproof import batch_plan, verify_batch


def _setup(size: int, indexes: list[int]) -> tuple[dict[int, bytes], list[bytes], bytes]:
    leaves = [i.to_bytes(4, "big") for i in range(size)]
    perfect = perfect_from(leaves)
    proof = [m.fold([perfect(*key) for key in group]) for group in batch_plan(indexes, size)]
    return {i: m.leaf_hash(leaves[i]) for i in indexes}, proof, m.root_of(size, perfect)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.data())
def test_every_batch_proof_verifies_and_lists_no_hash_twice(size: int, data: st.DataObject) -> None:
    indexes = data.draw(st.lists(st.integers(0, size - 1), max_size=40))
    leaves, proof, root = _setup(size, indexes)
    verify_batch(size, leaves, proof, root)
    plan = batch_plan(indexes, size)
    keys = [key for group in plan for key in group]
    assert len(keys) == len(set(keys))
    # Never larger than the single proofs it replaces, and no cited leaf is in it.
    assert len(plan) <= max(1, sum(len(m.inclusion_ranges(i, size)) for i in set(indexes)))
    assert not {(0, i) for i in indexes} & set(keys)


def test_single_leaf_batch_proof_has_the_single_proofs_size() -> None:
    leaves = [i.to_bytes(2, "big") for i in range(1000)]
    perfect = perfect_from(leaves)
    for index in (0, 1, 511, 512, 999):
        single = m.inclusion_proof(index, 1000, perfect)
        assert len(batch_plan([index], 1000)) == len(single)


def test_shared_hashes_are_listed_once() -> None:
    size, indexes = 1 << 16, list(range(0, 1 << 16, 64))
    singles = sum(len(m.inclusion_ranges(i, size)) for i in indexes)
    assert len(batch_plan(indexes, size)) == len(indexes) * 6  # only the 6 levels below 64
    assert singles == len(indexes) * 16


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 70), st.data())
def test_every_single_bit_change_in_a_batch_proof_is_caught(size: int, data: st.DataObject) -> None:
    indexes = data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=8, unique=True))
    leaves, proof, root = _setup(size, indexes)
    for bit in range(256):
        with pytest.raises(LedgerIntegrityError):
            verify_batch(size, leaves, proof, _flip(root, bit))
        for i in leaves:
            with pytest.raises(LedgerIntegrityError):
                verify_batch(size, {**leaves, i: _flip(leaves[i], bit)}, proof, root)
        for k in range(len(proof)):
            bad = [*proof[:k], _flip(proof[k], bit), *proof[k + 1 :]]
            with pytest.raises(LedgerIntegrityError):
                verify_batch(size, leaves, bad, root)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 100), st.data())
def test_reshaped_proofs_and_moved_leaves_are_caught(size: int, data: st.DataObject) -> None:
    indexes = data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=8, unique=True))
    leaves, proof, root = _setup(size, indexes)
    with pytest.raises(LedgerIntegrityError, match="longer"):
        verify_batch(size, leaves, [*proof, proof[0] if proof else root], root)
    if proof:
        with pytest.raises(LedgerIntegrityError, match="shorter"):
            verify_batch(size, leaves, proof[:-1], root)
        with pytest.raises(LedgerIntegrityError):
            verify_batch(size, leaves, [*proof[:-1], proof[-1][:31]], root)
    if len(set(proof)) > 1:
        with pytest.raises(LedgerIntegrityError):
            verify_batch(size, leaves, proof[::-1], root)
    # A proven leaf claimed at another index (or outside the tree) fails.
    moved = data.draw(st.integers(0, size))
    i = indexes[0]
    if moved not in leaves:
        with pytest.raises(LedgerIntegrityError):
            verify_batch(
                size, {**{k: v for k, v in leaves.items() if k != i}, moved: leaves[i]}, proof, root
            )


def test_out_of_range_indexes_are_rejected() -> None:
    with pytest.raises(ValueError):
        batch_plan([5], 5)
    with pytest.raises(ValueError):
        batch_plan([-1], 5)
    with pytest.raises(LedgerIntegrityError, match="outside"):
        verify_batch(0, {0: m.leaf_hash(b"")}, [], m.EMPTY_ROOT)
    verify_batch(0, {}, [], m.EMPTY_ROOT)


def test_the_sorted_list_form_checks_what_the_map_form_checks() -> None:
    from trainguard.ledger._multiproof import verify_sorted

    indexes = [3, 17, 18, 40]
    leaves, proof, root = _setup(64, indexes)
    hashes = [leaves[i] for i in indexes]
    verify_sorted(64, indexes, hashes, proof, root)
    with pytest.raises(LedgerIntegrityError, match="root"):
        verify_sorted(64, indexes, [hashes[1], hashes[0], *hashes[2:]], proof, root)
    # Leaves out of order, repeated, or not one hash each: refused, never checked.
    for bad_indexes, bad_hashes in (
        ([17, 3, 18, 40], hashes),
        ([3, 17, 17, 40], hashes),
        (indexes, hashes[:3]),
    ):
        with pytest.raises(LedgerIntegrityError, match="increasing order"):
            verify_sorted(64, bad_indexes, bad_hashes, proof, root)
    with pytest.raises(LedgerIntegrityError, match="outside the tree"):
        verify_sorted(64, [3, 17, 18, 64], hashes, proof, root)
