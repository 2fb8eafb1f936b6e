"""The demo's steps. Each step states what it expected and whether that happened.

The story, on real jobs and a real ledger (``OUT/ledger.db``):

1. a guarded pre-training run writes a checkpoint; the ledger records both;
2. an insider writes a poisoned copy of it into the shared folder;
3. colleagues' fine-tunes (from before trainguard guarded loading) load that copy
   the old way in throwaway processes: the harmless payload really runs, and
   their derived checkpoints spread it;
4. ``trainguard scan`` flags the copy; ``safe_load`` refuses it, accepts the
   clean original and converts it to safetensors;
5. the blast radius of the poisoned checkpoint is computed from the signed,
   verified ledger: the affected runs, derived checkpoints, hours and cost, and
   the runs that are provably clean;
6. drills replay more of the incident on 2-rank training jobs under the sentinel;
7. an HTML report, and the command that opens the dashboard on this ledger.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainguard.errors import TrainguardError, UnsafeArtifactError
from trainguard.findings import Report, Severity
from trainguard.report import render

__all__ = ["DEMO_DRILLS", "DemoResult", "StepProgress", "StepResult", "run_demo"]

#: Called as each step starts: (index, total, title).
StepProgress = Callable[[int, int, str], None]

#: The drills the demo runs: in-job sabotage whose detection is deterministic. The random
#: sleeps drill is statistical (named within 20 steps in its own e2e test, but missed once
#: in four demo runs on a loaded 2-core machine), so the demo leaves it to `trainguard drill`.
DEMO_DRILLS: tuple[str, ...] = (
    "signflip-patch",
    "weights-thread",
    "rng-reseed",
    "kill-rank",
)

#: Illustrative price of one CPU process-hour, so CPU-only demo runs have a cost.
CPU_PRICE = 0.05


@dataclass(frozen=True)
class StepResult:
    """One demo step: what it showed and whether trainguard behaved as promised."""

    title: str
    ok: bool
    detail: str


@dataclass
class DemoResult:
    """Everything the demo did, with the reports and files it wrote.

    Attributes:
        out_dir: the demo's folder.
        steps: one result per step, in order.
        reports: the scan report (``"scan"``).
        ledger_url: the SQLite ledger that holds every run of the demo.
        blast: the blast radius of the poisoned checkpoint (JSON form), if computed.
        drills: each drill's result as JSON data.
        html: the HTML report.
    """

    out_dir: Path
    steps: list[StepResult] = field(default_factory=list)
    reports: dict[str, Report] = field(default_factory=dict)
    ledger_url: str = ""
    blast: dict[str, Any] | None = None
    drills: list[dict[str, Any]] = field(default_factory=list)
    html: Path | None = None

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def dashboard_command(self) -> str:
        """The one command that opens the dashboard on this demo's ledger."""
        pub = self.out_dir / "keys" / "demo-ledger.pub"
        key = f" --public-key {pub}" if pub.exists() else ""
        return f"trainguard dashboard --ledger {self.ledger_url}{key}"


_TITLES = (
    "guarded pre-training of a tiny GPT, recorded in the ledger",
    "an insider hides a payload in the shared copy of the checkpoint",
    "colleagues' jobs load the shared copy the old way (before trainguard)",
    "trainguard scan flags the poisoned checkpoint",
    "safe_load refuses the poisoned file, accepts and converts the clean one",
    "blast radius of the poisoned checkpoint, from the signed and verified ledger",
    "drills: the incident's in-job sabotage on 2-rank jobs under the sentinel",
    "write the HTML report",
)


