"""Validity and tightness of the audit's ε lower bound on mechanisms whose ε is known exactly.

    python benchmarks/bench_epsilon_validity.py            # the sizes in docs/benchmarks.md
    python benchmarks/bench_epsilon_validity.py --quick    # a few seconds, smaller repetitions

Each audit draws an independent fair coin per canary (IN/OUT), scores the canaries with the
mechanism and computes ``epsilon_lower_bound`` (α = 0.05, δ = 1e-5 unless stated). Mechanisms:
randomised response at ε (the score is the membership bit, kept with probability
e^ε/(1+e^ε): exactly ε-DP per canary), the Gaussian mechanism (score = IN·μ + N(0, 1); true ε
at δ from dp_accounting's analytic curve) and a null mechanism (scores independent of
membership: (0, 0)-DP, any positive bound is a false claim). Rows "library default" use
jax-privacy's own ``epsilon_one_run`` with its default ``Bonferroni()`` (α divided by the
number of ROC-hull thresholds of the labelled scores) for comparison.

The second table is the largest bound the sample size allows (``max_epsilon``, IN scores tied)
and a perfect ranking's bound (``perfect_ranking_epsilon``) for n_in = n_out = m/2, per δ and
family size (the bound is computed at α / family size).
"""

from __future__ import annotations

import argparse
import math
import time

import dp_accounting
import numpy as np
from jax_privacy.auditing import CanaryScoreAuditor

from rcig_release.audits import epsilon as E


def _draw(rng, m, kind, param):
    keep = rng.random(m) < 0.5
    if kind == "randomised response":
        truthful = rng.random(m) < math.exp(param) / (1.0 + math.exp(param))
        s = np.where(truthful, keep, ~keep).astype(float)
    elif kind == "Gaussian":
        s = keep * param + rng.standard_normal(m)
    else:
        s = rng.standard_normal(m)
    return s[keep], s[~keep]


def _true_eps(kind, param, delta):
    if kind == "randomised response":
        return float(param)
    if kind == "Gaussian":
        return float(dp_accounting.get_epsilon_gaussian(1.0 / param, delta))
    return 0.0


def run_row(kind, param, m, reps, *, alpha, delta, analysis="one_run", seed=0):
    rng = np.random.default_rng(seed)
    true_eps = _true_eps(kind, param, delta)
    vals, secs = [], 0.0
    for _ in range(reps):
        i, o = _draw(rng, m, kind, param)
        t = time.perf_counter()
        if analysis == "library default":
            v = float(CanaryScoreAuditor(i, o).epsilon_one_run(alpha, delta))
        else:
            v = E.epsilon_lower_bound(i, o, delta=delta, alpha=alpha, method=analysis)
        secs += time.perf_counter() - t
        vals.append(v)
    vals = np.asarray(vals)
    p5, med, p95 = np.percentile(vals, [5, 50, 95])
    name = (
        kind
        if kind == "null"
        else (f"{kind} ε={param:g}" if kind == "randomised response" else f"{kind} μ={param:g}")
    )
    return (
        f"| {name} | {analysis} | {true_eps:.3f} | {m} | {reps} | {med:.3f} | {p5:.3f} | "
        f"{p95:.3f} | {np.mean(vals <= true_eps + 1e-9):.3f} | {secs / reps:.4f} |"
    )


