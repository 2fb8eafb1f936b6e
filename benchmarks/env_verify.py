"""env verify against the hashing limit and against AIDE, on one environment, in one run.

Measures, on the same machine in the same run:

- the two-thread SHA-256 limit: a minimal reference hasher (two threads, one
  shared work list biggest first, mmap for big files) over every file of the
  environment ("straight SHA-256 of everything"), and over the narrower set
  ``env verify`` actually hashes (it only stats installer-written ``.pyc``);
- ``env verify`` in full (RECORDs, wheels found through pip's find-links,
  walk, bytecode headers, .pth, start-up hooks), two hashing threads;
- ``env verify --baseline`` (the stat-only re-check) against a fresh baseline;
- AIDE ``--check`` over the same site-packages folder, and over the torch
  folder alone (SHA-256 only, the AIDE equivalent of what trainguard checks),
  when ``aide`` is installed;

and prints the ratios the project targets: full verify within 1.3x of the
limit, re-check under 0.3 s, and at least 5x faster than AIDE. Every timing is
the median of ``--repeat`` warm runs (a first untimed pass warms the page cache).

Usage::

    python benchmarks/env_verify.py [--python PATH] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from trainguard.env import EnvConfig, describe_interpreter, verify_environment  # noqa: E402
from trainguard.env._verify import collect  # noqa: E402
from trainguard.env.baseline import Baseline  # noqa: E402

THREADS = 2
BIG = 1 << 20


def reference_hash(files: list[tuple[int, str]]) -> None:
    """The limit: SHA-256 of every file with two threads and nothing else."""
    lock = threading.Lock()
    todo = iter(files)

    def worker() -> None:
        buf = bytearray(BIG)
        while True:
            with lock:
                item = next(todo, None)
            if item is None:
                return
            size, path = item
            fd = os.open(path, os.O_RDONLY)
            try:
                if size < BIG:
                    n = os.readv(fd, [buf])
                    hashlib.sha256(memoryview(buf)[:n]).digest()
                elif size:
                    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:
                        hashlib.sha256(mm).digest()
            finally:
                os.close(fd)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def aide_check(tree: str, workdir: Path, repeat: int) -> list[float] | None:
    """Median-able timings of ``aide --check`` over ``tree`` (SHA-256 + stat facts)."""
    aide = shutil.which("aide")
    if aide is None:
        return None
    db = workdir / f"aide-{abs(hash(tree))}.db"
    conf = workdir / f"aide-{abs(hash(tree))}.conf"
    conf.write_text(
        f"database_in=file:{db}\n"
        f"database_out=file:{db}.new\n"
        "gzip_dbout=no\n"
        "report_url=stdout\n"
        "TG = p+i+n+u+g+s+m+c+sha256\n"
        f"{tree} TG\n"
    )
    init = subprocess.run([aide, f"--config={conf}", "--init"], capture_output=True, check=False)
    if init.returncode not in (0,) or not Path(f"{db}.new").exists():
        print(f"AIDE --init failed: {init.stderr.decode(errors='replace')[-300:]}", file=sys.stderr)
        return None
    os.replace(f"{db}.new", db)

    def run() -> None:
        subprocess.run([aide, f"--config={conf}", "--check"], capture_output=True, check=False)

    return timed(run, repeat)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", help="environment to verify (default: this interpreter's)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--no-aide", action="store_true")
    args = parser.parse_args()

    interp = describe_interpreter(args.python)
    config = EnvConfig(python=args.python, workers=THREADS)
    # Two file sets: every file of the environment's site-packages (what a
    # straight SHA-256 of everything reads), and the files env verify hashes.
    state, _ = collect(interp, config)
    everything = sorted(
        ((f.size, p) for p, f in state.facts.items() if f.error is None), reverse=True
    )
    hashed = [(s, p) for s, p in everything if state.facts[p].sha256 is not None]
    total = sum(s for s, _ in everything)
    print(
        f"environment: {interp.prefix} ({len(everything)} files, {total / 1e6:.0f} MB; "
        f"{len(hashed)} hashed by env verify; {os.cpu_count()} CPUs, {THREADS} hashing threads)",
        file=sys.stderr,
    )

    reference_hash(everything)  # warm the page cache
    verify_environment(config)
    limit: list[float] = []
    narrow: list[float] = []
    full: list[float] = []
    cpu: list[float] = []
    for _ in range(args.repeat):  # interleaved, so bursts of load hit all three alike
        limit += timed(lambda: reference_hash(everything), 1)
        narrow += timed(lambda: reference_hash(hashed), 1)
        started = time.process_time()
        full += timed(lambda: verify_environment(config), 1)
        cpu.append(time.process_time() - started)

    results: dict[str, Any] = {
        "files": len(everything),
        "mb": round(total / 1e6, 1),
        "hashed_files": len(hashed),
        "limit_s": round(statistics.median(limit), 3),
        "limit_hashed_set_s": round(statistics.median(narrow), 3),
        "verify_s": round(statistics.median(full), 3),
        "verify_cpu_s": round(statistics.median(cpu), 3),
    }
    results["verify_over_limit"] = round(results["verify_s"] / results["limit_s"], 3)
    results["verify_over_limit_hashed_set"] = round(
        results["verify_s"] / results["limit_hashed_set_s"], 3
    )

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from trainguard.env import snapshot_environment

        baseline, _ = snapshot_environment(config)
        path = work / "baseline.json"
        baseline.save(path)
        recheck_config = EnvConfig(python=args.python, baseline=str(path), workers=THREADS)
        report = verify_environment(recheck_config)
        assert report.stats["rehashed"] == 0, report.stats
        started = time.process_time()
        recheck = timed(lambda: verify_environment(recheck_config), args.repeat * 2)
        results["recheck_s"] = round(statistics.median(recheck), 3)
        results["recheck_cpu_s"] = round((time.process_time() - started) / (args.repeat * 2), 3)
        results["baseline_files"] = Baseline.load(path).file_count

        if args.no_aide or shutil.which("aide") is None:
            results["aide"] = "not installed"
        else:
            site = interp.site_packages[0]
            torch_dir = os.path.join(site, "torch")
            whole = aide_check(site, work, max(1, args.repeat // 2))
            torch_only = (
                aide_check(torch_dir, work, max(1, args.repeat // 2))
                if os.path.isdir(torch_dir)
                else None
            )
            if whole is not None:
                results["aide_site_s"] = round(statistics.median(whole), 3)
                results["aide_over_verify"] = round(results["aide_site_s"] / results["verify_s"], 2)
                results["aide_over_recheck"] = round(
                    results["aide_site_s"] / results["recheck_s"], 1
                )
            if torch_only is not None:
                results["aide_torch_only_s"] = round(statistics.median(torch_only), 3)
                results["aide_torch_only_over_verify"] = round(
                    results["aide_torch_only_s"] / results["verify_s"], 2
                )

    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"two-thread SHA-256 limit : {results['limit_s']:.3f} s (every file: {results['files']}, "
        f"{results['mb']} MB)"
    )
    print(
        f"  same, hashed set only  : {results['limit_hashed_set_s']:.3f} s "
        f"({results['hashed_files']} files env verify hashes)"
    )
    print(
        f"env verify (full)        : {results['verify_s']:.3f} s  "
        f"= {results['verify_over_limit']:.2f}x the limit (target <= 1.3x), "
        f"{results['verify_over_limit_hashed_set']:.2f}x the hashed-set limit; "
        f"{results['verify_cpu_s']:.2f} s CPU"
    )
    print(
        f"env verify --baseline    : {results['recheck_s']:.3f} s  (target < 0.3 s); "
        f"{results['recheck_cpu_s']:.2f} s CPU"
    )
    if "aide_site_s" in results:
        print(
            f"AIDE --check, same tree  : {results['aide_site_s']:.3f} s  "
            f"= {results['aide_over_verify']:.1f}x env verify, "
            f"{results['aide_over_recheck']:.0f}x the re-check (target >= 5x)"
        )
        if "aide_torch_only_s" in results:
            print(
                f"AIDE --check, torch only : {results['aide_torch_only_s']:.3f} s  "
                f"= {results['aide_torch_only_over_verify']:.1f}x env verify of the whole environment"
            )
    else:
        print("AIDE: not installed")
    print(f"load average during the run: {results['load_average']} (timings are wall clock)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
