"""The demo's steps. Each step states what it expected and whether that happened."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trainguard.errors import UnsafeArtifactError
from trainguard.findings import Report, Severity
from trainguard.report import render

#: Called as each step starts: (index, total, title).
StepProgress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class StepResult:
    """One demo step: what it showed and whether trainguard behaved as promised."""

    title: str
    ok: bool
    detail: str


@dataclass
class DemoResult:
    """Everything the demo did, with the reports and files it wrote."""

    out_dir: Path
    steps: list[StepResult] = field(default_factory=list)
    reports: dict[str, Report] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)


def _train_tiny_model(out_dir: Path) -> tuple[dict[str, object], Path]:
    """A few real optimizer steps on a tiny regression task; returns the state and checkpoint."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randn(256, 16)
    y = x.sum(dim=1, keepdim=True)
    for _ in range(50):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
    state: dict[str, object] = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    path = out_dir / "checkpoints" / "run-001-step50.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state, path


def run_demo(
    out_dir: str | os.PathLike[str], *, progress: StepProgress | None = None
) -> DemoResult:
    """Run every demo step, writing checkpoints and reports under ``out_dir``."""
    from trainguard.drill import loads_in_subprocess, write_poisoned_checkpoint
    from trainguard.scan import scan_paths
    from trainguard.scan.convert import convert_to_safetensors
    from trainguard.scan.load import read_verified, safe_load

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out)
    titles = [
        "train a tiny model and save its checkpoint",
        "an insider hides a payload in a copy of the checkpoint",
        "prove the poison is live (a throwaway process loads it the unsafe way)",
        "trainguard scan the checkpoints folder",
        "trainguard.scan.load.safe_load refuses the poisoned file",
        "safe_load accepts the clean file; convert it to safetensors",
    ]

    def step(i: int) -> None:
        if progress is not None:
            progress(i, len(titles), titles[i])

    step(0)
    state, clean = _train_tiny_model(out)
    result.steps.append(StepResult(titles[0], clean.exists(), f"wrote {clean}"))

    step(1)
    marker = out / "PAYLOAD-RAN"
    marker.unlink(missing_ok=True)
    poisoned = clean.with_name("run-001-step50-shared.pt")
    write_poisoned_checkpoint(state, poisoned, marker=marker)
    result.steps.append(
        StepResult(
            titles[1], not marker.exists(), f"wrote {poisoned}; nothing ran while writing it"
        )
    )

    step(2)
    loaded = loads_in_subprocess(poisoned, weights_only=False)
    live = loaded and marker.exists()
    result.steps.append(
        StepResult(
            titles[2],
            live,
            f"torch.load(weights_only=False) created {marker.name}: the payload runs for anyone "
            "loading this file the old way",
        )
    )
    marker.unlink(missing_ok=True)

    step(3)
    report = scan_paths([clean.parent])
    result.reports["scan"] = report
    (out / "scan-report.json").write_text(render(report, "json"), encoding="utf-8")
    (out / "scan-report.sarif").write_text(render(report, "sarif"), encoding="utf-8")
    flagged = {f.subject.split("::", 1)[0] for f in report.at_least(Severity.HIGH)}
    caught = str(poisoned) in flagged and str(clean) not in flagged
    worst = next((f for f in report.sorted_findings() if str(poisoned) in f.subject), None)
    result.steps.append(
        StepResult(
            titles[3],
            caught,
            f"{poisoned.name}: {worst.severity.label} {worst.rule}: {worst.message}"
            if worst
            else "the poisoned file was NOT flagged",
        )
    )

    step(4)
    try:
        safe_load(read_verified(poisoned))
        refused, why = False, "it loaded: the safe loader failed to refuse"
    except UnsafeArtifactError as exc:
        refused, why = True, exc.message
    result.steps.append(StepResult(titles[4], refused and not marker.exists(), why))

    step(5)
    artifact = read_verified(clean)
    weights = safe_load(artifact)
    target = out / "checkpoints" / "run-001-step50.safetensors"
    target.unlink(missing_ok=True)
    conversion = convert_to_safetensors(clean, target)
    rescan = scan_paths([target])
    converted = isinstance(weights, dict) and rescan.exit_code(Severity.MEDIUM) == 0
    result.steps.append(
        StepResult(
            titles[5],
            converted,
            f"loaded sha256 {artifact.sha256[:16]}...; wrote {target.name} "
            f"({conversion.tensors} tensors), which scans clean",
        )
    )
    return result
