"""The real null: audits of releases that depend on no record, through the whole audit.

A ``--steps 0 --init noise`` release is noise drawn from the seed alone: the perfect null. For each
seed this distils it (no step), runs the audit at the given sizes (the defaults unless told), and
applies the policy's privacy rules (``game.*``; utility is not judged: noise is useless by design).
Target (issue #12): the default policy's privacy rules pass in >= 95 % of seeds.

    python benchmarks/bench_real_null.py --seeds 20 --out /tmp/real_null   # digits, defaults
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--out", default="/tmp/real_null")
    ap.add_argument("--shadows", type=int, default=16)
    ap.add_argument("--baselines", default="none", help="comma list or none (not judged here)")
    ap.add_argument("--policy", default=str(ROOT / "policies" / "default.toml"))
    args = ap.parse_args()

    from rcig_release.audits import AuditConfig, run_audit
    from rcig_release.config import make_distill_config
    from rcig_release.pipeline import distill_run
    from rcig_release.release.decision import evaluate_policy
    from rcig_release.release.policy import load_policy
    from rcig_release.runtime import enable_compilation_cache

    enable_compilation_cache()
    policy = load_policy(args.policy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        run = out / f"seed{seed}"
        if run.exists():
            shutil.rmtree(run)
        t0 = time.perf_counter()
        cfg = make_distill_config(steps=0, init="noise", seed=seed)
        distill_run(run, args.data, cfg)
        base = () if args.baselines == "none" else tuple(args.baselines.split(","))
        audit = run_audit(run, AuditConfig(shadows=args.shadows, seed=seed, baselines=base))
        run_json = json.loads((run / "run.json").read_text())
        d = evaluate_policy(run_json, {}, audit, policy)
        privacy = [r for r in d.rules if r.name.startswith("game.")]
        failed = [r.name for r in privacy if not r.passed]
        rows.append((seed, not failed, failed, time.perf_counter() - t0))
        print(
            f"seed {seed}: {'pass' if not failed else 'FAIL ' + ', '.join(failed)} "
            f"({len(privacy)} privacy rules, {rows[-1][3]:.0f} s)",
            flush=True,
        )
    n_pass = sum(r[1] for r in rows)
    print(
        f"\n{n_pass} of {len(rows)} seeds pass every privacy rule of {Path(args.policy).name} "
        f"({100 * n_pass / len(rows):.1f} %); mean {sum(r[3] for r in rows) / len(rows):.0f} s "
        "per seed"
    )


if __name__ == "__main__":
    main()
