"""The power the gate claims for its tests, against end-to-end simulation.

Each simulation draws OUT and IN scores from a stated ROC model, lets ``stats.tpr_test`` place its
own threshold (the (j+1)-th highest OUT score, random), counts and applies the exact test: nothing
is placed relative to the realised threshold. The formula must agree within Monte-Carlo tolerance;
the earlier fixed-threshold formula (``tpr_power_fixed``, written as the broken variant) must not.
"""

import numpy as np
import pytest
from scipy import stats as sps

from rcig_release.audits import stats


def _in_scores(rng, n, fpr, tpr, roc):
    """IN scores whose ROC against OUT ~ U(0, 1) is ``roc`` through (fpr, tpr): P(IN > t) =
    R(1 − t), drawn as 1 − R⁻¹(W) with W uniform."""
    w = rng.random(n)
    if roc == "concave":
        u = np.where(w <= tpr, w * fpr / tpr, fpr + (w - tpr) * (1 - fpr) / (1 - tpr))
    else:
        u = sps.norm.cdf(sps.norm.ppf(w) - (sps.norm.ppf(tpr) - sps.norm.ppf(fpr)))
    return 1.0 - u


def _simulated_tpr_power(n_in, n_out, fpr, tpr, alpha, roc, reps, seed):
    rng = np.random.default_rng(seed)
    rej = 0
    for _ in range(reps):
        out = rng.random(n_out)  # P(OUT > t) = 1 − t: the ROC's FPR axis
        ins = _in_scores(rng, n_in, fpr, tpr, roc)
        rej += stats.tpr_test(ins, out, fpr)["p_value"] <= alpha
    return rej / reps


def _tolerance(p, reps):
    return 4 * np.sqrt(max(p * (1 - p), 0.01) / reps)  # 4 Monte-Carlo standard errors


def test_the_in_score_sampler_has_the_stated_roc():
    rng = np.random.default_rng(0)
    for roc in ("concave", "binormal"):
        ins = _in_scores(rng, 400_000, 0.001, 0.02, roc)
        for u in (0.0003, 0.001, 0.01, 0.2):
            want = stats.roc_curve_model(np.array([u]), 0.001, 0.02, roc)[0]
            assert np.mean(ins > 1 - u) == pytest.approx(want, abs=4 * np.sqrt(want / 4e5) + 1e-4)


@pytest.mark.parametrize(
    "n_in, n_out, fpr, tpr, roc",
    [
        (1440, 1440, 0.001, 0.02, "concave"),  # the case: the default's old 0.1 % rule
        (1440, 1440, 0.001, 0.02, "binormal"),
        (1440, 1440, 0.01, 0.04, "concave"),  # the default's old 1 % rule
        (600, 1200, 0.001, 0.12, "concave"),
    ],
)
def test_tpr_power_matches_end_to_end_simulation_and_the_fixed_threshold_formula_does_not(
    n_in, n_out, fpr, tpr, roc
):
    alpha, reps = 0.04 / 21 / 2, 1200
    sim = _simulated_tpr_power(n_in, n_out, fpr, tpr, alpha, roc, reps, seed=len(roc) + n_in)
    formula = stats.tpr_power(n_in, n_out, fpr, tpr, alpha, roc)
    assert abs(formula - sim) <= _tolerance(sim, reps), (formula, sim)
    if tpr < 0.1:  # where the old formula claimed more than the test can do
        fixed = stats.tpr_power_fixed(n_in, n_out, fpr, tpr, alpha)
        assert abs(fixed - sim) > _tolerance(sim, reps), (fixed, sim)


def test_the_concave_model_is_the_least_favourable_of_the_two():
    for fpr, tpr in ((0.001, 0.02), (0.01, 0.06), (0.001, 0.12)):
        u = np.geomspace(1e-6, 1, 200)
        assert np.all(
            stats.roc_curve_model(u, fpr, tpr, "concave")
            <= stats.roc_curve_model(u, fpr, tpr, "binormal") + 1e-12
        )
        assert stats.tpr_power(1440, 1440, fpr, tpr, 1e-3) <= stats.tpr_power(
            1440, 1440, fpr, tpr, 1e-3, "binormal"
        )