class _Demo:
    def __init__(self, out: Path, progress: StepProgress | None, drills: Sequence[str]) -> None:
        self.out = out
        self.progress = progress
        self.drill_names = tuple(drills)
        self.result = DemoResult(out, ledger_url=f"sqlite:///{out / 'ledger.db'}")
        self.ckpts = out / "checkpoints"
        self.shared = out / "shared"
        self.marker = out / "PAYLOAD-RAN"
        self.clean = self.ckpts / "pretrain-step40.pt"
        self.poisoned = self.shared / "base-model.pt"
        self.key: Any = None

    def step(self, i: int, ok: bool, detail: str) -> None:
        self.result.steps.append(StepResult(_TITLES[i], ok, detail))

    def announce(self, i: int) -> None:
        if self.progress is not None:
            self.progress(i, len(_TITLES), _TITLES[i])

    # -- the steps ---------------------------------------------------------------------
    def pretrain(self) -> None:
        from trainguard.demo._jobs import run_pretrain
        from trainguard.ledger import digest_file

        run_pretrain(self.result.ledger_url, self.clean, steps=40, run_id="pretrain-1", user="ana")
        digest, _ = digest_file(self.clean)
        self.step(
            0, self.clean.exists(), f"run pretrain-1 wrote {self.clean.name} ({digest[:19]}...)"
        )

    def poison(self) -> None:
        from trainguard.drill import write_poisoned_checkpoint
        from trainguard.scan.load import read_verified, safe_load

        self.marker.unlink(missing_ok=True)
        state = safe_load(read_verified(self.clean))
        self.shared.mkdir(parents=True, exist_ok=True)
        write_poisoned_checkpoint(state, self.poisoned, marker=self.marker)
        self.step(
            1,
            not self.marker.exists(),
            f"wrote {self.poisoned} (same weights, plus a pickle payload); nothing ran while "
            "writing it",
        )

    def colleagues(self) -> None:
        from trainguard.demo._jobs import ColleagueJob, run_colleague

        derived = self.out / "derived"
        jobs = [
            ColleagueJob("ft-chat-1", "bo", self.poisoned, derived / "ft-chat-1.pt"),
            ColleagueJob("ft-clean-1", "ana", self.clean, derived / "ft-clean-1.pt"),
            ColleagueJob("ft-code-1", "cy", self.poisoned, derived / "ft-code-1.pt"),
            ColleagueJob("ft-chat-2", "bo", derived / "ft-chat-1.pt", derived / "ft-chat-2.pt"),
        ]
        fired = []
        for job in jobs:
            self.marker.unlink(missing_ok=True)
            run_colleague(self.result.ledger_url, job)
            if self.marker.exists():
                fired.append(job.run_id)
        self.marker.unlink(missing_ok=True)
        expected = ["ft-chat-1", "ft-code-1"]
        self.step(
            2,
            fired == expected,
            f"the payload ran in {', '.join(fired) or 'no job'} (a harmless marker file); "
            f"{len(jobs)} fine-tunes wrote derived checkpoints, all recorded by digest",
        )

    def scan(self) -> None:
        from trainguard.scan import scan_paths

        report = scan_paths([self.ckpts, self.shared])
        self.result.reports["scan"] = report
        (self.out / "scan-report.json").write_text(render(report, "json"), encoding="utf-8")
        (self.out / "scan-report.sarif").write_text(render(report, "sarif"), encoding="utf-8")
        flagged = {f.subject.split("::", 1)[0] for f in report.at_least(Severity.HIGH)}
        caught = str(self.poisoned) in flagged and str(self.clean) not in flagged
        worst = next((f for f in report.sorted_findings() if str(self.poisoned) in f.subject), None)
        self.step(
            3,
            caught,
            f"{self.poisoned.name}: {worst.severity.label} {worst.rule}: {worst.message}"
            if worst
            else "the poisoned file was NOT flagged",
        )

    def safe_load(self) -> None:
        from trainguard.scan import scan_paths
        from trainguard.scan.convert import convert_to_safetensors
        from trainguard.scan.load import read_verified, safe_load

        try:
            safe_load(read_verified(self.poisoned))
            refused, why = False, "it loaded: the safe loader failed to refuse"
        except UnsafeArtifactError as exc:
            refused, why = True, exc.message
        target = self.clean.with_suffix(".safetensors")
        target.unlink(missing_ok=True)
        conversion = convert_to_safetensors(self.clean, target)
        converted = scan_paths([target]).exit_code(Severity.MEDIUM) == 0
        self.step(
            4,
            refused and converted and not self.marker.exists(),
            f"refused: {why}; wrote {target.name} ({conversion.tensors} tensors), which scans clean",
        )

    def blast(self) -> None:
        from trainguard.ledger import (
            Indicator,
            Ledger,
            PriceTable,
            SigningKey,
            blast_radius,
            digest_file,
            verify_ledger,
        )
        from trainguard.ledger._blast_types import DEFAULT_PRICES
        from trainguard.ledger._html import render_blast_html

        ledger = Ledger.open(self.result.ledger_url)
        try:
            signed = self._sign(ledger, SigningKey)
            verified = verify_ledger(ledger, trusted_keys=[self.key.public_key] if signed else [])
            digest, _ = digest_file(self.poisoned)
            prices = PriceTable(
                {**DEFAULT_PRICES, "cpu": CPU_PRICE},
                source=f"built-in illustrative defaults; cpu at {CPU_PRICE}/process-hour",
            )
            radius = blast_radius(ledger, Indicator(artifacts=(digest,)), prices=prices)
        finally:
            ledger.close()
        data = radius.to_json()
        self.result.blast = data
        (self.out / "blast-radius.json").write_text(_json(data), encoding="utf-8")
        (self.out / "blast-radius.html").write_text(render_blast_html(data), encoding="utf-8")
        affected = sorted(r.facts.run_id for r in radius.affected_runs)
        clean = sorted(c.facts.run_id for c in radius.clean_runs)
        t = data["totals"]
        # Two runs are clean: the pre-training run and the fine-tune from the clean original.
        ok = affected == ["ft-chat-1", "ft-chat-2", "ft-code-1"] and t["clean_runs"] == 2
        self.step(
            5,
            ok,
            f"ledger of {verified.size} entries verified"
            + (" against its signed head" if signed else " (unsigned: no cryptography)")
            + f"; affected runs {', '.join(affected)}; derived checkpoints "
            f"{sum(1 for a in radius.affected_artifacts if a.depth > 0)}; "
            f"{t['affected_gpu_hours']} accelerator-hours, "
            f"{t['affected_cost']} {prices.currency}; provably clean: {t['clean_runs']} runs"
            + (f" (in the same period: {', '.join(clean)})" if clean else ""),
        )

    def _sign(self, ledger: Any, signing_key: Any) -> bool:
        try:
            if self.key is None:
                self.key = signing_key.generate()
                keys = self.out / "keys"
                keys.mkdir(exist_ok=True)
                self.key.save(keys / "demo-ledger.key")
                (keys / "demo-ledger.pub").write_bytes(self.key.public_key.to_pem())
            ledger.sign(self.key)
        except (ImportError, TrainguardError):
            return False
        return True

    def drills(self) -> None:
        from trainguard.drill import run_drills

        def progress(index: int, total: int, name: str, result: Any) -> None:
            if self.progress is not None and result is None:
                self.progress(6, len(_TITLES), f"drill {index + 1}/{total}: {name}")

        results = run_drills(
            self.drill_names,
            workdir=self.out / "drills",
            ledger_url=self.result.ledger_url,
            progress=progress,
        )
        self.result.drills = [r.to_dict() for r in results]
        summary = ", ".join(
            f"{r.name}: {'caught by ' + '/'.join(r.checks) if r.detected else 'MISSED'}"
            + (f" in {r.steps_to_detection} steps" if r.steps_to_detection is not None else "")
            for r in results
        )
        self.step(6, all(r.ok for r in results), summary or "no drills selected")
        from trainguard.ledger import Ledger, SigningKey

        ledger = Ledger.open(self.result.ledger_url)
        try:
            self._sign(ledger, SigningKey)
        finally:
            ledger.close()

    def report(self) -> None:
        from trainguard.demo._report import render_demo_html

        path = self.out / "report.html"
        path.write_text(render_demo_html(self.result), encoding="utf-8")
        self.result.html = path
        self.step(7, path.exists(), f"wrote {path} and blast-radius.html")


