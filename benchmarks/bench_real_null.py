"""The real null: audits of releases that depend on no record, through the whole audit.

A ``--steps 0 --init noise`` release is noise drawn from the seed alone: the perfect null. For each
seed this distils it (no step), runs the audit at the given sizes (the defaults unless told), and
applies the policy's privacy rules (``game.*``; utility is not judged: noise is useless by design)
to the game **recomputed from the audit's raw files** (``game_scores.npz``, ``keep.npy``,
``records.json``, as ``release`` does: ``rcig_release.release.recompute``). With ``--steps N`` the
release is a real distillation from noise (``--init noise``) of N steps: it reads the private data,
so it is a null only in so far as the pipeline does not leak.

Target (issue #12): the default policy's privacy rules pass in >= 95 % of seeds. Printed: every
seed's failed rules, the pass count, and the exact (Clopper-Pearson) 95 % interval of the
false-refusal rate. A seed whose audit exists is not re-audited (its verdict is recomputed with the
current code): ``--evaluate-only`` only re-evaluates.

    python benchmarks/bench_real_null.py --seeds 30 --out /tmp/real_null            # digits
    python benchmarks/bench_real_null.py --seeds 4 --steps 100 --out /tmp/real_null_100
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def evaluate(run: Path, policy, data) -> tuple[list[str], int]:
    """(failed privacy rules, number of privacy rules) on the game recomputed from the audit's raw
    files as ``release`` recomputes it; an audit.json that differs from it raises (exit 2)."""
    import numpy as np

    from rcig_release.release import recompute
    from rcig_release.release.decision import evaluate_policy, init_mode

    run_json = json.loads((run / "run.json").read_text())
    audit = json.loads((run / "audit" / "audit.json").read_text())
    raw = recompute.read_audit_dir(run / "audit")
    recompute.check_config(audit, raw)
    with np.load(run / "distilled.npz") as z:
        init, n_classes = z["init_indices"], len(z["classes"])
    gi = recompute.inputs_from_audit_dir(
        raw, init_indices=init, n_classes=n_classes, labels=(data.y_train, data.y_test)
    )
    rec = recompute.recompute(gi, init_mode=init_mode(run_json), parts=("game",))
    recompute.check(audit, rec, "audit.json", recompute.RAW_FILES)
    d = evaluate_policy(run_json, {}, recompute.substitute(audit, rec), policy)
    privacy = [r for r in d.rules if r.name.startswith("game.")]
    return [f"{r.name} ({r.note})" for r in privacy if not r.passed], len(privacy)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--out", default="/tmp/real_null")
    ap.add_argument("--shadows", type=int, default=16)
    ap.add_argument("--steps", type=int, default=0, help="distillation steps (0: the noise itself)")
    ap.add_argument("--baselines", default="none", help="comma list or none (not judged here)")
    ap.add_argument("--policy", default=str(ROOT / "policies" / "default.toml"))
    ap.add_argument(
        "--evaluate-only", action="store_true", help="no new audit; evaluate the done ones"
    )
    args = ap.parse_args()

    from rcig_release.audits import AuditConfig, run_audit
    from rcig_release.config import make_distill_config
    from rcig_release.data import load_dataset
    from rcig_release.pipeline import distill_run
    from rcig_release.release.policy import load_policy
    from rcig_release.runtime import enable_compilation_cache

    enable_compilation_cache()
    policy = load_policy(args.policy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    for seed in seeds:
        run = out / f"seed{seed}"
        if (run / "audit" / "audit.json").is_file() or args.evaluate_only:
            continue
        if run.exists():
            shutil.rmtree(run)
        t0 = time.perf_counter()
        cfg = make_distill_config(steps=args.steps, init="noise", seed=seed)
        distill_run(run, args.data, cfg)
        base = () if args.baselines == "none" else tuple(args.baselines.split(","))
        run_audit(run, AuditConfig(shadows=args.shadows, seed=seed, baselines=base))
        (run / "seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
        print(f"seed {seed}: audited in {time.perf_counter() - t0:.0f} s", flush=True)

    data = None
    rows = []
    for seed in seeds:
        run = out / f"seed{seed}"
        if not (run / "audit" / "audit.json").is_file():
            continue
        if data is None:
            meta = json.loads((run / "run.json").read_text())["data"]
            data = load_dataset(meta["source"], seed=int(meta.get("split_seed") or 0))
        failed, n_rules = evaluate(run, policy, data)
        sec = (run / "seconds.txt").read_text().strip() if (run / "seconds.txt").is_file() else "?"
        rows.append((seed, failed, n_rules, sec))
        print(
            f"seed {seed}: {'pass' if not failed else 'FAIL ' + '; '.join(failed)} "
            f"({n_rules} privacy rules; audit {sec} s)",
            flush=True,
        )
    if not rows:
        print("no audited seed")
        return
    n = len(rows)
    n_fail = sum(1 for r in rows if r[1])
    lo, hi = clopper_pearson(n_fail, n)
    print(
        f"\n{n - n_fail} of {n} seeds pass every privacy rule of {Path(args.policy).name} "
        f"(--steps {args.steps}); false-refusal rate {n_fail}/{n} = {n_fail / n:.3f}, "
        f"95 % Clopper-Pearson interval [{lo:.3f}, {hi:.3f}]"
    )


if __name__ == "__main__":
    main()
