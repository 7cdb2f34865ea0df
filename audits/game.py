"""The audit's membership game: shadow pipelines as targets, with membership the audit drew.

Design (docs/audit.md, "The game"). ``keep[k, n]`` is an independent fair coin per shadow pipeline
k and record n. The K shadows are split into two folds by parity. In fold f, the pipelines of
that fold are the *targets* and the other fold's pipelines are the *references*: every attack
scores each target's records using only the references' outputs and ``keep`` rows. A guess is a
(target, record) pair; its label is the target's coin. Nothing that scores a target reads that
target's coins, and the references' coins are independent of them, so when the pipeline does not
leak membership the labels are independent of the scores: exactly the null of the tests in
``stats`` and the assumption of the one-run ε lower bound (Steinke, Nasr, Jagielski 2023).

Why two folds and not leave-one-out: with leave-one-out, target k's score of record n depends on
the coins of the same record in the other pipelines, which are themselves labels of other guesses;
the correct-guess indicators of one record are then dependent, and a pure-noise mechanism can make
them all right or all wrong together (e.g. with 2 shadows, "guess that record n is IN for me iff it
is IN for the other pipeline"). That breaks the binomial (and hypergeometric) null. Within a fold
no label is used to score another guess of the same fold. The two folds are dependent on each
other, so each is tested on its own and the two p-values are combined by Bonferroni
(p = min(1, 2·min(p₀, p₁))); ε bounds are computed per fold at α/(2·family) and the larger is
reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rcig_release.audits import metrics, stats
from rcig_release.audits.scoring import score_targets

FPRS = (0.01, 0.001)
N_FOLDS = 2


def folds(n_shadows: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(targets, references) per fold: the even-numbered shadows, then the odd-numbered ones."""
    if n_shadows < 2 or n_shadows % 2:
        raise ValueError("the game needs an even number of shadows >= 2")
    even, odd = np.arange(0, n_shadows, 2), np.arange(1, n_shadows, 2)
    return [(even, odd), (odd, even)]


def draw_keep(n_shadows: int, n_records: int, seed: int) -> np.ndarray:
    """The game's coins, ``keep [K, N]``, as the audit draws them from its seed (``[seed, 2]``):
    independent fair coins (``shadows.make_keep``). The release re-draws them from the recorded
    seed and compares (``rcig_release.release.recompute``)."""
    from rcig_release.audits.shadows import make_keep

    return make_keep(n_shadows, n_records, np.random.default_rng([seed, 2]))


def record_groups(
    record_class: np.ndarray, init: np.ndarray, n_classes: int, *, with_all: bool = True
) -> dict[str, np.ndarray]:
    """The game's groups over its N records (members first, then non-members): ``all``, ``init``
    (the records a real initialisation started from, when there are any) and ``class_<c>`` for
    every class, in that order. ``record_class`` int [N], ``init`` bool [N]."""
    record_class, init = np.asarray(record_class), np.asarray(init, bool)
    g: dict[str, np.ndarray] = {f"class_{c}": record_class == c for c in range(n_classes)}
    if init.any():
        g = {"init": init, **g}
    return {"all": np.ones(len(record_class), bool), **g} if with_all else g