def _json(data: Any) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=True)


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    progress: StepProgress | None = None,
    drills: Sequence[str] = DEMO_DRILLS,
) -> DemoResult:
    """Run every demo step, writing checkpoints, the ledger and reports under ``out_dir``.

    The folder is the demo's own: its previous contents (an earlier demo) are
    replaced, the ledger included; a non-empty folder the demo did not make is refused.

    Raises:
        UsageError: ``out_dir`` is a non-empty folder the demo did not make.
    """
    out = Path(out_dir).resolve()
    _reset(out)
    demo = _Demo(out, progress, drills)
    steps = (
        demo.pretrain,
        demo.poison,
        demo.colleagues,
        demo.scan,
        demo.safe_load,
        demo.blast,
        demo.drills,
        demo.report,
    )
    for i, run in enumerate(steps):
        demo.announce(i)
        try:
            run()
        except (TrainguardError, OSError, subprocess.SubprocessError) as exc:
            # Later steps build on this one: record what broke and stop.
            detail = getattr(exc, "stderr", None) or str(exc)
            demo.step(i, False, f"{type(exc).__name__}: {str(detail).strip()[-2000:]}")
            break
    return demo.result


#: Written into the demo's folder, so a re-run knows the folder is its own to replace.
_STAMP = ".trainguard-demo"


def _reset(out: Path) -> None:
    """Empty the demo folder of an earlier demo; refuse a folder that is not the demo's.

    Raises:
        UsageError: ``out`` exists, is not empty and was not made by the demo.
    """
    from trainguard.errors import UsageError

    if out.exists() and any(out.iterdir()):
        if not (out / _STAMP).is_file():
            raise UsageError(
                f"{out} is not empty and was not made by trainguard demo",
                subject=str(out),
                hint="pass --out with a new or empty folder",
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / _STAMP).write_text("made by trainguard demo; replaced on each run\n", encoding="utf-8")
