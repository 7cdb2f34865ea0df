"""The differential-privacy statement of a DP run, as audit, release and verify read it.

A DP run's run.json holds a ``dp`` object with exactly the keys of ``DP_KEYS`` (issue #13; a
DP-feature-means run, ``dp_mechanism`` "features", also ``FEATURES_KEYS`` and reads the shared
keys as one release: sampling "none", rate 1, one step); a run without DP has no ``dp`` key.
This module:

- ``validate_dp``: every key present, of the right type and range, and the fixed-vocabulary keys
  (sampling, neighbouring relation, unit of privacy, accountant) equal to what this tool can
  recompute; anything else is an ``InputError`` (a malformed privacy claim is never carried on).
- ``epsilon_for``: the mechanism's own accounting function (``rcig_release.rcig.accounting``,
  dp_accounting's PLD accountant), re-exported: ``verify`` recomputes ε exactly as distill did.
- ``check_epsilon``: the recorded ε against ``epsilon_for`` (relative tolerance ``EPS_RTOL``).
- ``audit_consistency``: the audit's ``dp`` section against the run's statement: the audit must be
  of this statement, and its empirical ε lower bound must not exceed the proven ε (if it does, the
  audit's verdict is ``dp-violation``: a bug or a broken assumption, never a privacy result).
- ``guarantee`` / ``statement``: what the card, provenance, croissant and verdict state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeGuard

from rcig_release.errors import InputError
from rcig_release.rcig.accounting import (
    GUARANTEE,
    accountant_version,
    epsilon_for,
)

DP_KEYS = (
    "epsilon",
    "target_epsilon",
    "delta",
    "noise_multiplier",
    "clip_norm",
    "sampling_rate",
    "steps",
    "expected_batch_size",
    "max_batch_size",
    "sampling",
    "neighbouring",
    "unit",
    "mechanism",
    "accountant",
    "accountant_version",
    "preprocessing",
)
# The vocabulary this tool can recompute and state; another value is refused, not re-described.
FIXED = GUARANTEE
# DP feature means (``--dp-mechanism features``, rcig/dpstat.py): the same keys read as one
# release of a sum over every training image (sampling "none", rate 1, one step, batch N), plus
# the mechanism's own. A record carries "dp_mechanism" only for this mechanism.
FEATURES = "features"
FEATURES_KEYS = ("dp_mechanism", "networks", "count_weight", "released_shape")
FEATURES_FIXED = {**GUARANTEE, "sampling": "none"}


def is_features(dp: Any) -> bool:
    return isinstance(dp, Mapping) and dp.get("dp_mechanism") == FEATURES


def keys_of(dp: Any) -> tuple[str, ...]:
    """The exact key set of ``dp``'s mechanism."""
    return DP_KEYS + FEATURES_KEYS if is_features(dp) else DP_KEYS


NEIGHBOURING_TEXT = {"add_remove_one": "add or remove one training image"}
# Recorded ε against the recomputation: the PLD accountant is deterministic for given inputs and
# version, so only float formatting separates them.
EPS_RTOL = 1e-6
# The audit's lower bound may exceed the proven ε by the ε helper's root-search tolerance
# (jax-privacy stops at xtol = 1e-6) before that counts as a violation.
VIOLATION_TOL = 1e-6
VERDICT_CONSISTENT = "consistent"
VERDICT_VIOLATION = "dp-violation"
VIOLATION_MEANING = (
    "this is a bug in the mechanism or its accounting, or a broken assumption (the "
    "shadows did not run the accounted mechanism, sampling was not Poisson, a "
    "record entered outside the mechanism), not a privacy measurement"
)