def validity_table(quick: bool, alpha: float, delta: float) -> None:
    r1, r2, rn = (40, 10, 200) if quick else (200, 40, 4000)
    rows = [
        ("randomised response", 1.0, 1000, r1, "one_run"),
        ("randomised response", 2.0, 1000, r1, "one_run"),
        ("randomised response", 4.0, 1000, r1, "one_run"),
        ("randomised response", 1.0, 10000, r2, "one_run"),
        ("randomised response", 2.0, 10000, r2, "one_run"),
        ("randomised response", 4.0, 10000, r2, "one_run"),
        ("randomised response", 2.0, 100000, max(2, r2 // 4), "one_run"),
        ("randomised response", 2.0, 1000, r1, "clopper_pearson"),
        ("Gaussian", 0.5, 1000, r1, "one_run"),
        ("Gaussian", 1.0, 1000, r1, "one_run"),
        ("Gaussian", 2.0, 1000, r1, "one_run"),
        ("Gaussian", 1.0, 100, r1, "one_run"),
        ("Gaussian", 1.0, 10000, r2, "one_run"),
        ("Gaussian", 2.0, 10000, r2, "one_run"),
        ("null", 0.0, 1000, rn, "one_run"),
        ("null", 0.0, 1000, rn, "library default"),
    ]
    print(f"α = {alpha}, δ = {delta}\n")
    print(
        "| mechanism | analysis | true ε | canaries | reps | median LB | 5th pct | 95th pct "
        "| share LB ≤ true ε | s / audit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k, (kind, param, m, reps, analysis) in enumerate(rows):
        print(
            run_row(kind, param, m, reps, alpha=alpha, delta=delta, analysis=analysis, seed=k),
            flush=True,
        )


def caps_table(alpha: float) -> None:
    print(f"\nα = {alpha}; n_in = n_out = m/2; max_epsilon / perfect_ranking_epsilon\n")
    sizes = (1000, 10000, 100000)
    print("| δ | family size | " + " | ".join(f"m = {m}" for m in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for delta in (1e-5, 1e-6, 1e-7, 1e-9):
        for fam in (1, 30):
            a = alpha / fam
            cells = [
                f"{E.max_epsilon(m // 2, m // 2, delta=delta, alpha=a):.2f} / "
                f"{E.perfect_ranking_epsilon(m // 2, m // 2, delta=delta, alpha=a):.2f}"
                for m in sizes
            ]
            print(f"| {delta:g} | {fam} | " + " | ".join(cells) + " |", flush=True)


def _grid_variant(per_doubling: int):
    """top_k_grid with ``per_doubling`` rules per halving of k (1 is the module's own)."""

    def grid(m, alpha):
        n = max(1, math.ceil(per_doubling * math.log2(m)))
        j = np.arange(1, n + 1) / per_doubling
        ks = np.unique(np.clip(np.ceil(m * 2.0**-j - 1e-9).astype(np.int64), 1, m))
        kept = ks[ks >= math.ceil(math.log2(ks.size / alpha))]
        return kept if kept.size else ks[-1:]

    return grid


def grid_table() -> None:
    """Median bound over 5 seeds for 1, 2, 4 rules per doubling (swaps E.top_k_grid)."""
    own = E.top_k_grid
    print("\nrules per doubling of k: median bound over 5 audits\n")
    print("| mechanism | canaries | δ | α per test | 1 | 2 | 4 |")
    print("|---|---|---|---|---|---|---|")
    try:
        for delta, alpha in ((1e-5, 0.05), (1e-7, 0.05 / 30), (1e-5, 0.05 / 30)):
            for kind, param in (("Gaussian", 1.0), ("Gaussian", 4.0), ("randomised response", 2.0)):
                for m in (1000, 10000):
                    cells = []
                    for per in (1, 2, 4):
                        E.top_k_grid = _grid_variant(per)
                        rng = np.random.default_rng(5)
                        cells.append(
                            np.median(
                                [
                                    E.epsilon_lower_bound(
                                        *_draw(rng, m, kind, param), delta=delta, alpha=alpha
                                    )
                                    for _ in range(5)
                                ]
                            )
                        )
                    name = f"{kind} {'ε' if kind != 'Gaussian' else 'μ'}={param:g}"
                    print(
                        f"| {name} | {m} | {delta:g} | {alpha:.4g} | "
                        + " | ".join(f"{c:.2f}" for c in cells)
                        + " |",
                        flush=True,
                    )
    finally:
        E.top_k_grid = own


def _lira_scores(phi_t, phi_r, keep_r):
    """LiRA-style score per (target row, record): log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out),
    with μ, σ per record from the reference rows split by their coins."""
    from scipy.stats import norm

    def stats(mask):
        n = mask.sum(0)
        mu = np.where(n > 0, (phi_r * mask).sum(0) / np.maximum(n, 1), 0.0)
        var = np.where(n > 1, ((phi_r - mu) ** 2 * mask).sum(0) / np.maximum(n - 1, 1), 1.0)
        return mu, np.sqrt(var) + 1e-3

    (mi, si), (mo, so) = stats(keep_r), stats(~keep_r)
    return norm.logpdf(phi_t, mi, si) - norm.logpdf(phi_t, mo, so)


def coins_table(reps: int, alpha: float, delta: float) -> None:
    """Null mechanism (per-record signal, no dependence on membership), K pipelines × N records.

    "leave-one-out": every pipeline is audited and its scores use the other pipelines' coins
    (also audited canaries). "reference": K/2 reference pipelines whose coins are not audited
    give μ, σ; only the other K/2 pipelines' canaries are audited.
    """
    print(f"\nnull mechanism, LiRA-style scores; share of audits with ε > 0 (α = {alpha})\n")
    print("| pipelines K | records N | scores from | audited canaries | reps | share ε > 0 |")
    print("|---|---|---|---|---|---|")
    for K, N in ((8, 250), (16, 250)):
        rng = np.random.default_rng(K)
        pos = {"leave-one-out": 0, "reference": 0}
        for _ in range(reps):
            keep = rng.random((K, N)) < 0.5
            phi = rng.standard_normal(N)[None, :] + 0.5 * rng.standard_normal((K, N))
            loo = np.stack(
                [
                    _lira_scores(phi[k], np.delete(phi, k, 0), np.delete(keep, k, 0))
                    for k in range(K)
                ]
            )
            h = K // 2
            ref = np.stack([_lira_scores(phi[k], phi[h:], keep[h:]) for k in range(h)])
            for name, sc, kp in (("leave-one-out", loo, keep), ("reference", ref, keep[:h])):
                pos[name] += E.epsilon_lower_bound(sc[kp], sc[~kp], delta=delta, alpha=alpha) > 0
        for name, v in pos.items():
            m = K * N if name == "leave-one-out" else (K // 2) * N
            print(f"| {K} | {N} | {name} | {m} | {reps} | {v / reps:.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--part", choices=("all", "validity", "caps", "grid", "coins"), default="all")
    args = ap.parse_args()
    t = time.perf_counter()
    if args.part in ("all", "validity"):
        validity_table(args.quick, args.alpha, args.delta)
    if args.part in ("all", "caps"):
        caps_table(args.alpha)
    if args.part == "grid":
        grid_table()
    if args.part == "coins":
        coins_table(200 if args.quick else 1500, args.alpha, args.delta)
    print(f"\ntotal {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
