"""The Merkle code against the published RFC 6962 proof vectors, and by properties."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import SHARED
from trainguard.errors import LedgerIntegrityError
from trainguard.ledger import _merkle as m

VECTORS = SHARED / "vectors" / "rfc6962"
needs_vectors = pytest.mark.skipif(
    not VECTORS.is_dir(), reason=f"RFC 6962 vectors not found at {VECTORS} (shared/ is absent)"
)

#: The eight leaves of the RFC 6962 reference tests (certificate-transparency, transparency-dev).
RFC_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]


def _cases(kind: str) -> list[Path]:
    return sorted((VECTORS / kind).glob("*/*.json")) if VECTORS.is_dir() else []


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def perfect_from(leaves: list[bytes]) -> Callable[[int, int], bytes]:
    """A perfect-subtree oracle over in-memory leaf *data*, computed naively."""
    hashes = [m.leaf_hash(d) for d in leaves]

    def mth(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return hashes[lo]
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        return m.node_hash(mth(lo, lo + k), mth(lo + k, hi))

    def perfect(level: int, index: int) -> bytes:
        lo = index << level
        assert lo + (1 << level) <= len(hashes)
        return mth(lo, lo + (1 << level))

    perfect.mth = mth  # type: ignore[attr-defined]
    return perfect


@needs_vectors
@pytest.mark.parametrize("path", _cases("inclusion"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_inclusion_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (
        case["leafIdx"],
        case["treeSize"],
        _b64(case["leafHash"]),
        [_b64(p) for p in case["proof"] or []],
        _b64(case["root"]),
    )
    if case["wantErr"]:
        with pytest.raises(LedgerIntegrityError):
            m.verify_inclusion(*args)
    else:
        m.verify_inclusion(*args)


@needs_vectors
@pytest.mark.parametrize("path", _cases("consistency"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_consistency_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (
        case["size1"],
        case["size2"],
        _b64(case["root1"]),
        _b64(case["root2"]),
        [_b64(p) for p in case["proof"] or []],
    )
    if case["wantErr"]:
        with pytest.raises(LedgerIntegrityError):
            m.verify_consistency(*args)
    else:
        m.verify_consistency(*args)


@needs_vectors
def test_vectors_were_found() -> None:
    assert len(_cases("inclusion")) > 50 and len(_cases("consistency")) > 50


@needs_vectors
def test_generated_proofs_equal_published_happy_paths() -> None:
    """Our proof *generation* reproduces the published proofs over the RFC leaves."""
    checked = 0
    for path in _cases("inclusion") + _cases("consistency"):
        case = json.loads(path.read_text())
        if case["wantErr"] or "happy" not in path.stem:
            continue
        proof = [_b64(p) for p in case["proof"] or []]
        if "leafIdx" in case:
            n = case["treeSize"]
            perfect = perfect_from(RFC_LEAVES[:n])
            assert m.inclusion_proof(case["leafIdx"], n, perfect) == proof
            assert m.root_of(n, perfect) == _b64(case["root"])
        else:
            n = case["size2"]
            perfect = perfect_from(RFC_LEAVES[:n])
            assert m.consistency_proof(case["size1"], n, perfect) == proof
        checked += 1
    assert checked >= 5


def test_empty_root_and_rfc_roots() -> None:
    assert m.EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    # The RFC 6962 reference root of the eight test leaves.
    assert (
        m.root_of(8, perfect_from(RFC_LEAVES)).hex()
        == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.data())
def test_every_inclusion_proof_verifies(size: int, data: st.DataObject) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(size)]
    perfect = perfect_from(leaves)
    root = perfect.mth(0, size)  # type: ignore[attr-defined]
    assert m.root_of(size, perfect) == root
    index = data.draw(st.integers(0, size - 1))
    proof = m.inclusion_proof(index, size, perfect)
    m.verify_inclusion(index, size, m.leaf_hash(leaves[index]), proof, root)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.data())
def test_every_consistency_proof_verifies(new: int, data: st.DataObject) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(new)]
    perfect = perfect_from(leaves)
    old = data.draw(st.integers(1, new))
    proof = m.consistency_proof(old, new, perfect)
    m.verify_consistency(old, new, m.root_of(old, perfect), m.root_of(new, perfect), proof)


def _flip(value: bytes, bit: int) -> bytes:
    b = bytearray(value)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 70), st.data())
def test_every_single_bit_change_in_an_inclusion_proof_is_caught(
    size: int, data: st.DataObject
) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(size)]
    perfect = perfect_from(leaves)
    root = m.root_of(size, perfect)
    index = data.draw(st.integers(0, size - 1))
    leaf = m.leaf_hash(leaves[index])
    proof = m.inclusion_proof(index, size, perfect)
    for bit in range(256):
        with pytest.raises(LedgerIntegrityError):
            m.verify_inclusion(index, size, _flip(leaf, bit), proof, root)
        with pytest.raises(LedgerIntegrityError):
            m.verify_inclusion(index, size, leaf, proof, _flip(root, bit))
        for i in range(len(proof)):
            bad = [*proof[:i], _flip(proof[i], bit), *proof[i + 1 :]]
            with pytest.raises(LedgerIntegrityError):
                m.verify_inclusion(index, size, leaf, bad, root)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 70), st.data())
def test_every_single_bit_change_in_a_consistency_proof_is_caught(
    new: int, data: st.DataObject
) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(new)]
    perfect = perfect_from(leaves)
    old = data.draw(st.integers(1, new - 1))
    r1, r2 = m.root_of(old, perfect), m.root_of(new, perfect)
    proof = m.consistency_proof(old, new, perfect)
    for bit in range(256):
        for a, b in ((_flip(r1, bit), r2), (r1, _flip(r2, bit))):
            with pytest.raises(LedgerIntegrityError):
                m.verify_consistency(old, new, a, b, proof)
        for i in range(len(proof)):
            bad = [*proof[:i], _flip(proof[i], bit), *proof[i + 1 :]]
            with pytest.raises(LedgerIntegrityError):
                m.verify_consistency(old, new, r1, r2, bad)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=200))
def test_compact_range_matches_naive_root_and_reports_every_perfect_node(
    leaves: list[bytes],
) -> None:
    perfect = perfect_from(leaves) if leaves else None
    seen: dict[tuple[int, int], bytes] = {}
    cr = m.CompactRange(on_node=lambda level, index, h: seen.__setitem__((level, index), h))
    cr.extend(m.leaf_hash(d) for d in leaves)
    assert cr.size == len(leaves)
    if perfect is None:
        assert cr.root() == m.EMPTY_ROOT
        return
    assert cr.root() == m.root_of(len(leaves), perfect)
    expected = {
        (level, index)
        for level in range(1, len(leaves).bit_length())
        for index in range(len(leaves) >> level)
    }
    assert set(seen) == expected
    assert all(perfect(level, index) == h for (level, index), h in seen.items())
    # Resuming from the pieces gives the same tree as pushing everything at once.
    half = len(leaves) // 2
    first = m.CompactRange()
    first.extend(m.leaf_hash(d) for d in leaves[:half])
    resumed = m.CompactRange(half, [h for _, h in first.pieces()])
    resumed.extend(m.leaf_hash(d) for d in leaves[half:])
    assert resumed.root() == cr.root()


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = m.leaf_hash(b"a"), m.leaf_hash(b"b")
    assert m.leaf_hash(a + b) != m.node_hash(a, b)
    with pytest.raises(LedgerIntegrityError):
        # A one-leaf tree whose "leaf" is two concatenated hashes is not the two-leaf tree.
        m.verify_inclusion(0, 1, m.leaf_hash(a + b), [], m.node_hash(a, b))


def test_proof_ranges_reject_bad_arguments() -> None:
    with pytest.raises(ValueError):
        m.inclusion_ranges(5, 5)
    with pytest.raises(ValueError):
        m.consistency_ranges(6, 5)
    with pytest.raises(ValueError):
        m.decompose(1, 4)  # [1, 4) is not a right-aligned range


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 300), st.integers(1, 300))
def test_batch_extend_equals_leaf_by_leaf(size: int, k: int) -> None:
    leaves = [m.leaf_hash(i.to_bytes(4, "big")) for i in range(size + k)]
    before = m.CompactRange()
    before.extend(leaves[:size])
    seen: list[tuple[int, int, bytes]] = []
    after = m.CompactRange(size, [h for _, h in before.pieces()], on_node=lambda *n: seen.append(n))
    after.extend(leaves[size:])
    new, root = m.extend(size, [h for _, h in before.pieces()], leaves[size:])
    assert root == after.root()
    assert sorted(new) == sorted(seen)
    levels = m.perfect_levels(leaves)
    assert all(levels[lv][i] == h for lv, i, h in new)
    for min_level in (2, 4):  # ledgers store only the upper levels
        upper, same_root = m.extend(size, [h for _, h in before.pieces()], leaves[size:], min_level)
        assert same_root == root
        assert upper == [n for n in new if n[0] >= min_level]


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 300), st.data())
def test_batch_inclusion_proofs_equal_single_ones(size: int, data: st.DataObject) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(size)]
    perfect = perfect_from(leaves)
    indexes = data.draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=20))
    calls: list[int] = []

    def many(keys: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        calls.append(len(keys))
        return {k: perfect(*k) for k in keys}

    batch = m.inclusion_proofs(indexes, size, many)
    assert len(calls) == 1
    for i in indexes:
        assert batch[i] == m.inclusion_proof(i, size, perfect)
    with pytest.raises(ValueError):
        m.inclusion_proofs([size], size, many)
