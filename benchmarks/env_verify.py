"""env verify against the hashing limit and against AIDE, on one environment, in one run.

Measures, on the same machine in the same run:

- the two-thread SHA-256 limit: a minimal reference hasher (two threads, one
  shared work list biggest first, mmap for big files) over every file of the
  environment ("straight SHA-256 of everything"), and over the narrower set
  ``env verify`` actually hashes (it only stats installer-written ``.pyc``);
- ``env verify`` in full (RECORDs, wheels found through pip's find-links,
  walk, bytecode headers, .pth, start-up hooks), two hashing threads;
- ``env verify --baseline`` (the stat-only re-check) against a fresh baseline,
  in-process and as the command a job prolog runs (``trainguard env verify
  --baseline FILE --quiet``: interpreter start, imports, describing the target
  interpreter, loading the baseline, the re-check), wall clock and CPU seconds;
- AIDE ``--check`` over the same site-packages folder, and over the torch
  folder alone (SHA-256 only, the AIDE equivalent of what trainguard checks),
  when ``aide`` is installed;

and prints the ratios the project targets: full verify within 1.3x of the
limit, re-check under 0.3 s, and at least 5x faster than AIDE. Every timing is
the median of ``--repeat`` warm runs (a first untimed pass warms the page cache).

The issue's environment is torch + numpy + transformers and their dependencies,
nothing else: ``make bench-env`` builds it (``.venv-bench-env``, from
``benchmarks/env-bench-requirements.txt``) and passes it with ``--python``.
Without ``--python`` the benchmark measures the interpreter running it.

Usage::

    python benchmarks/env_verify.py [--python PATH] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import mmap
import os
import resource
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


def cli_recheck(python: str | None, baseline: Path, repeat: int) -> tuple[list[float], float]:
    """Wall-clock timings of the prolog's command, and its mean CPU seconds per run.

    CPU is user + system time of the command and its children (describing
    another interpreter starts it once), from ``getrusage``.
    """
    # What the console script runs; the source tree on sys.path without PYTHONPATH,
    # which the re-check itself would report as a load-changing variable.
    code = (
        f"import sys; sys.path.insert(0, {str(REPO / 'src')!r}); "
        "from trainguard.cli.main import main; sys.exit(main())"
    )
    argv = [sys.executable, "-c", code, "env", "verify", "--baseline", str(baseline), "--quiet"]
    if python:
        argv += ["--python", python]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_PRELOAD")}

    def run() -> None:
        proc = subprocess.run(argv, env=env, capture_output=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(
                f"env verify --baseline exited {proc.returncode}: "
                f"{proc.stderr.decode(errors='replace')[-500:]}"
            )

    run()  # warm
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    walls = timed(run, repeat)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / repeat
    return walls, cpu


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

    load_at_start = [round(x, 2) for x in os.getloadavg()]
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
    limit_cpu: list[float] = []
    narrow: list[float] = []
    full: list[float] = []
    cpu: list[float] = []
    for _ in range(args.repeat):  # interleaved, so bursts of load hit all three alike
        started = time.process_time()
        limit += timed(lambda: reference_hash(everything), 1)
        limit_cpu.append(time.process_time() - started)
        narrow += timed(lambda: reference_hash(hashed), 1)
        started = time.process_time()
        full += timed(lambda: verify_environment(config), 1)
        cpu.append(time.process_time() - started)

    results: dict[str, Any] = {
        "environment": interp.prefix,
        "files": len(everything),
        "mb": round(total / 1e6, 1),
        "hashed_files": len(hashed),
        "limit_s": round(statistics.median(limit), 3),
        "limit_cpu_s": round(statistics.median(limit_cpu), 3),
        "limit_hashed_set_s": round(statistics.median(narrow), 3),
        "verify_s": round(statistics.median(full), 3),
        "verify_cpu_s": round(statistics.median(cpu), 3),
    }
    results["verify_over_limit"] = round(results["verify_s"] / results["limit_s"], 3)
    # CPU seconds, all threads: on a shared machine the wall-clock ratio moves with the
    # load (verify has phases that use one core), the CPU ratio much less.
    results["verify_cpu_over_limit_cpu"] = round(
        results["verify_cpu_s"] / results["limit_cpu_s"], 3
    )
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
        # The command loads trainguard's own modules: compile them as `make venv`
        # does, or under PYTHONDONTWRITEBYTECODE every run would compile them again.
        compileall.compile_dir(str(REPO / "src" / "trainguard"), quiet=1)
        walls, cli_cpu = cli_recheck(args.python, path, args.repeat * 2)
        results["recheck_cli_s"] = round(statistics.median(walls), 3)
        results["recheck_cli_cpu_s"] = round(cli_cpu, 3)

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
    results["load_average_at_start"] = load_at_start
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"environment              : {results['environment']} "
        f"({results['files']} files, {results['mb']} MB)"
    )
    print(
        f"two-thread SHA-256 limit : {results['limit_s']:.3f} s (every file: {results['files']}, "
        f"{results['mb']} MB); {results['limit_cpu_s']:.2f} s CPU"
    )
    print(
        f"  same, hashed set only  : {results['limit_hashed_set_s']:.3f} s "
        f"({results['hashed_files']} files env verify hashes)"
    )
    print(
        f"env verify (full)        : {results['verify_s']:.3f} s  "
        f"= {results['verify_over_limit']:.2f}x the limit (target <= 1.3x), "
        f"{results['verify_over_limit_hashed_set']:.2f}x the hashed-set limit; "
        f"{results['verify_cpu_s']:.2f} s CPU = {results['verify_cpu_over_limit_cpu']:.2f}x "
        "the limit's"
    )
    print(
        f"env verify --baseline    : {results['recheck_s']:.3f} s  (target < 0.3 s); "
        f"{results['recheck_cpu_s']:.2f} s CPU (in-process, {results['baseline_files']} files)"
    )
    print(
        f"  the command, end to end: {results['recheck_cli_s']:.3f} s  (target < 0.3 s); "
        f"{results['recheck_cli_cpu_s']:.2f} s CPU (interpreter start, imports, baseline load)"
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
    print(
        f"load average at start / end: {results['load_average_at_start']} / "
        f"{results['load_average']} (1, 5, 15 min; {os.cpu_count()} CPUs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
