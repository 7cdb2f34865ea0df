"""Initialisations and schedules judged by accuracy *and* the release's memorisation check.

    python benchmarks/bench_init.py --data digits --seeds 0 1 --out /work/bench/releasable/init \\
        --candidate real:init=real --candidate mean:init=mean \\
        --candidate noise-lr0.1:init=noise,proto_lr=0.1,steps=200

Each candidate is ``NAME:key=value,...`` of ``DistillConfig`` values over the ``--preset`` (cpu).
For every candidate and seed it runs what ``rcig-release distill --out OUT/NAME-sSEED`` (plus the
values), ``rcig-release evaluate`` (5 ConvNets, the evaluate protocol) and ``rcig-release check``
run, through the same library calls (``pipeline.distill_run``, ``evaluate.evaluate_run``,
``release.precheck.check_run``: the release's own memorisation check), and prints one row per
run, then one per candidate (mean accuracy over its seeds, how many of its runs the check would
refuse, and the smallest p-value of the check over all its runs). Rows are appended as
JSON lines to OUT/results.jsonl. ``--evaluate-only`` re-reads finished runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any


def parse_value(v: str) -> Any:
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def parse_candidate(spec: str) -> tuple[str, dict[str, Any]]:
    name, _, rest = spec.partition(":")
    values = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        values[k.strip()] = parse_value(v.strip())
    return name, values


def run_one(name: str, values: dict, seed: int, a: argparse.Namespace) -> dict:
    from rcig_release.config import EvalConfig, make_distill_config
    from rcig_release.evaluate import evaluate_run
    from rcig_release.pipeline import distill_run
    from rcig_release.release.precheck import check_run

    out = Path(a.out) / f"{name}-s{seed}"
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    if not a.evaluate_only:
        cfg = make_distill_config(a.preset, dict(values), ipc=a.ipc, seed=seed)
        distill_run(out, a.data, cfg, force=True)
    t_distill = time.perf_counter() - t0
    rj = json.loads((out / "run.json").read_text())
    t1 = time.perf_counter()
    ev = evaluate_run(out, EvalConfig(models=a.models), data=None)
    t_eval = time.perf_counter() - t1
    t2 = time.perf_counter()
    pre = check_run(out)
    t_check = time.perf_counter() - t2
    steps = rj["config"]["steps"]
    loop = rj["timings"].get("loop_seconds") or 0.0
    row = {
        "candidate": name,
        "values": values,
        "seed": seed,
        "data": a.data,
        "ipc": a.ipc,
        "steps": steps,
        "distill_seconds": rj["timings"]["distill_seconds"],
        "wall_distill_seconds": t_distill,
        "s_per_step": loop / steps if steps else None,
        "eval_seconds": t_eval,
        "check_seconds": t_check,
        "accuracy_mean": ev["accuracy_mean"],
        "accuracy_std": ev["accuracy_std"],
        "check_passed": pre.passed,
        "flagged": pre.result.flagged,
        "smallest_p": pre.smallest_p,
        "load_start": load0,
        "load_end": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    with open(Path(a.out) / "results.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--ipc", type=int, default=1)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--candidate", action="append", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--evaluate-only", action="store_true")
    a = ap.parse_args()
    Path(a.out).mkdir(parents=True, exist_ok=True)
    rows = []
    print(
        f"{'candidate':<28} {'seed':>4} {'steps':>5} {'s/step':>7} {'distill s':>9} "
        f"{'accuracy %':>15} {'check':>7} {'flagged':>7} {'min p':>8} {'load':>5}",
        flush=True,
    )
    for spec in a.candidate:
        name, values = parse_candidate(spec)
        for seed in a.seeds:
            r = run_one(name, values, seed, a)
            rows.append(r)
            sps = "-" if r["s_per_step"] is None else f"{r['s_per_step']:.2f}"
            print(
                f"{name:<28} {seed:>4} {r['steps']:>5} {sps:>7} {r['distill_seconds']:>9.1f} "
                f"{100 * r['accuracy_mean']:>8.2f} ± {100 * r['accuracy_std']:.2f} "
                f"{'pass' if r['check_passed'] else 'REFUSE':>7} {r['flagged']:>7} "
                f"{r['smallest_p']:>8.3g} {r['load_end']:>5.1f}",
                flush=True,
            )
    print(f"\n{'candidate':<28} {'seeds':>5} {'mean accuracy %':>15} {'refused':>7} {'min p':>8}")
    for spec in a.candidate:
        name, _ = parse_candidate(spec)
        rs = [r for r in rows if r["candidate"] == name]
        acc = sum(r["accuracy_mean"] for r in rs) / len(rs)
        print(
            f"{name:<28} {len(rs):>5} {100 * acc:>15.2f} "
            f"{sum(not r['check_passed'] for r in rs):>7} "
            f"{min(r['smallest_p'] for r in rs):>8.3g}"
        )


if __name__ == "__main__":
    main()
