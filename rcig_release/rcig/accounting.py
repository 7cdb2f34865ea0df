"""Privacy accounting of DP-RCIG with the maintained ``dp_accounting`` package (docs/dp.md).

One outer step releases a Poisson-subsampled Gaussian sum (sampling rate q, noise multiplier σ,
clip norm C; ε does not depend on C). ``steps`` such steps are one
``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), steps)``, accounted with the
privacy-loss-distribution (PLD) accountant under add/remove-one adjacency. The same accountant
(discretisation ``DISCRETIZATION``) calibrates σ and reports ε, so the reported ε of a calibrated
σ is at most the target (``calibrate_dp_mechanism`` guarantees a non-positive gap).

Example:
    >>> s = calibrate_noise(4.0, 1e-5, 0.25, 3)
    >>> epsilon_for(s, 1e-5, 0.25, 3) <= 4.0
    True
"""

from __future__ import annotations

import functools
import importlib.metadata

import dp_accounting
from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant

ACCOUNTANT = "dp_accounting PLD"
# What a DP run's ε is about, as run.json records it: the only vocabulary this accountant (and so
# audit, release and verify) can recompute. rcig/dp.record writes it; release/dp.FIXED checks it.
GUARANTEE = {
    "sampling": "poisson",
    "neighbouring": "add_remove_one",
    "unit": "one training image",
    "accountant": ACCOUNTANT,
}
# PLD grid of privacy-loss values. The estimate is pessimistic (an upper bound) at any grid;
# 1e-3 is within 1e-3 of 1e-4's ε on the MNIST configuration (q = 128/60000, 1300 steps,
# σ = 0.6: 2.5599 against 2.5595) and 10x faster (0.8 s against 8 s per evaluation).
DISCRETIZATION = 1e-3
TOLERANCE = 1e-4  # on σ, in calibration


def accountant_version() -> str:
    return importlib.metadata.version("dp-accounting")


def make_accountant() -> PLDAccountant:
    return PLDAccountant(
        dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE,
        value_discretization_interval=DISCRETIZATION,
    )


def event(noise_multiplier: float, sampling_rate: float, steps: int) -> dp_event.DpEvent:
    """``steps`` Poisson-subsampled Gaussian mechanisms (one per outer step)."""
    return dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(sampling_rate, dp_event.GaussianDpEvent(noise_multiplier)),
        int(steps),
    )


@functools.lru_cache(maxsize=64)  # pure; a run asks again on resume and per shadow
def epsilon_for(noise_multiplier: float, delta: float, sampling_rate: float, steps: int) -> float:
    """ε at ``delta`` after ``steps`` steps of noise multiplier σ and sampling rate q."""
    if steps == 0:
        return 0.0
    return float(
        make_accountant().compose(event(noise_multiplier, sampling_rate, steps)).get_epsilon(delta)
    )


@functools.lru_cache(maxsize=64)
def calibrate_noise(epsilon: float, delta: float, sampling_rate: float, steps: int) -> float:
    """The smallest σ (within ``TOLERANCE``) whose ``steps`` steps are (ε, δ)-DP."""
    return float(
        dp_accounting.calibrate_dp_mechanism(
            make_accountant, lambda s: event(s, sampling_rate, steps), epsilon, delta, tol=TOLERANCE
        )
    )
