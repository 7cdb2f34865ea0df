"""The audit's DP check on canaries: correct and weakened mechanisms at ε = 1 (docs/dp.md).

    python benchmarks/bench_dp_canary_audit.py --reps 20

Canaries as in tests/test_dp_audit.py: 1,000 canaries whose per-example gradients are 10·C along
their own coordinate, each IN by a fair coin per release; one release is the product's
``clip_and_sum`` and ``add_noise`` (noise from the product's secret OS entropy, ``secret_rng``)
with σ calibrated by the product's accountant to (ε, δ) for one release, or σ divided by 3 or 10
(weakened). ``--pipelines`` independent releases play the shadows (two folds), scored by six
attacks as the default audit (one reads each canary's coordinate of its release, five are blind),
so each fold holds m = pipelines/2 × 1,000 canaries and the family is 12. Per row: how often the
audit's DP check (``dpcheck.empirical_epsilon`` at the run's δ, joint confidence 0.99) flags a
violation of ε, its bounds, the largest bound it can show; and the same for the check before
issue #20 (the game's grid of top-k rules, ``epsilon.epsilon_lower_bound``, recomputed at δ).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rcig_release.audits import dpcheck, game
from rcig_release.audits import epsilon as E
from rcig_release.rcig import accounting, dp
from rcig_release.release.dp import violates

M, C, ALPHA, ATTACKS = 1000, 1.0, 0.01, 6
Z = {"w": 10.0 * C * np.eye(M, dtype=np.float32)[:, :, None]}


def canary_game(sigma: float, pipelines: int, rng: np.random.Generator):
    keep = rng.random((pipelines, M)) < 0.5
    rows = []
    for k in range(pipelines):
        noised = dp.add_noise(dp.clip_and_sum(Z, keep[k], C), sigma * C, 1.0, dp.secret_rng())
        rows.append(np.asarray(noised["w"][:, 0], np.float64))
    scores = {"coordinate": np.stack(rows)}
    for a in range(ATTACKS - 1):
        scores[f"blind_{a}"] = rng.standard_normal((pipelines, M))
    return scores, keep, {"all": np.ones(M, bool)}


def old_check(scores, keep, delta: float) -> tuple[float, float]:
    """The check before issue #20: the game's bounds (its top-k grid) recomputed at δ."""
    level = ALPHA / (len(scores) * game.N_FOLDS)
    best, cap = 0.0, 0.0
    for s in scores.values():
        for tg, _ in game.folds(s.shape[0]):
            sub, lab = s[tg], keep[tg]
            best = max(best, E.epsilon_lower_bound(sub[lab], sub[~lab], delta=delta, alpha=level))
            cap = max(
                cap, E.max_epsilon(int(lab.sum()), int((~lab).sum()), delta=delta, alpha=level)
            )
    return best, cap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--pipelines", type=int, default=16)
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--deltas", type=float, nargs="+", default=[1e-5, 1e-6])
    a = ap.parse_args()
    rng = np.random.default_rng(0)  # coins and blind attacks; the noise is the product's secret
    print(
        f"{'delta':>7} {'mechanism':>9} {'sigma':>6} {'flagged':>8} {'LB mean':>8} {'LB max':>7} "
        f"{'showable':>8} | {'old flagged':>11} {'old LB max':>10} {'old showable':>12} {'s':>5}"
    )
    for delta in a.deltas:
        sigma = accounting.calibrate_noise(a.epsilon, delta, 1.0, 1)
        for name, div in (("correct", 1.0), ("sigma/3", 3.0), ("sigma/10", 10.0)):
            t = time.perf_counter()
            lbs, caps, olds, ocaps = [], [], [], []
            for _ in range(a.reps):
                scores, keep, groups = canary_game(sigma / div, a.pipelines, rng)
                r = dpcheck.empirical_epsilon(scores, keep, groups, delta=delta, alpha=ALPHA)
                lbs.append(r["epsilon_lower_bound"])
                caps.append(r["largest_showable_epsilon"])
                o, oc = old_check(scores, keep, delta)
                olds.append(o)
                ocaps.append(oc)
            flagged = sum(violates(x, a.epsilon) for x in lbs)
            oflagged = sum(violates(x, a.epsilon) for x in olds)
            print(
                f"{delta:>7g} {name:>9} {sigma / div:>6.3f} {flagged:>4}/{a.reps:<3} "
                f"{np.mean(lbs):>8.3f} {np.max(lbs):>7.3f} {np.min(caps):>8.2f} | "
                f"{oflagged:>7}/{a.reps:<3} {np.max(olds):>10.3f} {np.min(ocaps):>12.2f} "
                f"{time.perf_counter() - t:>5.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
