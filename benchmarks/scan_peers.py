"""trainguard against picklescan, modelscan, fickling and modelaudit, on one corpus, in one run.

Measures, per tool:

- detection rate on the malicious corpus (tests/corpus; "live" = samples a real
  loader executes) and false-positive rate on the benign corpus;
- median seconds per file, one process per file (interpreter start included);
- seconds and MB/s on large checkpoints (~500 MB and ~200 MB state dicts,
  generated once into benchmarks/results/cache and reused);
- seconds for one invocation over a directory of many small checkpoints;

and prints speed ratios against picklescan (> 1: faster than picklescan).
Peers run from .venv-peers (``make bench-venv``); one that is not installed is
reported as such, never given a number. Every invocation has a timeout.

Usage::

    python benchmarks/scan_peers.py [--json] [--tools trainguard,picklescan] [--limit N] [--skip-large]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from tests.corpus.generate import build_corpus  # noqa: E402

from _peers import CLEAN, FLAGGED, TIMEOUT, Tool, tools  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
CACHE = RESULTS / "cache"
LARGE_MB = (500, 200)
TENSOR_MB = 4  # one 1024x1024 float32 tensor


def large_checkpoint(mb: int) -> Path:
    """A ~``mb`` MB torch state dict of 4 MB float32 tensors, made once and cached."""
    import torch

    path = CACHE / f"state-{mb}mb.pt"
    if path.exists() and path.stat().st_size >= mb * 1_000_000 * 0.95:
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(mb)
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    state = {
        f"model.layers.{i // len(names)}.{names[i % len(names)]}.weight": torch.randn(
            1024, 1024, generator=gen
        )
        for i in range(mb // TENSOR_MB)
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # a half-written file is never reused
    return path


def many_checkpoints(count: int) -> Path:
    """``count`` small real checkpoints in one folder, made once and cached."""
    import torch

    folder = CACHE / f"many-{count}"
    stamp = folder / ".complete"
    if stamp.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        gen = torch.Generator().manual_seed(i)
        state = {f"block.{j}.weight": torch.randn(64, 64, generator=gen) for j in range(8)}
        state["step"] = torch.tensor(i)
        torch.save(state, folder / f"ckpt-{i:04d}.pt")
    stamp.touch()
    return folder


def _rate(hits: int, total: int) -> str:
    return f"{hits}/{total} ({100 * hits / total:.0f}%)" if total else "-"


def _ratio(base: float | None, value: float | None) -> str:
    return f"{base / value:.2f}x" if base and value else "-"


def evaluate(
    tool: Tool,
    samples: list[Any],
    large: list[Path],
    many: Path | None,
    args: argparse.Namespace,
    cwd: Path,
) -> dict[str, Any]:
    result: dict[str, Any] = {"tool": tool.name, "note": tool.note}
    reason = tool.missing()
    if reason is not None:
        result["not_installed"] = reason
        return result
    result["version"] = tool.version()
    print(f"[{tool.name} {result['version']}] {len(samples)} corpus files...", file=sys.stderr)
    runs = {}
    for sample in samples:
        run = tool.run(sample.path, timeout=args.timeout, cwd=cwd)
        runs[sample.id] = {
            "kind": sample.kind,
            "live": sample.loader is not None,
            "verdict": run.verdict,
            "seconds": round(run.seconds, 4),
            "returncode": run.returncode,
        }
    result["samples"] = runs
    mal = [r for r in runs.values() if r["kind"] == "malicious"]
    ben = [r for r in runs.values() if r["kind"] == "benign"]
    live = [r for r in mal if r["live"]]
    result["detected"] = sum(r["verdict"] == FLAGGED for r in mal)
    result["detected_live"] = sum(r["verdict"] == FLAGGED for r in live)
    result["false_positives"] = sum(r["verdict"] == FLAGGED for r in ben)
    result["errors"] = sum(r["verdict"] not in (FLAGGED, CLEAN) for r in runs.values())
    result["missed"] = sorted(
        i for i, r in runs.items() if r["kind"] == "malicious" and r["verdict"] != FLAGGED
    )
    result["flagged_benign"] = sorted(
        i for i, r in runs.items() if r["kind"] == "benign" and r["verdict"] == FLAGGED
    )
    result["counts"] = {"malicious": len(mal), "live": len(live), "benign": len(ben)}
    result["median_s_per_file"] = (
        statistics.median(r["seconds"] for r in runs.values()) if runs else None
    )
    result["large"] = {}
    for path in large:
        print(f"[{tool.name}] {path.name}...", file=sys.stderr)
        run = tool.run(path, timeout=args.large_timeout, cwd=cwd)
        mb = path.stat().st_size / 1e6
        ok = run.verdict != TIMEOUT
        result["large"][path.name] = {
            "mb": round(mb, 1),
            "seconds": round(run.seconds, 3) if ok else None,
            "mb_per_s": round(mb / run.seconds, 1) if ok else None,
            "verdict": run.verdict,
        }
    if many is not None:
        files = sum(1 for p in many.iterdir() if p.suffix == ".pt")
        print(f"[{tool.name}] directory of {files} files...", file=sys.stderr)
        run = tool.run(many, timeout=args.large_timeout, cwd=cwd)
        ok = run.verdict != TIMEOUT
        result["many"] = {
            "files": files,
            "seconds": round(run.seconds, 3) if ok else None,
            "files_per_s": round(files / run.seconds, 1) if ok else None,
            "verdict": run.verdict,
        }
    return result


def table(results: list[dict[str, Any]]) -> str:
    base = next((r for r in results if r["tool"] == "picklescan" and "samples" in r), None)
    large_names = sorted({name for r in results for name in r.get("large", {})}, reverse=True)
    head = ["tool", "version", "detected", "live", "false pos.", "errors", "s/file", "vs ps"]
    for name in large_names:
        head += [f"{name} s", "MB/s", "vs ps"]
    head += ["dir s", "files/s", "vs ps"]
    rows = [head]
    for r in results:
        if "not_installed" in r:
            rows.append([r["tool"], f"not installed: {r['not_installed']}"])
            continue
        c = r["counts"]
        row = [
            r["tool"],
            r["version"],
            _rate(r["detected"], c["malicious"]),
            _rate(r["detected_live"], c["live"]),
            _rate(r["false_positives"], c["benign"]),
            str(r["errors"]),
            f"{r['median_s_per_file']:.2f}" if r["median_s_per_file"] is not None else "-",
            _ratio(base and base["median_s_per_file"], r["median_s_per_file"]),
        ]
        for name in large_names:
            lg = r.get("large", {}).get(name, {})
            base_s = base and base.get("large", {}).get(name, {}).get("seconds")
            row += [
                f"{lg['seconds']:.2f}" if lg.get("seconds") else lg.get("verdict", "-"),
                f"{lg['mb_per_s']:.0f}" if lg.get("mb_per_s") else "-",
                _ratio(base_s, lg.get("seconds")),
            ]
        many = r.get("many", {})
        base_many = base and base.get("many", {}).get("seconds")
        row += [
            f"{many['seconds']:.2f}" if many.get("seconds") else many.get("verdict", "-"),
            f"{many['files_per_s']:.0f}" if many.get("files_per_s") else "-",
            _ratio(base_many, many.get("seconds")),
        ]
        rows.append(row)
    widths = [
        max(len(row[i]) for row in rows if i < len(row) and len(row) > 2) for i in range(len(head))
    ]
    lines = []
    for row in rows:
        if len(row) == 2:
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]}")
        else:
            lines.append(
                "  ".join(
                    cell.rjust(w) if i else cell.ljust(w)
                    for i, (cell, w) in enumerate(zip(row, widths, strict=True))
                )
            )
    return "\n".join(lines)


def details(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        if "samples" not in r:
            continue
        if r["missed"]:
            lines.append(f"{r['tool']} missed: {', '.join(r['missed'])}")
        if r["flagged_benign"]:
            lines.append(f"{r['tool']} flagged benign: {', '.join(r['flagged_benign'])}")
        if r["note"]:
            lines.append(f"{r['tool']}: {r['note']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--json", action="store_true", help="print the full results as JSON on stdout"
    )
    parser.add_argument("--tools", help="comma-separated subset (default: all)")
    parser.add_argument(
        "--timeout", type=float, default=120, help="seconds per corpus file and tool"
    )
    parser.add_argument(
        "--large-timeout", type=float, default=600, help="seconds per large run and tool"
    )
    parser.add_argument(
        "--limit", type=int, help="only the first N malicious and N benign samples (smoke runs)"
    )
    parser.add_argument(
        "--many", type=int, default=200, help="files in the many-file directory (0: skip)"
    )
    parser.add_argument("--skip-large", action="store_true", help="skip the large checkpoints")
    args = parser.parse_args(argv)

    # Measure trainguard as installed, with bytecode: an editable install (or a shell with
    # PYTHONDONTWRITEBYTECODE) would otherwise compile it at every start.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src")], check=False)
    selected = tools()
    if args.tools:
        wanted = set(args.tools.split(","))
        selected = [t for t in selected if t.name in wanted]
    with tempfile.TemporaryDirectory(prefix="tg-bench-") as tmp:
        root = Path(tmp)
        print("building corpus...", file=sys.stderr)
        corpus = build_corpus(root / "corpus", root / "markers")
        mal, ben = corpus.malicious, corpus.benign
        if args.limit:
            mal, ben = mal[: args.limit], ben[: args.limit]
        large = [] if args.skip_large else [large_checkpoint(mb) for mb in LARGE_MB]
        many = many_checkpoints(args.many) if args.many else None
        cwd = root / "cwd"
        cwd.mkdir()
        started = time.perf_counter()
        results = [evaluate(tool, [*mal, *ben], large, many, args, cwd) for tool in selected]
        payloads_ran = sorted(p.name for p in (root / "markers").iterdir())
    doc = {
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
        "python": sys.version.split()[0],
        "payloads_ran": payloads_ran,  # must stay empty: scanners never execute samples
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scan_peers.json").write_text(json.dumps(doc, indent=2))
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    print(table(results), file=sys.stderr if args.json else sys.stdout)
    print(details(results), file=sys.stderr if args.json else sys.stdout)
    if payloads_ran:
        print(f"WARNING: payloads ran during the benchmark: {payloads_ran}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
