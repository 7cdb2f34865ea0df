"""The gate's error rates at the audit's default sizes, by simulating whole audit games.

Each simulated audit draws the game's membership coins (K shadows x N records, 10 init records),
makes every attack's scores, runs the audit's own statistics (``game.statistics``) and the policy
(``decision.evaluate_policy``), and records whether the privacy rules pass. Scenarios:

* ``null``: every attack's scores independent of membership (a release at chance). The attacks'
  scores are correlated with each other (one shared component, rho = 0.6), as attacks reading the
  same networks are. Target: the default policy passes all privacy rules in >= 95 % of audits.
* ``planted``: the ``--steps 0 --init real`` release: a pipeline's released images are its init
  images, so an init record IN for a pipeline is at pixel distance 0 from a released image; the
  model-based attacks see it as a training image of a 10-image set (+3 logit-confidence units).
* ``displaced``: one displaced init image per class: each released image is its init image plus
  Gaussian noise of RMS 0.09. Distances are real: the nearest-image attack's distances are computed
  on sklearn's digits (8x8) for every pipeline; model-based attacks get no signal (conservative).
  Target for both leaks: refused in >= 99 % of audits.

Also printed: the power of every test rule of the policy at these sizes (decidability).

    python benchmarks/bench_gate.py --sims 2000 --records 360            # digits' default sizes
    python benchmarks/bench_gate.py --sims 2000 --records 1000           # 500 + 500 records
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from rcig_release.audits import game
from rcig_release.audits import stats as power
from rcig_release.release.decision import evaluate_policy
from rcig_release.release.policy import load_policy

ATTACKS = ("loss", "shadow", "lira_online", "lira_offline", "rmia", "nearest", "nearest_feature")
ROOT = Path(__file__).resolve().parents[1]


def digits_pixels() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).reshape(len(d.images), -1).astype(np.float64), d.target


def rms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS distance of every row of a to every row of b."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    return np.sqrt(np.maximum(d2, 0) / a.shape[1])


def simulate(
    scenario: str,
    K: int,
    N: int,
    n_init: int,
    rng: np.random.Generator,
    pix: tuple[np.ndarray, np.ndarray],
) -> tuple[dict, np.ndarray, dict]:
    keep = rng.random((K, N)) < 0.5
    common = rng.standard_normal((K, N))
    scores = {a: 0.6 * common + 0.8 * rng.standard_normal((K, N)) for a in ATTACKS}
    groups = {"all": np.ones(N, bool)}
    if scenario == "null":
        return scores, keep, groups
    init = np.zeros(N, bool)
    init[:n_init] = True
    groups["init"] = init
    if scenario == "planted":
        for a in ("nearest", "nearest_feature"):
            scores[a][:, :n_init] = np.where(keep[:, :n_init], 100.0, scores[a][:, :n_init])
        for a in ("loss", "shadow", "lira_online", "lira_offline", "rmia"):
            scores[a][:, :n_init] += 3.0 * keep[:, :n_init]
        return scores, keep, groups
    # displaced: real digits distances. Records 0..9 are one init record per class; a pipeline
    # releases, per class, its init image + RMS-0.09 noise: the audited init record when IN,
    # another image of that class otherwise. Score = -distance to the nearest released image.
    x, y = pix
    recs = rng.choice(len(x), N, replace=False)
    recs[:n_init] = [rng.choice(np.flatnonzero(y == c)) for c in range(n_init)]
    near = np.empty((K, N))
    for k in range(K):
        rel = []
        for c in range(n_init):
            src = recs[c] if keep[k, c] else rng.choice(np.setdiff1d(np.flatnonzero(y == c), recs))
            rel.append(np.clip(x[src] + 0.09 * rng.standard_normal(x.shape[1]), 0, 1))
        near[k] = rms(x[recs], np.stack(rel)).min(1)
    scores["nearest"] = -near
    scores["nearest_feature"] = -near + 0.02 * rng.standard_normal((K, N))
    return scores, keep, groups


def privacy_passed(decision) -> bool:
    return all(
        r.passed for r in decision.rules if r.name.startswith(("game.", "init.records_audited"))
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sims", type=int, default=2000)
    ap.add_argument("--shadows", type=int, default=16)
    ap.add_argument("--records", type=int, default=360)
    ap.add_argument("--n-init", type=int, default=10)
    ap.add_argument("--policy", default=str(ROOT / "policies" / "default.toml"))
    ap.add_argument("--scenarios", default="null,planted,displaced")
    ap.add_argument("--leak-sims", type=int, default=None, help="sims for the leak scenarios")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    policy = load_policy(args.policy)
    pix = digits_pixels()
    rows = []
    for scenario in args.scenarios.split(","):
        n = args.sims if scenario == "null" or args.leak_sims is None else args.leak_sims
        rng = np.random.default_rng([args.seed, len(scenario)])
        passed, t0, failed_names = 0, time.perf_counter(), {}
        for _ in range(n):
            scores, keep, groups = simulate(
                scenario, args.shadows, args.records, args.n_init, rng, pix
            )
            stats = game.statistics(scores, keep, groups, delta=1e-8, alpha=0.01)
            real = scenario != "null"
            audit = {
                "game": stats,
                "n_shadows": args.shadows,
                "init": {
                    "mode": "real" if real else "noise",
                    "n_init_records": args.n_init if real else 0,
                    "init_aware_shadows": real,
                },
            }
            d = evaluate_policy(
                {"init": {"mode": "real" if real else "noise"}},
                {"accuracy_mean": 1.0},
                audit,
                policy,
            )
            ok = privacy_passed(d)
            passed += ok
            for r in d.failed:
                failed_names[r.name] = failed_names.get(r.name, 0) + 1
            if (_ + 1) % 200 == 0:
                print(f"  {scenario}: {_ + 1} audits, {passed} passed", flush=True)
        sec = (time.perf_counter() - t0) / n
        rows.append((scenario, n, passed / n, 1 - passed / n, sec, failed_names))
        print(f"{scenario}: {passed} of {n} passed ({sec:.2f} s per audit)", flush=True)
    print(
        f"policy {Path(args.policy).name}: K={args.shadows} shadows, N={args.records} records, "
        f"{args.n_init} init records"
    )
    print("| scenario | audits | passed | refused | s/audit | most frequent failed rules |")
    print("|---|---|---|---|---|---|")
    for sc, n, p, r, sec, names in rows:
        top = ", ".join(f"{k} ({v})" for k, v in sorted(names.items(), key=lambda kv: -kv[1])[:3])
        print(f"| {sc} | {n} | {p:.4f} | {r:.4f} | {sec:.2f} | {top or '-'} |")
    # decidability: the power of every test rule at these sizes (one simulated null audit)
    scores, keep, groups = simulate(
        "planted", args.shadows, args.records, args.n_init, np.random.default_rng(1), pix
    )
    st = game.statistics(scores, keep, groups, delta=1e-8, alpha=0.01)
    d = evaluate_policy(
        {"init": {"mode": "real"}},
        {"accuracy_mean": 1.0},
        {
            "game": st,
            "n_shadows": args.shadows,
            "init": {"mode": "real", "n_init_records": args.n_init, "init_aware_shadows": True},
        },
        policy,
    )
    print(
        "\n| rule (attack loss; the same sizes for every attack) | α per test | decidability "
        "(the gate's power) | binormal ROC | old fixed-threshold formula |"
    )
    print("|---|---|---|---|---|")
    for r in d.rules:
        if not r.name.startswith("game.loss"):
            continue
        if r.comparison != "p >":
            print(f"| {r.name} | - | {r.note} | | |")
            continue
        key = r.name.split("].", 1)[1]
        group = r.name[r.name.index("[") + 1 : r.name.index("]")]
        lim = policy.overall if group == "all" else policy.groups.limits
        extra = ["", ""]
        fpr = {"tpr_at_fpr_0.01": 0.01, "tpr_at_fpr_0.001": 0.001}.get(key)
        if fpr is not None:
            effect = getattr(lim, "detect_" + key.replace("0.0", "0_0"))
            counts = [
                (f["tpr_at_fpr"][str(fpr)]["n_in"], f["tpr_at_fpr"][str(fpr)]["n_out"])
                for f in st["attacks"]["loss"]["groups"][group]["folds"]
            ]
            a = r.limit / len(counts)
            extra = [
                f"{max(power.tpr_power(i, o, fpr, effect, a, 'binormal') for i, o in counts):.4f}",
                f"{max(power.tpr_power_fixed(i, o, fpr, effect, a) for i, o in counts):.4f}",
            ]
        print(
            f"| {r.name} | {r.limit:.3g} | {r.note.split('; ', 1)[-1]} | {extra[0]} | {extra[1]} |"
        )


if __name__ == "__main__":
    main()
