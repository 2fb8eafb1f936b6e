"""A colleague's fine-tuning job from before trainguard guarded loading: the victim.

Run as a throwaway process by the demo (never imported by trainguard itself)::

    python -m trainguard.demo._colleague --ledger URL --run-id ft-1 \\
        --load base.pt --out ft-1.pt --steps 8

It does what the incident's victims did: ``torch.load(..., weights_only=False)``
on a shared checkpoint, which runs whatever the pickle carries (the demo's
payload only creates a marker file), then trains a few steps and saves a derived
checkpoint. The ledger still records what it used and produced (by content
digest), which is what lets the blast radius be proven afterwards.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainguard.demo._colleague")
    p.add_argument("--ledger", required=True, help="ledger URL the run is recorded in")
    p.add_argument("--run-id", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--load", required=True, type=Path, help="checkpoint to start from")
    p.add_argument("--out", required=True, type=Path, help="where the derived checkpoint goes")
    p.add_argument("--steps", type=int, default=8)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job; returns the process exit status."""
    args = _parser().parse_args(argv)
    import warnings
    import zlib

    import torch
    import torch.nn.functional as F

    from trainguard.demo._jobs import MODEL, build_model
    from trainguard.drill._model import batches, corpus
    from trainguard.ledger import RunRecorder, digest_file, save
    from trainguard.ledger.capture import UnknownProvenanceWarning

    torch.set_num_threads(1)
    with RunRecorder.start(
        args.ledger,
        run_id=args.run_id,
        user=args.user,
        accelerator_type="cpu",
        command=" ".join(sys.argv)[:4000],
    ) as recorder:
        digest, size = digest_file(args.load)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnknownProvenanceWarning)  # recorded as an alert
            recorder.used(digest, name=str(args.load), size=size)
        # The unsafe load of the incident: a full unpickler over a file from a shared folder.
        state = torch.load(args.load, weights_only=False)
        model = build_model()
        model.load_state_dict(state["model"])
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        data = batches(corpus(), MODEL.batch, MODEL.ctx, seed=zlib.crc32(args.run_id.encode()))
        for _ in range(args.steps):
            x, y = next(data)
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            opt.zero_grad(set_to_none=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save({"model": model.state_dict(), "step": args.steps}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
