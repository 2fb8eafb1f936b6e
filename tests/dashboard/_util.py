"""Helpers for dashboard tests: a hostile ledger made in code, a server, a raw HTTP client."""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser

from trainguard.dashboard import DashboardConfig, DashboardServer
from trainguard.ledger import (
    Alert,
    Edge,
    Ledger,
    PublicKey,
    Run,
    RunEnd,
    SigningKey,
    StepMetrics,
)

#: A string that runs script if any page ever puts it into HTML unescaped.
HOSTILE = "<script>alert(1)</script>"
#: The same idea for places that cannot hold a "/" (file names).
HOSTILE_NAME = "<img src=x onerror=alert(1)>"
T0 = 1_714_000_000
HOUR = 3600


def digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


@dataclass(frozen=True)
class HostileLedger:
    """A small ledger made of records, with hostile strings wherever the records allow them."""

    url: str
    public_key: PublicKey
    ckpt_a: str
    ckpt_b: str
    ckpt_path: str


def build_hostile_ledger(url: str) -> HostileLedger:
    """Three runs: ``train-a`` (2 ranks, metrics, two alarms, a NaN loss, fails) produced
    ``ckpt_a``; ``train-b`` (8 H100 for 2 h) fine-tuned it into ``ckpt_b``; ``eval-c`` is
    unrelated and clean. Signed at the end."""
    ckpt_a, ckpt_b = digest("a.pt"), digest("b.pt")
    ckpt_path = f"/shared/ckpt/{HOSTILE}/{HOSTILE_NAME}.pt"
    metrics = [
        StepMetrics.of(
            "train-a",
            step,
            rank,
            T0 + step,
            {
                "loss": float("nan") if step == 18 else 4.0 - 0.1 * step,
                "grad_norm": 1.0 + 0.5 * rank,
                "step_time": 0.2 + (0.3 if rank == 1 else 0.0),
            },
        )
        for step in range(0, 20, 2)
        for rank in (0, 1)
    ]
    records = [
        Run(
            "train-a",
            user="ana",
            hosts=("gpu-001", "gpu-002"),
            world_size=2,
            accelerator_type="H100",
            accelerator_count=2,
            started_at=T0,
            command=f"torchrun train.py --name '{HOSTILE}'",
        ),
        *metrics,
        Alert(
            "train-a",
            "sentinel.weights-edited",
            "critical",
            f"1 parameter tensor(s) changed outside optimizer.step(): {HOSTILE}",
            T0 + 7,
            step=7,
            evidence={
                "rank": 1,
                "host": "gpu-002",
                "check": "weights",
                "reporter": 1,
                "tensors": [HOSTILE],
                "stack": ['File "/opt/evil/hook.py", line 3, in <module>', HOSTILE],
            },
        ),
        # Rank 0's relayed copy of rank 1's detection (the page folds it into #1).
        Alert(
            "train-a",
            "sentinel.weights-edited",
            "critical",
            "weights edited outside optimizer.step() (detected on rank 1; evidence in its spool)",
            T0 + 7,
            step=7,
            evidence={"rank": 1, "host": "gpu-002", "check": "weights", "reporter": 0, "slot": 2},
        ),
        Alert(
            "train-a",
            "ledger.unknown-provenance",
            "medium",
            f"loaded {ckpt_path}, which no recorded run produced",
            T0 + 1,
            evidence={"digest": digest("unknown.pt")},
        ),
        Edge("train-a", "produced", ckpt_a, "checkpoint", T0 + 20, size=2048, name=ckpt_path),
        RunEnd("train-a", T0 + HOUR, "failed", 1),
        Run(
            "train-b",
            user="bob",
            hosts=("gpu-003",),
            world_size=8,
            accelerator_type="H100",
            accelerator_count=8,
            started_at=T0 + 2 * HOUR,
            ended_at=T0 + 4 * HOUR,
        ),
        Edge("train-b", "used", ckpt_a, "checkpoint", T0 + 2 * HOUR, name=ckpt_path),
        Edge("train-b", "produced", ckpt_b, "checkpoint", T0 + 3 * HOUR, name="/shared/b.pt"),
        Run(
            "eval-c",
            user="cai",
            hosts=("gpu-004",),
            world_size=1,
            accelerator_type="A100",
            accelerator_count=1,
            started_at=T0 + 2 * HOUR,
            ended_at=T0 + 3 * HOUR,
        ),
    ]
    key = SigningKey.generate()
    with Ledger.open(url, create=True) as ledger:
        ledger.append(records)
        ledger.sign(key)
    return HostileLedger(url, key.public_key, ckpt_a, ckpt_b, ckpt_path)


@contextmanager
def serving(config: DashboardConfig) -> Iterator[DashboardServer]:
    """A dashboard on a free loopback port for the duration of the block."""
    server = DashboardServer(config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def fetch(
    server: DashboardServer,
    path: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    host: str | None = None,
) -> Reply:
    """One request, no redirects followed; ``host`` replaces the Host header."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host if host is not None else f"127.0.0.1:{server.port}")
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


#: Elements a browser lays out as blocks or cells: their edges separate words.
_BLOCKS = frozenset(
    {"p", "div", "section", "article", "header", "main", "nav", "h1", "h2", "h3", "dl", "dt"}
    | {"dd", "table", "tr", "td", "th", "ul", "ol", "li", "pre", "br"}
)


class Markup(HTMLParser):
    """What a browser would see as markup in a page: elements, attributes, script bodies."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text: list[str] = []
        self.text: list[str] = []
        self._in_script = False
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if tag in _BLOCKS:
            self.text.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False
        if tag in _BLOCKS:
            self.text.append("\n")

    def handle_data(self, data: str) -> None:
        (self.script_text if self._in_script else self.text).append(data)

    @property
    def visible(self) -> str:
        """The page's text, entities decoded (what a person reads)."""
        return " ".join("".join(self.text).split())
