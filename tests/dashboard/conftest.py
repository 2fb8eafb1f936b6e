"""Dashboard fixtures: ledgers to serve, and a server on a free loopback port.

``build_demo_ledger`` fills a ledger from real guarded training runs (a tiny
model trained on CPU under ``trainguard.protect`` inside a ledger
``RunRecorder``, checkpoints saved and loaded through ``trainguard.ledger``,
an insider's weight edit and a reseed caught by the sentinel). It is the one
place to change when the browser tests move to a ``trainguard demo`` run.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from trainguard.dashboard import DashboardConfig, DashboardServer
from trainguard.ledger import Ledger, PublicKey

if TYPE_CHECKING:
    import torch

from tests.dashboard._util import HOSTILE, HOSTILE_NAME, HostileLedger, build_hostile_ledger

REPO = Path(__file__).resolve().parents[2]


@dataclass
class DemoLedger:
    """A ledger filled by real runs, and what the tests expect to find in it."""

    url: str
    root: Path
    public_key: PublicKey
    runs: dict[str, str] = field(default_factory=dict)  # role -> run id
    digests: dict[str, str] = field(default_factory=dict)  # role -> content digest
    paths: dict[str, str] = field(default_factory=dict)  # role -> file path as recorded
    #: run id -> rules of the alarms it must show
    alarm_rules: dict[str, set[str]] = field(default_factory=dict)
    #: run id -> steps of the StepMetrics records the sentinel wrote
    metric_steps: dict[str, list[int]] = field(default_factory=dict)


def _mlp() -> torch.nn.Module:
    import torch

    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))


def _train(
    steps: int,
    *,
    spool: Path,
    seed: int,
    model: torch.nn.Module | None = None,
    attack_at: dict[int, str] | None = None,
    save_at: dict[int, Path] | None = None,
) -> torch.nn.Module:
    """Train a tiny MLP for ``steps`` steps under the sentinel (which writes StepMetrics
    and alarms to the current run's ledger every ``log_every`` steps)."""
    import torch

    from trainguard.ledger import save
    from trainguard.sentinel import protect

    torch.manual_seed(seed)
    net = model if model is not None else _mlp()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    data = torch.Generator().manual_seed(seed)
    xs = torch.randn(steps, 16, 8, generator=data)
    ys = (xs.sum(dim=2) > 0).long() + (xs[:, :, 0] > 0).long()
    attacks = attack_at or {}
    with protect(
        net,
        opt,
        spool_dir=str(spool),
        console=False,
        log_every=2,
        # The scale check reads every module loaded in the process, and pytest's holds the
        # sentinel tests' rank-conditioned attack code: these runs train in the test
        # process, so that check stays off here (the demo's and drills' jobs are processes
        # of their own and run it).
        checks={"census": {"env_every": 0}, "scale": False},
    ) as sentinel:
        for step in range(steps):
            attack = attacks.get(step)
            if attack == "edit-weights":  # an insider edits the weights between steps
                with torch.no_grad():
                    next(net.parameters())[0, 0] += 1.0
            elif attack == "reseed":  # an insider reseeds the global RNG
                torch.manual_seed(1234)
            loss = torch.nn.functional.cross_entropy(net(xs[step]), ys[step])
            sentinel.observe(loss=loss)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            opt.zero_grad()
            if save_at and step in save_at:
                save(net.state_dict(), save_at[step])
    return net


def build_demo_ledger(root: Path) -> DemoLedger:
    """A ledger filled by three real guarded runs on CPU (a few seconds); the sentinel
    writes their StepMetrics and alarms, the ledger hooks their checkpoint edges.

    * ``pretrain``: 40 steps; a checkpoint at step 20 saved under a folder whose
      path spells ``<script>...``; an insider edits the weights at step 25 (the
      sentinel's weights check); the final checkpoint.
    * ``finetune``: loads the pretrain checkpoint through ``trainguard.ledger.load``
      and a file of unknown provenance named like an HTML tag (an alert);
      reseeded at step 10 (the rng check, with a stack); its own checkpoint.
    * ``baseline``: an unrelated clean run (the blast radius's complement).

    The ledger is signed at the end with a fresh key.
    """
    import torch

    from trainguard.ledger import RunRecorder, SigningKey, StepMetrics, load, save

    url = f"sqlite:///{root / 'ledger.db'}"
    ledger = Ledger.open(url, create=True)
    key = SigningKey.generate()
    demo = DemoLedger(url, root, key.public_key)
    hostile_dir = root / "<script>alert(1)<" / "script>"
    hostile_dir.mkdir(parents=True)
    mid = hostile_dir / "step-20.pt"
    final = root / "pretrain-final.pt"
    common: dict[str, Any] = {"hosts": ("trainer-0",), "accelerator_type": "cpu", "user": "ana"}

    demo.runs["pretrain"] = "pretrain-tiny"
    with RunRecorder.start(
        ledger, run_id="pretrain-tiny", command=f"python train.py --note '{HOSTILE}'", **common
    ):
        net = _train(
            40,
            spool=root / "spool-pretrain",
            seed=0,
            attack_at={25: "edit-weights"},
            save_at={19: mid},
        )
        demo.digests["final"] = save(net.state_dict(), final)
    demo.alarm_rules["pretrain-tiny"] = {"sentinel.weights-edited"}

    unknown = root / f"{HOSTILE_NAME}.pt"
    torch.save({"w": torch.ones(2)}, unknown)  # written outside any recorded run
    demo.runs["finetune"] = "finetune-tiny"
    with RunRecorder.start(ledger, run_id="finetune-tiny", command="python finetune.py", **common):
        net2 = _mlp()
        net2.load_state_dict(load(final))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unknown provenance is recorded as an alert
            load(unknown)
        net2 = _train(
            24,
            spool=root / "spool-finetune",
            seed=1,
            model=net2,
            attack_at={10: "reseed"},
        )
        demo.digests["finetuned"] = save(net2.state_dict(), root / "finetune-final.pt")
    demo.alarm_rules["finetune-tiny"] = {"ledger.unknown-provenance", "sentinel.rng-reseeded"}

    demo.runs["baseline"] = "baseline-tiny"
    with RunRecorder.start(ledger, run_id="baseline-tiny", command="python eval.py", **common):
        net3 = _train(12, spool=root / "spool-baseline", seed=2)
        save(net3.state_dict(), root / "baseline-final.pt")
    demo.alarm_rules["baseline-tiny"] = set()

    demo.paths.update(mid=str(mid), final=str(final), unknown=str(unknown))
    for entry in ledger.entries(0, ledger.size()):  # what the sentinel logged, per run
        if isinstance(entry.record, StepMetrics):
            demo.metric_steps.setdefault(entry.record.run_id, []).append(entry.record.step)
    ledger.sign(key)
    ledger.close()
    return demo


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> HostileLedger:
    """A small ledger made of records with hostile strings (fast)."""
    return build_hostile_ledger(f"sqlite:///{tmp_path_factory.mktemp('hostile') / 'ledger.db'}")


@pytest.fixture(scope="module")
def hostile_server(hostile: HostileLedger) -> Iterator[DashboardServer]:
    """The dashboard over the hostile ledger on loopback, its first verification done."""
    server = DashboardServer(
        DashboardConfig(
            ledger=hostile.url, port=0, trusted_keys=(hostile.public_key,), verify_jobs=1
        )
    )
    server.start()
    assert server.app.verifier.wait(60), "the initial verification did not finish"
    yield server
    server.stop()


@pytest.fixture(scope="session")
def demo_ledger(tmp_path_factory: pytest.TempPathFactory) -> DemoLedger:
    return build_demo_ledger(tmp_path_factory.mktemp("demo-ledger"))


@pytest.fixture(scope="session")
def demo_server(demo_ledger: DemoLedger) -> Iterator[DashboardServer]:
    """The dashboard over the demo ledger on a free loopback port, its verification done."""
    server = DashboardServer(
        DashboardConfig(
            ledger=demo_ledger.url, port=0, trusted_keys=(demo_ledger.public_key,), verify_jobs=1
        )
    )
    server.start()
    assert server.app.verifier.wait(60), "the initial verification did not finish"
    yield server
    server.stop()


def artifacts_dir() -> Path:
    """Where browser tests leave screenshots: ``$TRAINGUARD_TEST_ARTIFACTS`` or tests/artifacts."""
    base = os.environ.get("TRAINGUARD_TEST_ARTIFACTS")
    root = Path(base) if base else REPO / "tests" / "artifacts"
    out = root / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not base and not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")  # test output, never committed
    return out
