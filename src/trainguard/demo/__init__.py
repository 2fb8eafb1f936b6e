"""``trainguard demo``: the product working end to end on this machine, no GPU needed.

The demo trains a tiny model, lets a simulated insider poison a copy of its
checkpoint with a harmless payload, proves in a throwaway process that the
poison is live, and then shows trainguard catching it: the scanner flags it,
the safe loader refuses it (the payload never runs), and the clean checkpoint
is converted to safetensors.

Example:
    >>> from trainguard.demo import run_demo
    >>> result = run_demo("demo-out")   # doctest: +SKIP
    >>> result.ok                       # doctest: +SKIP
    True
"""

from __future__ import annotations

from trainguard.demo._run import DemoResult, StepResult, run_demo

__all__ = ["DemoResult", "StepResult", "run_demo"]
