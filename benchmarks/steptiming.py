"""The timing harness bench_step.py and bench_dp_step.py share: one configuration per child
process (so its peak RSS is its own), each outer step timed with a device sync.

Imported by the benchmark scripts as ``steptiming`` (they run as ``python benchmarks/X.py``, so
this folder is on ``sys.path``); not part of the installed package.
"""

from __future__ import annotations

import json
import resource
import subprocess
import time
from typing import Any


class StepTimer:
    """``distill``'s ``on_state`` callback: the wall time of every step, synced on the state."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last = time.perf_counter()

    def __call__(self, step: int, state: Any) -> None:
        import jax

        jax.block_until_ready(state)
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now

    def summary(self) -> dict[str, float | int]:
        """The first step (compilation included) apart; "s_per_step" the median of the rest."""
        rest = sorted(self.times[1:])
        return {
            "first_step_s": self.times[0] if self.times else float("nan"),
            "s_per_step": rest[len(rest) // 2] if rest else float("nan"),
            "steps_timed": len(rest),
        }


def peak_rss_gb() -> float:
    """This process's peak resident set (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_child(cmd: list[str], timeout: float, ident: dict[str, Any]) -> dict[str, Any]:
    """Runs one configuration's child process; its row is the last line of its stdout (JSON),
    or ``ident`` with an "error" (the child's last stderr line, or the timeout)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**ident, "error": f"over {timeout:g} s"}
    lines = out.stdout.strip().splitlines()
    if out.returncode == 0 and lines:
        return json.loads(lines[-1])
    err = out.stderr.strip().splitlines()
    return {**ident, "error": err[-1] if err else f"rc {out.returncode}"}