def test_tpr_power_integral_is_converged_and_edge_cases():
    from rcig_release.audits import stats as st

    p = st.tpr_power(1440, 1440, 0.001, 0.12, 7e-4)
    old = st._NODES
    try:
        st._NODES = 16384
        st.tpr_power.cache_clear()
        assert st.tpr_power(1440, 1440, 0.001, 0.12, 7e-4) == pytest.approx(p, abs=1e-4)
    finally:
        st._NODES = old
        st.tpr_power.cache_clear()
    assert st.tpr_power(100, 500, 0.001, 0.5, 0.01) == 0.0  # FPR not resolvable
    assert st.tpr_power(0, 5000, 0.001, 0.5, 0.01) == 0.0
    with pytest.raises(ValueError, match="roc must be"):
        st.tpr_power(100, 5000, 0.001, 0.5, 0.01, "step")


def _simulated_auc_power(n_in, n_out, auc, alpha, model, reps, seed):
    rng = np.random.default_rng(seed)
    rej = 0
    for _ in range(reps):
        out = rng.standard_normal(n_out)
        if model == "binormal":
            ins = rng.standard_normal(n_in) + np.sqrt(2) * sps.norm.ppf(auc)
        else:  # a fraction 2(AUC − ½) of the IN guesses above every OUT, the rest at chance
            ins = np.where(rng.random(n_in) < 2 * auc - 1, 100.0, rng.standard_normal(n_in))
        rej += stats.auc_test(ins, out)["p_value"] <= alpha
    return rej / reps


@pytest.mark.parametrize(
    "n_in, n_out, auc, model",
    [
        (40, 40, 0.75, "binormal"),
        (40, 40, 0.75, "fraction"),
        (30, 50, 0.85, "fraction"),  # the init group's rule, an unbalanced fold
        (1440, 1440, 0.55, "fraction"),
    ],
)
def test_auc_power_matches_end_to_end_simulation(n_in, n_out, auc, model):
    alpha, reps = 0.04 / 28 / 2, 1500
    sim = _simulated_auc_power(n_in, n_out, auc, alpha, model, reps, seed=n_in + int(auc * 100))
    assert abs(stats.auc_power(n_in, n_out, auc, alpha, model) - sim) <= _tolerance(sim, reps)
    # the gate's value is the smaller model's: never above either simulation (up to the noise)
    assert stats.auc_power(n_in, n_out, auc, alpha) <= sim + _tolerance(sim, reps)


def test_the_default_policy_is_decidable_at_digits_default_sizes():
    """A default digits audit (16 shadows, 180 + 180 records, 10 init records; about 1,440 IN and
    1,440 OUT guesses per fold) can pass policies/default.toml: every test is decidable under the
    honest power (whether a release at chance passes is then a matter of the tests' 5 %
    false-refusal rate, measured in benchmarks/bench_gate.py)."""
    from pathlib import Path

    from rcig_release.release.decision import evaluate_policy
    from rcig_release.release.policy import load_policy
    from release_fixtures import simulated_game

    policy = load_policy(Path(__file__).resolve().parents[1] / "policies" / "default.toml")
    for real in (False, True):
        # with a real init, the init group is audited (its records at chance here)
        game = simulated_game(False, records=360, n_init=10, n_classes=10, init_group=real)
        audit = {
            "game": game,
            "n_shadows": 16,
            "init": {"n_init_records": 10 if real else 0, "init_aware_shadows": real},
        }
        d = evaluate_policy(
            {"init": {"mode": "real" if real else "noise"}}, {"accuracy_mean": 0.9}, audit, policy
        )
        notes = [r.note for r in d.rules if r.comparison == "p >"]
        assert len(notes) == (28 if real else 21)
        assert not any("undecidable" in n for n in notes), notes
        assert all(r.passed for r in d.rules if not r.name.startswith("game."))
    # the earlier effects (0.04 at 1 %, 0.02 at 0.1 %) are not decidable at these sizes
    old = load_policy(Path(__file__).resolve().parents[1] / "policies" / "default.toml")
    import dataclasses

    old = dataclasses.replace(
        old,
        overall=dataclasses.replace(
            old.overall, detect_tpr_at_fpr_0_01=0.04, detect_tpr_at_fpr_0_001=0.02
        ),
    )
    d = evaluate_policy({"init": {"mode": "noise"}}, {"accuracy_mean": 0.9}, audit, old)
    und = {r.name.split("].")[1] for r in d.rules if "undecidable" in r.note}
    assert und == {"tpr_at_fpr_0.01", "tpr_at_fpr_0.001"}
