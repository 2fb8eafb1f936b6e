"""The drills' model and the text shipped with the package."""

from __future__ import annotations

import torch

from trainguard.drill._model import GPT, batches, corpus


def test_the_shipped_text_is_installed_package_data() -> None:
    text = corpus()
    assert 20_000 <= len(text) <= 60_000
    assert text.isascii()
    assert b"Apache License 2.0" in text[:400]  # says where it comes from


def test_batches_are_next_byte_windows_and_leave_the_global_rng_alone() -> None:
    text = corpus()
    state = torch.get_rng_state()
    x, y = next(batches(text, 4, 16, seed=3))
    assert torch.equal(torch.get_rng_state(), state)
    assert x.shape == y.shape == (4, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])
    x2, _ = next(batches(text, 4, 16, seed=3))
    assert torch.equal(x, x2)


def test_gpt_predicts_every_next_byte() -> None:
    torch.manual_seed(0)
    model = GPT(layers=1, d=32, heads=2, ctx=16)
    x, y = next(batches(corpus(), 2, 16, seed=0))
    logits = model(x)
    assert logits.shape == (2, 16, 256)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
