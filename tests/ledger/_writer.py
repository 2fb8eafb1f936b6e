"""A ledger writer for crash and concurrency tests: ``python _writer.py URL NAME [COUNT] [BATCH]``.

Appends runs named ``NAME-<i>`` in batches and prints ``ACK <first> <size> <NAME-i>...``
for every acknowledged (committed) batch, flushing at once, so the parent knows
exactly what it may rely on even if it kills this process with SIGKILL.
"""

from __future__ import annotations

import sys

from trainguard.ledger import Ledger
from trainguard.ledger.records import Run


def main() -> None:
    url, name = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 10**9
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    ledger = Ledger.open(url, create=True)
    i = 0
    while i < count:
        ids = [f"{name}-{j}" for j in range(i, min(i + batch, count))]
        records = [
            Run(
                rid,
                user="crash",
                hosts=("h1",),
                world_size=1,
                accelerator_type="cpu",
                accelerator_count=1,
                started_at=1_714_000_000 + k,
                command="x" * (k % 200),
            )
            for k, rid in enumerate(ids, start=i)
        ]
        result = ledger.append(records)
        # One write per line, so a kill can only truncate the line, never interleave it.
        sys.stdout.write(" ".join(["ACK", str(result.first), str(result.size), *ids]) + "\n")
        sys.stdout.flush()
        i += len(ids)
    ledger.close()


if __name__ == "__main__":
    main()
