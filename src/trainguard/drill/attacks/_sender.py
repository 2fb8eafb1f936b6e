"""A helper process that signals a rank once it reaches a step (standard library only).

Run as a file, by the kill drill, as the "insider's script":
``python _sender.py JOB_DIR RANK STEP SIGNAL OUT_JSON TIMEOUT``. It watches the
rank's heartbeat record (``JOB_DIR/heartbeat/rank-RANK.json``, written by the
``trainguard run`` rank bootstrap), sends ``SIGNAL`` to the rank's pid once the
rank reports ``STEP``, and writes what it did to ``OUT_JSON``.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    job_dir, rank, step, signo, out, timeout = argv
    beat_path = os.path.join(job_dir, "heartbeat", f"rank-{int(rank)}.json")
    deadline = time.monotonic() + float(timeout)
    while time.monotonic() < deadline:
        try:
            with open(beat_path, encoding="utf-8") as fh:
                beat = json.load(fh)
        except (OSError, ValueError):
            beat = None
        if beat and isinstance(beat.get("step"), int) and beat["step"] >= int(step):
            os.kill(int(beat["pid"]), int(signo))
            record = {
                "sender_pid": os.getpid(),
                "sender_uid": os.getuid(),
                "target_pid": beat["pid"],
                "step": beat["step"],
                "signal": int(signo),
            }
            with open(out, "w", encoding="utf-8") as fh:
                json.dump(record, fh)
            return 0
        time.sleep(0.02)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