def play(
    names: tuple[str, ...],
    sl: np.ndarray,
    near: dict[str, np.ndarray] | None,
    keep: np.ndarray,
    y_q: np.ndarray,
    n_rec: int,
    *,
    rmia_a: float | None = None,
    rmia_gamma: float = 1.0,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every shadow scored as a target by its fold's references: scores ``[K, N]`` per attack."""
    K = sl.shape[0]
    out: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {"folds": [], "attack_seconds": 0.0}
    for f, (tg, rf) in enumerate(folds(K)):
        tnear = None if near is None else {k: v[tg] for k, v in near.items()}
        sc, inf = score_targets(
            names,
            sl[tg],
            tnear,
            sl[rf],
            keep[rf],
            y_q,
            n_rec,
            rmia_a=rmia_a,
            rmia_gamma=rmia_gamma,
            seed=seed + f,
        )
        for name, s in sc.items():
            out.setdefault(name, np.zeros((K, n_rec)))[tg] = s
        info["folds"].append(
            {
                "targets": tg.tolist(),
                "references": rf.tolist(),
                "lira_variance": inf.get("lira_variance"),
                "rmia_a": inf.get("rmia_a"),
            }
        )
        info["attack_seconds"] += inf["attack_seconds"]
    return out, info


def _fold_stats(
    s_in: np.ndarray, s_out: np.ndarray, *, delta: float, alpha_eps: float | None
) -> dict[str, Any]:
    r: dict[str, Any] = {
        "n_in": int(s_in.size),
        "n_out": int(s_out.size),
        "auc": stats.auc_test(s_in, s_out),
    }
    r["tpr_at_fpr"] = {str(f): stats.tpr_test(s_in, s_out, f) for f in FPRS}
    if alpha_eps is not None and s_in.size and s_out.size:
        from rcig_release.audits import epsilon

        r["epsilon"] = epsilon.epsilon_report(
            s_in, s_out, delta=delta, alpha=alpha_eps, family_size=1
        )
    return r


def _combine(ps: list[float | None]) -> float | None:
    """Bonferroni over the folds: valid whatever their dependence."""
    known = [p for p in ps if p is not None]
    if len(known) < len(ps):
        return None
    return float(min(1.0, len(known) * min(known)))


def group_statistics(
    scores: np.ndarray, keep: np.ndarray, mask: np.ndarray, *, delta: float, alpha_eps: float | None
) -> dict[str, Any]:
    """One attack on one group of records (``mask`` over N): per-fold tests, their combination,
    and descriptive figures over all K·|group| guesses."""
    fl = folds(scores.shape[0])
    per = []
    for tg, _ in fl:
        s, lab = scores[tg][:, mask], keep[tg][:, mask]
        per.append(_fold_stats(s[lab], s[~lab], delta=delta, alpha_eps=alpha_eps))
    s_all, lab_all = scores[:, mask].reshape(-1), keep[:, mask].reshape(-1)
    pooled = metrics.attack_metrics(s_all, lab_all) if lab_all.any() and (~lab_all).any() else None
    out: dict[str, Any] = {
        "n_guesses": int(lab_all.size),
        "n_in": int(lab_all.sum()),
        "auc": None if pooled is None else pooled["auc"],
        "auc_ci": None if pooled is None else pooled["auc_ci"],
        "tpr_at_fpr": None if pooled is None else pooled["tpr_at_fpr"],
        "p_value": {"auc": _combine([p["auc"]["p_value"] for p in per])},
        "folds": per,
    }
    for f in FPRS:
        out["p_value"][f"tpr_at_fpr_{f}"] = _combine(
            [p["tpr_at_fpr"][str(f)]["p_value"] for p in per]
        )
    if alpha_eps is not None:
        eps = [e for p in per if (e := p.get("epsilon")) is not None]
        if len(eps) == len(per):
            best = max(eps, key=lambda e: e["epsilon_lower_bound"])
            out["epsilon_lower_bound"] = best["epsilon_lower_bound"]
            out["max_epsilon"] = max(e["max_epsilon"] for e in eps)
            out["epsilon_saturated"] = bool(best["saturated"])
    return out


def statistics(
    scores: Mapping[str, np.ndarray],
    keep: np.ndarray,
    groups: Mapping[str, np.ndarray],
    *,
    delta: float,
    alpha: float,
    epsilon_groups: tuple[str, ...] = ("all", "init"),
) -> dict[str, Any]:
    """The game's figures per attack and group. ε lower bounds are computed for the groups in
    ``epsilon_groups``, each at α/(family) with family = attacks × those groups × folds, so the
    largest reported bound holds at confidence 1 − α jointly."""
    eps_groups = [g for g in groups if g in epsilon_groups]
    family = max(1, len(scores) * len(eps_groups) * N_FOLDS)
    out: dict[str, Any] = {
        "attacks": {},
        "epsilon": {
            "delta": delta,
            "confidence": 1 - alpha,
            "family_size": family,
            "alpha_per_bound": alpha / family,
            "groups": eps_groups,
            "correction": "Bonferroni over attacks x groups x folds",
        },
    }
    for name, s in scores.items():
        out["attacks"][name] = {
            "groups": {
                g: group_statistics(
                    s, keep, m, delta=delta, alpha_eps=alpha / family if g in eps_groups else None
                )
                for g, m in groups.items()
            }
        }
    return out
