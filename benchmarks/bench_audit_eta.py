"""How soon and how well the audit's progress estimates the release shadows' remaining time.

    python benchmarks/bench_audit_eta.py --shadows 4 --distill-steps 60 --workdir /tmp/eta

Distils digits with the CPU preset (``--distill-steps`` steps, as bench_audit.py), audits it
(``--shadows`` release shadows, no baselines) with a callback that records every progress
event and its time, and prints, for the release shadows' stage: when the first ETA appeared
and when the first pipeline was written (when a per-pipeline rate could first give one), then
the error of the predicted end (event time + ETA − the stage's measured end) at points of the
stage, for the audit's ETA (audits/eta.py: step times and per-pipeline overhead) and for the
rate of whole pipelines (done / stage elapsed: the plain lines' ETA before this change).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shadows", type=int, default=4)
    ap.add_argument("--distill-steps", type=int, default=60)
    ap.add_argument("--targets", type=int, default=4)
    ap.add_argument("--workdir", type=Path, default=None)
    a = ap.parse_args()

    from bench_audit import make_digits_run

    from rcig_release.audits import AuditConfig, run_audit

    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="bench_audit_eta_"))
    run = make_digits_run(workdir, a.distill_steps, "real")
    cfg = AuditConfig(shadows=a.shadows, targets=a.targets, baselines=())
    events: list[tuple[float, str, int, int, float | None]] = []

    def record(stage: str, done: int, total: int, eta: float | None = None) -> None:
        events.append((time.perf_counter(), stage, done, total, eta))

    run_audit(run, cfg, progress=record)
    rel = [e for e in events if e[1].split(": ")[0] == "release"]
    t0, end = rel[0][0], rel[-1][0]
    dur = end - t0
    first_eta = next((e for e in rel if e[4] is not None), None)
    first_written = next(e for e in rel if e[2] >= 1)
    steps = sum("distill step" in e[1] for e in rel)
    print(
        f"release stage: {a.shadows} shadows x {a.distill_steps} distillation steps, "
        f"{dur:.1f} s; {len(rel)} events ({steps} step events)"
    )
    print(
        f"first ETA after {first_eta[0] - t0:.1f} s ({first_eta[1]})"
        if first_eta
        else "no ETA before the stage ended"
    )
    print(f"first pipeline written after {first_written[0] - t0:.1f} s")
    print()
    print("| stage elapsed | event | audit ETA: predicted end - end | pipeline rate: same |")
    print("|---|---|---|---|")
    points = [(f"first ETA ({first_eta[0] - t0:.0f} s)", first_eta[0])] if first_eta else []
    points += [(f"{f:.0%} ({f * dur:.0f} s)", t0 + f * dur) for f in (0.1, 0.25, 0.5, 0.75, 0.9)]
    for label, t in points:
        e = max((x for x in rel if x[0] <= t), key=lambda x: x[0])
        ours = "n/a" if e[4] is None else f"{e[0] + e[4] - end:+.1f} s"
        done = e[2]
        if done:
            rate_eta = (e[3] - done) * (e[0] - t0) / done
            theirs = f"{e[0] + rate_eta - end:+.1f} s"
        else:
            theirs = "n/a (no pipeline written)"
        print(f"| {label} | {e[1]} {done}/{e[3]} | {ours} | {theirs} |")


if __name__ == "__main__":
    main()
