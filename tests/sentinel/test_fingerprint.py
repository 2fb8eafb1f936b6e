"""The keyed fingerprint: order-sensitive, exact on equal inputs, key-dependent."""

from __future__ import annotations

import torch

from trainguard.sentinel._fingerprint import Fingerprinter, fresh_key


def _tensors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(64, 32, generator=g),
        torch.randn(32, generator=g),
        torch.randn(20000, generator=g),  # long 1-D: folded with a tail
        torch.randn(3, 4, 5, generator=g),
        torch.randn(16, generator=g, dtype=torch.float64),
        torch.randn(8, 8, generator=g).to(torch.bfloat16),
    ]


def test_equal_inputs_equal_fingerprints() -> None:
    ts = _tensors()
    fp = Fingerprinter(ts, key=fresh_key())
    a, b = fp(ts), fp([t.clone() for t in ts])
    assert a.dtype == torch.float64 and a.shape == (len(ts),)
    assert torch.equal(a, b)


def test_swap_changes_fingerprint_where_xor_hash_does_not() -> None:
    ts = _tensors()
    fp = Fingerprinter(ts, key=fresh_key())
    before = fp(ts)
    swapped = [t.clone() for t in ts]
    w = swapped[0]
    w[0, 0], w[5, 7] = ts[0][5, 7], ts[0][0, 0]
    after = fp(swapped)
    assert after[0] != before[0]
    assert torch.equal(after[1:], before[1:])
    # The plain XOR hash cannot see a swap: this is why the fingerprint is keyed per position.
    assert torch.hash_tensor(swapped[0]) == torch.hash_tensor(ts[0])


def test_every_position_of_every_tensor_is_covered() -> None:
    ts = _tensors()
    fp = Fingerprinter(ts, key=fresh_key())
    before = fp(ts)
    for i, t in enumerate(ts):
        for pos in (0, t.numel() // 2, t.numel() - 1):  # includes the tail of the long 1-D tensor
            edited = [x.clone() for x in ts]
            flat = edited[i].view(-1)
            flat[pos] = flat[pos] * 1.5 + 0.25
            changed = (fp(edited) != before).nonzero().flatten().tolist()
            assert changed == [i], (i, pos)


def test_key_matters_and_combine_is_exact() -> None:
    ts = _tensors()
    f1, f2 = Fingerprinter(ts, key=1), Fingerprinter(ts, key=2)
    assert not torch.equal(f1(ts), f2(ts))
    same = Fingerprinter(ts, key=1)
    assert torch.equal(f1(ts), same(ts))
    v = f1.combine(f1(ts))
    assert v.dtype == torch.float64 and float(v) == int(float(v)) < 2**52
    mask = torch.tensor([True] * (len(ts) - 1) + [False])
    edited = [t.clone() for t in ts]
    edited[-1].view(-1)[0] += 1
    assert f1.combine(f1(edited), mask) == f1.combine(f1(ts), mask)
    assert f1.combine(f1(edited)) != f1.combine(f1(ts))