def _real(x: Any) -> TypeGuard[int | float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def validate_dp(dp: Any, where: str = "run.json dp") -> dict:
    """``dp`` checked (exact keys, types, ranges, fixed vocabulary) and returned as a plain dict."""
    if not isinstance(dp, Mapping):
        raise InputError(f"{where} must be an object")
    keys = keys_of(dp)
    missing = [k for k in keys if k not in dp]
    if missing:
        raise InputError(f"{where}: missing key {missing[0]}")
    extra = sorted(str(k) for k in dp if k not in keys)
    if extra:
        raise InputError(f"{where}: unknown key {extra[0]}")
    for key in ("epsilon", "target_epsilon", "noise_multiplier", "clip_norm"):
        if not (_real(dp[key]) and dp[key] > 0):
            raise InputError(f"{where}: {key} must be a finite number > 0")
    features = is_features(dp)
    for key in ("delta",) if features else ("delta", "sampling_rate"):
        if not (_real(dp[key]) and 0 < dp[key] < 1):
            raise InputError(f"{where}: {key} must be a number in (0, 1)")
    if features:
        _validate_features(dp, where)
    for key in ("steps", "max_batch_size"):
        if not (_count(dp[key]) and dp[key] >= 1):
            raise InputError(f"{where}: {key} must be an integer >= 1")
    if not (_real(dp["expected_batch_size"]) and dp["expected_batch_size"] > 0):
        raise InputError(f"{where}: expected_batch_size must be a finite number > 0")
    for key in ("mechanism", "accountant_version", "preprocessing", *FIXED):
        if not isinstance(dp[key], str) or not dp[key].strip():
            raise InputError(f"{where}: {key} must be a non-empty string")
    for key, want in (FEATURES_FIXED if features else FIXED).items():
        if dp[key] != want:
            raise InputError(f"{where}: {key} must be {want!r} (the only one this tool can check)")
    return dict(dp)


def _validate_features(dp: Mapping, where: str) -> None:
    """The one-release reading of the shared keys, and the mechanism's own keys."""
    if not (dp["sampling_rate"] == 1 and _real(dp["sampling_rate"]) and dp["steps"] == 1):
        raise InputError(f"{where}: a features release has sampling_rate 1 and steps 1")
    if dp["max_batch_size"] != dp["expected_batch_size"]:
        raise InputError(f"{where}: a features release has max_batch_size = expected_batch_size")
    if not (_count(dp["networks"]) and dp["networks"] >= 1):
        raise InputError(f"{where}: networks must be an integer >= 1")
    if not (_real(dp["count_weight"]) and 0 < dp["count_weight"] < 1):
        raise InputError(f"{where}: count_weight must be a number in (0, 1)")
    shape = dp["released_shape"]
    if not (
        isinstance(shape, (list, tuple))
        and len(shape) == 2
        and all(_count(v) and v >= 1 for v in shape)
    ):
        raise InputError(f"{where}: released_shape must be two integers >= 1")


def check_epsilon(dp: Mapping, where: str = "run.json dp") -> str | None:
    """None when the recorded ε is the accountant's ε for the recorded σ, q, steps, δ (features:
    one Gaussian release of noise multiplier σ at δ); else why not."""
    if is_features(dp):
        from rcig_release.rcig import dpstat

        eps = dpstat.epsilon_for(float(dp["noise_multiplier"]), float(dp["delta"]))
    else:
        eps = epsilon_for(
            float(dp["noise_multiplier"]),
            float(dp["delta"]),
            float(dp["sampling_rate"]),
            int(dp["steps"]),
        )
    if not math.isclose(float(dp["epsilon"]), eps, rel_tol=EPS_RTOL, abs_tol=0.0):
        version = ""
        if dp.get("accountant_version") != accountant_version():
            version = (
                f" (recorded with dp-accounting {dp.get('accountant_version')}, recomputed "
                f"with {accountant_version()})"
            )
        return (
            f"{where}: epsilon {float(dp['epsilon']):.6g} is not what the accountant gives for "
            f"noise_multiplier {dp['noise_multiplier']}, sampling_rate {dp['sampling_rate']}, "
            f"steps {dp['steps']}, delta {dp['delta']}: {eps:.6g}{version}"
        )
    return None


def violates(lower_bound: float, proven: float) -> bool:
    """The audit's lower bound exceeds the proven ε (beyond the root-search tolerance)."""
    return lower_bound > proven + VIOLATION_TOL


def audit_consistency(run_dp: Mapping | None, audit: Mapping) -> tuple[str | None, str | None]:
    """(input problem, violation) of the audit's ``dp`` section against the run's statement.

    Input problem: the audit has no dp section for a DP run (an audit from before DP, or of
    another run), has one for a run without DP, or compared another (ε, δ). Violation: the audit's
    empirical lower bound exceeds the proven ε, recomputed from the numbers (the recorded verdict
    and ``consistent`` flag are not trusted, and a recorded violation stands even if the numbers
    were edited to hide it)."""
    a = audit.get("dp")
    if run_dp is None:
        if a is not None:
            return "audit.json has a dp section but run.json has no dp statement", None
        return None, None
    if not isinstance(a, Mapping):
        return (
            "the run is differentially private but its audit did not compare its empirical ε "
            "lower bound with the proven ε (an audit from before DP-RCIG); re-run rcig-release "
            "audit"
        ), None
    lb, proven, delta = (
        a.get("empirical_epsilon_lower_bound"),
        a.get("proven_epsilon"),
        a.get("delta"),
    )
    if _real(lb) and lb < 0:
        return "audit.json dp: empirical_epsilon_lower_bound must be >= 0", None
    if not (_real(lb) and _real(proven) and _real(delta)):
        return (
            "audit.json dp: empirical_epsilon_lower_bound, proven_epsilon and delta must be numbers",
            None,
        )
    if proven != run_dp["epsilon"] or delta != run_dp["delta"]:
        return (
            f"audit.json dp compared ε {proven} at δ {delta}, but run.json states ε "
            f"{run_dp['epsilon']} at δ {run_dp['delta']} (a stale audit? re-run it)"
        ), None
    recorded = a.get("verdict") == VERDICT_VIOLATION or a.get("consistent") is False
    if violates(float(lb), float(proven)) or recorded:
        return None, (
            f"the audit's verdict is {VERDICT_VIOLATION}: empirical ε lower bound "
            f"{float(lb):.4g} > proven ε {float(proven):.4g} at δ {delta:g}; "
            f"{VIOLATION_MEANING}"
        )
    return None, None


def guarantee(dp: Mapping) -> dict:
    """The guarantee as the bundle states it (provenance, verdict, croissant): the run's statement
    in a fixed key order."""
    return {k: dp[k] for k in keys_of(dp)}


def audit_check(audit_dp: Mapping | None) -> dict | None:
    """The part of the audit's dp section the verdict repeats."""
    if not isinstance(audit_dp, Mapping):
        return None
    return {
        k: audit_dp.get(k)
        for k in (
            "empirical_epsilon_lower_bound",
            "largest_showable_epsilon",
            "confidence",
            "delta",
            "consistent",
            "verdict",
        )
    }


def statement(dp: Mapping) -> str:
    """One plain sentence of the guarantee (card, croissant); numbers via ``%g``-style formatting."""
    if is_features(dp):
        rows, cols = dp["released_shape"]
        return (
            f"({format_number(dp['epsilon'])}, {format_number(dp['delta'])})-differentially private with respect to "
            f"{NEIGHBOURING_TEXT.get(dp['neighbouring'], dp['neighbouring'])} (unit of privacy: "
            f"{dp['unit']}), by the {dp['mechanism']} mechanism: one Gaussian release of a "
            f"{rows} × {cols} statistic with noise multiplier {format_number(dp['noise_multiplier'])} and "
            f"clip norm {format_number(dp['clip_norm'])}, every training image used once (no sampling, no "
            f"composition); ε from the {dp['accountant']} accountant (dp-accounting "
            f"{dp['accountant_version']})"
        )
    return (
        f"({format_number(dp['epsilon'])}, {format_number(dp['delta'])})-differentially private with respect to "
        f"{NEIGHBOURING_TEXT.get(dp['neighbouring'], dp['neighbouring'])} (unit of privacy: "
        f"{dp['unit']}), by the {dp['mechanism']} mechanism: noise multiplier "
        f"{format_number(dp['noise_multiplier'])}, clip norm {format_number(dp['clip_norm'])}, {dp['sampling']} "
        f"sampling at rate {format_number(dp['sampling_rate'])} for {dp['steps']} steps; ε from the "
        f"{dp['accountant']} accountant (dp-accounting {dp['accountant_version']})"
    )


NO_GUARANTEE = (
    "no differential-privacy guarantee: this release was not made by a differentially "
    "private mechanism; the audit measures leakage empirically, it does not bound it"
)


def format_number(x: Any) -> str:
    """A float to 6 significant digits (``:.6g``), anything else as ``str``: how the DP statement
    and the card write the guarantee's numbers."""
    return f"{x:.6g}" if isinstance(x, float) else str(x)
