"""Evaluating a release policy: a pure function from (run, eval, audit, policy) to a decision.

One ``Rule`` per check, each with the measured value, the limit, the comparison and the outcome.
Nothing here reads files or private data; the release safety check (which needs the private
training images) lives in ``safety.py``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from typing import Any, Mapping

from rcig_release.release.auditview import baseline, shadow_count, target_accuracy
from rcig_release.release.policy import LimitSet, MetricLimits, Policy

# Ties within this tolerance pass: a limit of 0.6 must not fail on 0.6000000000000001.
_TOL = 1e-9
# The FPR keys of the audit's tpr_at_fpr dicts, and the policy key holding their limit.
_TPR_KEYS = (("0.001", "max_tpr_at_fpr_0_001"), ("0.01", "max_tpr_at_fpr_0_01"))


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    value: Any  # the measured value (None when the audit could not give one)
    limit: Any
    comparison: str  # "<=", ">=", "in", "present"
    passed: bool
    note: str = ""

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "comparison": self.comparison,
            "passed": self.passed,
            "note": self.note,
        }


@dataclasses.dataclass(frozen=True)
class Decision:
    policy_name: str
    policy_sha256: str
    rules: tuple[Rule, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rules)

    @property
    def failed(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if not r.passed)

    def rule(self, name: str) -> Rule:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _upper(ci: Any) -> float | None:
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return _num(ci[1])
    return None


def _le(name: str, value: float | None, limit: float, note: str = "") -> Rule:
    passed = value is not None and value <= limit + _TOL
    return Rule(name, value, limit, "<=", passed, note)


def _metric_rules(prefix: str, metrics: Mapping, ls: LimitSet, limits: MetricLimits) -> list[Rule]:
    """Rules for one attack (or one of its risk groups) against one set of limits."""
    rules: list[Rule] = []
    ci_upper = ls.bound == "ci_upper"

    if limits.max_auc is not None:
        auc = _num(metrics.get("auc"))
        value, note = auc, ""
        if ci_upper:
            up = _upper(metrics.get("auc_ci"))
            if up is not None:
                value, note = up, "95% interval upper end"
            else:
                note = "no interval in the audit; point value"
        if auc is None:
            note = "missing in the audit"
        rules.append(_le(f"{prefix}.auc", value, limits.max_auc, note))

    tprs = metrics.get("tpr_at_fpr") or {}
    cis = metrics.get("tpr_at_fpr_ci") or {}
    for fpr, key in _TPR_KEYS:
        limit = getattr(limits, key)
        if limit is None:
            continue
        name = f"{prefix}.tpr@fpr={fpr}"
        if not isinstance(tprs, Mapping) or fpr not in tprs:
            rules.append(Rule(name, None, limit, "<=", False, "missing in the audit"))
            continue
        point = _num(tprs.get(fpr))
        if point is None:
            ok = ls.unresolved == "pass"
            rules.append(Rule(name, None, limit, "<=", ok, "not resolvable: too few non-members"))
            continue
        value, note = point, ""
        if ci_upper:
            up = _upper(cis.get(fpr)) if isinstance(cis, Mapping) else None
            if up is not None:
                value, note = up, "95% interval upper end"
            else:
                note = "no interval in the audit; point value"
        rules.append(_le(name, value, limit, note))

    if limits.max_epsilon_lower_bound is not None:
        eps = _num(metrics.get("epsilon_lower_bound"))
        rules.append(
            _le(f"{prefix}.epsilon_lower_bound", eps, limits.max_epsilon_lower_bound,
                "" if eps is not None else "missing in the audit")
        )
    return rules


def _init_mode(run_json: Mapping) -> str | None:
    init = run_json.get("init")
    if isinstance(init, Mapping) and isinstance(init.get("mode"), str):
        return init["mode"]
    config = run_json.get("config")
    if isinstance(config, Mapping) and isinstance(config.get("init"), str):
        return config["init"]
    return None


def evaluate_policy(run_json: Mapping, eval_json: Mapping, audit: Mapping, policy: Policy) -> Decision:
    """Applies ``policy`` to one release.

    Args:
      run_json: the run's run.json (only ``init.mode`` / ``config.init`` are read).
      eval_json: the run's eval.json (``accuracy_mean``).
      audit: the run's audit/audit.json (validated by ``inputs.validate_audit``).
      policy: the loaded policy.

    Returns:
      A ``Decision`` with one rule per check, in a stable order: audit strength, init mode, copies,
      utility, then every attack present in the audit (overall, then its matching risk groups).
    """
    rules: list[Rule] = []
    attacks = audit.get("attacks") or {}

    for name in policy.required_attacks:
        ran = isinstance(attacks.get(name), Mapping)
        rules.append(Rule(f"audit.attack_ran.{name}", ran, True, "present", ran,
                          "" if ran else "attack missing from the audit"))
    n_shadows = shadow_count(audit)
    rules.append(Rule("audit.min_shadows", n_shadows, policy.min_shadows, ">=",
                      n_shadows is not None and n_shadows >= policy.min_shadows,
                      "" if n_shadows is not None else "shadow count missing in the audit"))

    mode = _init_mode(run_json)
    rules.append(Rule("init.mode", mode, list(policy.allowed_init_modes), "in",
                      mode in policy.allowed_init_modes,
                      "" if mode is not None else "init mode missing in run.json"))

    copy_check = audit.get("copy_check") or {}
    near = copy_check.get("near_copies")
    near = int(near) if _num(near) is not None else None
    rules.append(Rule("copies.near_copies", near, policy.max_near_copies, "<=",
                      near is not None and near <= policy.max_near_copies))

    acc = _num(eval_json.get("accuracy_mean"))
    rules.append(_ge("utility.accuracy", acc, policy.min_accuracy,
                     "" if acc is not None else "accuracy_mean missing in eval.json"))
    rules.append(_gain_rule(acc, audit, policy.min_gain_over_naive))

    for name in sorted(attacks):
        metrics = attacks[name]
        if not isinstance(metrics, Mapping):
            continue
        limits = policy.overall.limits.merged(policy.per_attack.get(name))
        rules += _metric_rules(f"attack.{name}", metrics, policy.overall, limits)
        groups = metrics.get("groups") or {}
        if not isinstance(groups, Mapping):
            continue
        for group in sorted(groups):
            if not any(fnmatch.fnmatchcase(group, p) for p in policy.groups.patterns):
                continue
            if isinstance(groups[group], Mapping):
                rules += _metric_rules(f"attack.{name}[{group}]", groups[group],
                                       policy.groups.limit_set, policy.groups.limit_set.limits)

    return Decision(policy.name, policy.sha256, tuple(rules))


def _gain_rule(eval_acc: float | None, audit: Mapping, limit: float) -> Rule:
    """Accuracy over the naive release, on the same protocol where the audit gives both numbers."""
    naive, source = target_accuracy(baseline(audit, "naive"))
    if naive is None:
        return Rule("utility.gain_over_naive", None, limit, ">=", False,
                    "naive-release accuracy missing in the audit")
    if source == "targets":
        own, _ = target_accuracy(audit)  # the audit's networks trained on this release
        if own is not None:
            return _ge("utility.gain_over_naive", own - naive, limit, "audit target networks, both sets")
    if eval_acc is None:
        return Rule("utility.gain_over_naive", None, limit, ">=", False, "accuracy_mean missing in eval.json")
    return _ge("utility.gain_over_naive", eval_acc - naive, limit)


def _ge(name: str, value: float | None, limit: float, note: str = "") -> Rule:
    return Rule(name, value, limit, ">=", value is not None and value >= limit - _TOL, note)
