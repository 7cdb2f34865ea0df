"""The gate's power formulas against end-to-end simulation (``audits/stats.py``).

Each simulated audit fold draws OUT scores and IN scores from a stated model, lets the test place
its own threshold (TPR: the (j+1)-th highest OUT score), counts and applies the exact test at the
gate's per-fold level; the rejection rate is compared with ``stats.tpr_power`` (threshold's FPR
integrated over its Beta distribution) and with the earlier fixed-threshold formula
(``tpr_power_fixed``), and with ``stats.auc_power`` for the Mann–Whitney AUC test.

Models. TPR: the least favourable concave ROC through (fpr, tpr) (``concave``, what the gate uses)
and the equal-variance binormal ROC through it. AUC: binormal, and a partial leak (a fraction
2(AUC − ½) of the IN guesses above every OUT guess, the rest at chance).

    python benchmarks/bench_power.py --reps 2000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats as sps

from rcig_release.audits import stats

# (n_in, n_out, fpr, tpr) per fold: digits' default sizes (1,440 + 1,440 guesses per fold) at the
# default policy's old and new effects, and the strict policy's 0.1 % rule at 16,000 OUT guesses
TPR_CASES = [
    (1440, 1440, 0.001, 0.02),
    (1440, 1440, 0.01, 0.04),
    (1440, 1440, 0.001, 0.12),
    (1440, 1440, 0.01, 0.06),
]
AUC_CASES = [(1440, 1440, 0.57), (1440, 1440, 0.55), (40, 40, 0.85), (30, 50, 0.85), (40, 40, 0.75)]


def in_scores(rng, n, fpr, tpr, roc):
    w = rng.random(n)
    if roc == "concave":
        u = np.where(w <= tpr, w * fpr / tpr, fpr + (w - tpr) * (1 - fpr) / (1 - tpr))
    else:
        u = sps.norm.cdf(sps.norm.ppf(w) - (sps.norm.ppf(tpr) - sps.norm.ppf(fpr)))
    return 1.0 - u  # OUT ~ U(0, 1): P(IN > t) = R(1 − t)


def sim_tpr(n_in, n_out, fpr, tpr, alpha, roc, reps, rng):
    rej = 0
    for _ in range(reps):
        r = stats.tpr_test(in_scores(rng, n_in, fpr, tpr, roc), rng.random(n_out), fpr)
        rej += r["p_value"] <= alpha
    return rej / reps


def sim_auc(n_in, n_out, auc, alpha, model, reps, rng):
    rej = 0
    for _ in range(reps):
        out = rng.standard_normal(n_out)
        if model == "binormal":
            ins = rng.standard_normal(n_in) + np.sqrt(2) * sps.norm.ppf(auc)
        else:
            ins = np.where(rng.random(n_in) < 2 * auc - 1, 100.0, rng.standard_normal(n_in))
        rej += stats.auc_test(ins, out)["p_value"] <= alpha
    return rej / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--tests", type=int, default=28, help="test rules sharing gate.alpha - 0.01")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--case",
        default=None,
        help="only this TPR case, n_in,n_out,fpr,tpr (e.g. 1440,1440,0.001,0.12)",
    )
    args = ap.parse_args()
    tpr_cases, auc_cases = TPR_CASES, AUC_CASES
    if args.case:
        n_in, n_out, fpr, tpr = args.case.split(",")
        tpr_cases, auc_cases = [(int(n_in), int(n_out), float(fpr), float(tpr))], []
    alpha = 0.04 / args.tests / 2  # per fold: (0.05 − 0.01) / tests, halved for the two folds
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    print(f"per-fold level {alpha:.3g} ({args.tests} test rules); {args.reps} simulations per row")
    print("\n| n_in / n_out | FPR | TPR | ROC model | simulated | tpr_power | fixed-threshold |")
    print("|---|---|---|---|---|---|---|")
    for n_in, n_out, fpr, tpr in tpr_cases:
        for roc in ("concave", "binormal"):
            sim = sim_tpr(n_in, n_out, fpr, tpr, alpha, roc, args.reps, rng)
            se = np.sqrt(max(sim * (1 - sim), 1e-4) / args.reps)
            print(
                f"| {n_in} / {n_out} | {fpr:g} | {tpr:g} | {roc} | {sim:.4f} ± {se:.4f} | "
                f"{stats.tpr_power(n_in, n_out, fpr, tpr, alpha, roc):.4f} | "
                f"{stats.tpr_power_fixed(n_in, n_out, fpr, tpr, alpha):.4f} |",
                flush=True,
            )
    print("\n| n_in / n_out | AUC | model | simulated | auc_power (model) | auc_power (gate) |")
    print("|---|---|---|---|---|---|")
    for n_in, n_out, auc in auc_cases:
        for model in ("binormal", "fraction"):
            sim = sim_auc(n_in, n_out, auc, alpha, model, args.reps, rng)
            se = np.sqrt(max(sim * (1 - sim), 1e-4) / args.reps)
            print(
                f"| {n_in} / {n_out} | {auc:g} | {model} | {sim:.4f} ± {se:.4f} | "
                f"{stats.auc_power(n_in, n_out, auc, alpha, model):.4f} | "
                f"{stats.auc_power(n_in, n_out, auc, alpha):.4f} |",
                flush=True,
            )
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
