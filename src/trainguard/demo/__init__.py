"""``trainguard demo``: the product working end to end on this machine, no GPU needed.

A guarded pre-training run writes a checkpoint into a real ledger; a simulated
insider poisons the shared copy with a harmless payload; colleagues' fine-tunes
load it the old way in throwaway processes (the payload runs) and spread it
into derived checkpoints. trainguard then catches it: the scanner flags it, the
safe loader refuses it, and the signed, verified ledger proves its blast radius
(affected runs, derived checkpoints, hours, cost, and the provably clean runs).
Drills replay the incident's in-job sabotage on 2-rank jobs under the sentinel,
and an HTML report and the dashboard command close the demo.

Example:
    >>> from trainguard.demo import run_demo
    >>> result = run_demo("demo-out")   # doctest: +SKIP
    >>> result.ok                       # doctest: +SKIP
    True
"""

from __future__ import annotations

from trainguard.demo._run import DEMO_DRILLS, DemoResult, StepResult, run_demo

__all__ = ["DEMO_DRILLS", "DemoResult", "StepResult", "run_demo"]
