"""Every attack's scores for one or more target pipelines, given reference shadows.

``score_targets`` is used twice: on the custodian's release (targets = the release's networks,
references = all shadows) and in the game (targets = one fold's shadows, references = the other
fold's). A reference shadow's ``keep`` row is all an attack may know about membership; the
targets' own rows are never read here. **Higher score = more likely member.**
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from rcig_release.audits import attacks as A
from rcig_release.audits import signals


def score_targets(
    names: tuple[str, ...],
    tl: np.ndarray,
    near: dict[str, np.ndarray] | None,
    rl: np.ndarray,
    ref_keep: np.ndarray,
    y_q: np.ndarray,
    n_rec: int,
    *,
    rmia_a: float | None = None,
    rmia_gamma: float = 1.0,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Scores ``[T, N]`` per attack.

    Args:
      names: attacks to run (``nearest`` also yields ``nearest_feature``).
      tl: target logits ``[T, M, A, Q, C]`` on the queries (the N records, then the population).
      near: the targets' nearest-image distances ``{"pixel": [T, N], "feature": [T, M, N]}``, or
        None (no released images: the nearest attacks are skipped).
      rl: reference shadows' logits ``[R, M, A, Q, C]``; ``ref_keep``: their ``[R, N]`` rows.
      y_q: labels of the queries; ``n_rec``: the first ``n_rec`` queries are the records.
      rmia_a: RMIA's offline ``a``; None: tuned on the references (attacking references with the
        other references).
    """
    clock = time.perf_counter()
    y_rec = y_q[:n_rec]
    T = tl.shape[0]
    info: dict[str, Any] = {}
    out: dict[str, list[np.ndarray]] = {}
    use_global = len(rl) < A.GLOBAL_VARIANCE_BELOW
    info["lira_variance"] = "shared global" if use_global else "per-example"
    phi_r = signals.logit_confidence(rl, y_q).mean(axis=1)[:, :, :n_rec]  # [R, A, N]
    if "shadow" in names:
        feats = np.stack([A.shadow_features(rl[k][:, :, :n_rec], y_rec) for k in range(len(rl))])
        clf = A.fit_shadow_classifier(feats, ref_keep, seed=seed)
    if "rmia" in names:
        pr = signals.true_prob(rl, y_q).mean(axis=(1, 2))  # [R, Q]
        a = rmia_a if rmia_a is not None else A.tune_rmia_a(pr[:, :n_rec], ref_keep, pr[:, n_rec:])
        info["rmia_a"] = a
    for t in range(T):
        z = tl[t]
        phi_t = signals.logit_confidence(z, y_q).mean(axis=0)[:, :n_rec]  # [A, N]
        if "loss" in names:
            out.setdefault("loss", []).append(
                A.loss_attack(signals.cross_entropy(z[:, 0, :n_rec], y_rec))
            )
        if "shadow" in names:
            out.setdefault("shadow", []).append(
                A.shadow_scores(clf, A.shadow_features(z[:, :, :n_rec], y_rec))
            )
        if "lira_online" in names:
            out.setdefault("lira_online", []).append(
                A.lira_online(phi_t, phi_r, ref_keep, global_variance=use_global)
            )
        if "lira_offline" in names:
            out.setdefault("lira_offline", []).append(
                A.lira_offline(phi_t, phi_r, ref_keep, global_variance=use_global)
            )
        if "rmia" in names:
            pt = signals.true_prob(z, y_q).mean(axis=(0, 1))  # [Q]
            out.setdefault("rmia", []).append(
                A.rmia_offline(
                    pt[:n_rec],
                    pr[:, :n_rec],
                    ref_keep,
                    pt[n_rec:],
                    pr[:, n_rec:],
                    a=a,
                    gamma=rmia_gamma,
                )
            )
        if "nearest" in names and near is not None:
            out.setdefault("nearest", []).append(A.nearest_attack(near["pixel"][t]))
            out.setdefault("nearest_feature", []).append(A.nearest_attack(near["feature"][t]))
    info["attack_seconds"] = time.perf_counter() - clock
    return {k: np.stack(v) for k, v in out.items()}, info
