"""Evaluating a release policy: a pure function from (run, eval, audit, policy) to a decision.

One ``Rule`` per check, each with the measured value, the limit, the comparison and the outcome.
Nothing here reads files or private data; the release's memorisation check (which needs the
private images) lives in ``safety.py``.

The privacy rules are read from the audit's *game* (``audit["game"]``, docs/audit.md): for every
attack and every group the policy names, "the attack is at chance" is tested per fold and the
fold p-values are combined (Bonferroni). A test rule fails when its p-value is at most
α_t = (gate.alpha − α_ε) / m, m being the number of test rules and α_ε the audit's budget for its ε
bounds when the policy uses them: so a release whose attacks are all at chance passes every
privacy rule with probability ≥ 1 − gate.alpha. A test rule is *decidable* when, at the audit's
sizes, it would detect an attack at the policy's ``detect_*`` effect size with probability ≥
gate.power; an undecidable rule fails closed, naming the option to raise. The power is
``stats.tpr_power`` (the threshold's FPR integrated over its Beta distribution, the least
favourable concave ROC through the effect) and ``stats.auc_power`` (the smaller of two AUC models);
either fold's test refuses, so the rule's power is at least the larger fold's.

The statistics read here are those ``release`` and ``verify`` recomputed from the audit's raw score
files (``recompute.py``), never ``audit.json``'s own numbers.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Mapping
from typing import Any

from rcig_release.audits import stats
from rcig_release.release.auditview import baseline, shadow_count, target_accuracy
from rcig_release.release.policy import MetricLimits, Policy

# Ties within this tolerance pass: a limit of 0.6 must not fail on 0.6000000000000001.
_TOL = 1e-9
# The game's test keys, the policy key holding their effect size, and the FPR (None: AUC).
_TESTS = (
    ("auc", "detect_auc", None),
    ("tpr_at_fpr_0.01", "detect_tpr_at_fpr_0_01", 0.01),
    ("tpr_at_fpr_0.001", "detect_tpr_at_fpr_0_001", 0.001),
)


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
    demonstration: bool = False  # the policy's [policy] demonstration: not a privacy audit

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


def _le(name: str, value: float | None, limit: float, note: str = "") -> Rule:
    passed = value is not None and value <= limit + _TOL
    return Rule(name, value, limit, "<=", passed, note)


def _raise_hint(group: str) -> str:
    return "--shadows" if group != "all" else "--records or --shadows"


def _fold_counts(g: Mapping, key: str) -> list[tuple[int, int]]:
    out = []
    for f in g.get("folds") or []:
        t = f.get("auc") if key == "auc" else (f.get("tpr_at_fpr") or {}).get(key.split("_")[-1])
        if not isinstance(t, Mapping):
            return []
        n_in, n_out = _int(t.get("n_in")), _int(t.get("n_out"))
        if n_in is None or n_out is None:
            return []
        out.append((n_in, n_out))
    return out


def _int(x: Any) -> int | None:
    v = _num(x)
    return None if v is None else int(v)


def _power(counts: list[tuple[int, int]], effect: float, fpr: float | None, alpha_f: float):
    """The best fold's power to detect ``effect`` (the rule's power: either fold refuses)."""
    powers = [
        stats.auc_power(i, o, effect, alpha_f)
        if fpr is None
        else stats.tpr_power(i, o, fpr, effect, alpha_f)
        for i, o in counts
    ]
    best = max(range(len(powers)), key=lambda i: powers[i])
    return powers[best], best


# the largest shadow count searched for "--shadows N would decide it"
_MAX_SHADOWS = 1024


def shadows_to_decide(
    counts: list[tuple[int, int]],
    shadows: int | None,
    effect: float,
    fpr: float | None,
    alpha_f: float,
    power: float,
) -> int | None:
    """The fewest (even) shadows at which the rule would be decidable, the audit's records kept:
    each fold's IN and OUT guesses grow in proportion to its targets (shadows / 2). None when the
    shadow count is unknown or not even ``_MAX_SHADOWS`` would do."""
    if not shadows or shadows < 2:
        return None

    def ok(k: int) -> bool:
        scaled = [(round(i * k / shadows), round(o * k / shadows)) for i, o in counts]
        return _power(scaled, effect, fpr, alpha_f)[0] >= power - _TOL

    hi = shadows
    while not ok(hi):
        if hi >= _MAX_SHADOWS:
            return None
        hi = min(2 * hi, _MAX_SHADOWS)
    lo = max(2, hi // 2)  # power grows with the guesses: bisect over even counts in (lo, hi]
    while hi - lo > 2:
        mid = (lo + hi) // 4 * 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _test_rule(
    name: str,
    g: Mapping,
    key: str,
    effect: float,
    fpr: float | None,
    alpha_t: float,
    power: float,
    group: str,
    shadows: int | None = None,
) -> Rule:
    """One test of "at chance" from the game, with its decidability. A significant departure from
    chance fails the rule as "leak detected" whatever the power: the test's level holds at any
    size, power only matters for a rule that passes."""
    counts = _fold_counts(g, key)
    p = _num((g.get("p_value") or {}).get(key))
    what = "AUC" if fpr is None else f"TPR at FPR {fpr:g}"
    if not counts:
        return Rule(name, p, alpha_t, "p >", False, "missing in the audit's game")
    alpha_f = alpha_t / len(counts)  # each fold is tested at alpha_t / folds (Bonferroni)
    best, i_best = _power(counts, effect, fpr, alpha_f)
    model = "binormal or partial leak" if fpr is None else "least favourable concave ROC"
    desc = (
        f"{what} {effect:g} detected with power {best:.3f} ({model}; "
        f"{counts[i_best][0]} IN / {counts[i_best][1]} OUT guesses in fold {i_best})"
    )
    observed = (
        _num(g.get("auc")) if fpr is None else _num((g.get("tpr_at_fpr") or {}).get(str(fpr)))
    )
    seen = "" if observed is None else f"observed {what} {observed:.4f}; "
    if p is not None and p <= alpha_t:
        return Rule(name, p, alpha_t, "p >", False, f"leak detected: {seen}{desc}")
    if best < power - _TOL:
        k = shadows_to_decide(counts, shadows, effect, fpr, alpha_f, power)
        decide = (
            f"--shadows {k} would decide it"
            if k is not None
            else f"no --shadows up to {_MAX_SHADOWS} would decide it at these records"
        )
        return Rule(
            name,
            p,
            alpha_t,
            "p >",
            False,
            f"undecidable at these sizes: {desc}, needs {power:g}; raise {_raise_hint(group)} "
            f"({decide})",
        )
    if p is None:
        return Rule(name, None, alpha_t, "p >", False, "p-value missing in the audit's game")
    return Rule(name, p, alpha_t, "p >", p > alpha_t, f"{seen}{desc}")


def _eps_rule(name: str, g: Mapping, limit: float, group: str) -> Rule:
    eps, cap = _num(g.get("epsilon_lower_bound")), _num(g.get("max_epsilon"))
    if eps is None or cap is None:
        return Rule(name, eps, limit, "<=", False, "ε lower bound missing in the audit's game")
    if cap <= limit + _TOL:
        return Rule(
            name,
            eps,
            limit,
            "<=",
            False,
            f"undecidable at these sizes: the largest ε lower bound they can show is "
            f"{cap:.3f}; raise {_raise_hint(group)}",
        )
    sat = " (saturated: the sample size, not a measurement)" if g.get("epsilon_saturated") else ""
    return _le(name, eps, limit, f"largest showable {cap:.3f}{sat}")


def _targets(game: Mapping, policy: Policy) -> list[tuple[str, str, MetricLimits]]:
    """(attack, group, limits) for every attack of the game: group "all" with the overall limits
    (merged with per-attack ones), and every group matching the policy's patterns."""
    out = []
    attacks = got if isinstance(got := game.get("attacks"), Mapping) else {}
    for name in sorted(attacks):
        groups = attacks[name].get("groups") if isinstance(attacks[name], Mapping) else None
        if not isinstance(groups, Mapping):
            continue
        if isinstance(groups.get("all"), Mapping):
            out.append((name, "all", policy.overall.merged(policy.per_attack.get(name))))
        for group in sorted(groups):
            if (
                group != "all"
                and isinstance(groups[group], Mapping)
                and any(fnmatch.fnmatchcase(group, pat) for pat in policy.groups.patterns)
            ):
                out.append((name, group, policy.groups.limits))
    return out


def privacy_rules(audit: Mapping, policy: Policy) -> list[Rule]:
    """The game's rules (tests of chance, their decidability, ε limits)."""
    game = audit.get("game")
    if not isinstance(game, Mapping) or not isinstance(game.get("attacks"), Mapping):
        return [
            Rule(
                "game.present",
                False,
                True,
                "present",
                False,
                "the audit has no membership game (an audit from before it); re-run "
                "rcig-release audit",
            )
        ]
    targets = _targets(game, policy)
    n_tests = sum(
        1 for _, _, lim in targets for _, key, _ in _TESTS if getattr(lim, key) is not None
    )
    uses_eps = any(lim.max_epsilon_lower_bound is not None for _, _, lim in targets)
    eps_info = got if isinstance(got := game.get("epsilon"), Mapping) else {}
    conf = _num(eps_info.get("confidence"))
    alpha_eps = (1.0 - conf) if (uses_eps and conf is not None) else 0.0
    rules: list[Rule] = []
    budget = policy.alpha - alpha_eps
    if uses_eps and (conf is None or budget <= 0):
        rules.append(
            Rule(
                "game.epsilon_confidence",
                conf,
                1 - policy.alpha,
                ">",
                False,
                "the audit's ε bounds do not leave any of the policy's false-refusal "
                "budget for its tests; audit with a smaller --epsilon-alpha",
            )
        )
        budget = policy.alpha
    alpha_t = budget / max(1, n_tests)
    shadows = shadow_count(audit)
    for name, group, lim in targets:
        g = game["attacks"][name]["groups"][group]
        prefix = f"game.{name}[{group}]"
        for key, pkey, fpr in _TESTS:
            effect = getattr(lim, pkey)
            if effect is not None:
                rules.append(
                    _test_rule(
                        f"{prefix}.{key}",
                        g,
                        key,
                        effect,
                        fpr,
                        alpha_t,
                        policy.power,
                        group,
                        shadows,
                    )
                )
        if lim.max_epsilon_lower_bound is not None:
            rules.append(
                _eps_rule(f"{prefix}.epsilon_lower_bound", g, lim.max_epsilon_lower_bound, group)
            )
    return rules


def init_mode(run_json: Mapping) -> str | None:
    """The run's initialisation mode: run.json ``init.mode``, else ``config.init``."""
    init = run_json.get("init")
    if isinstance(init, Mapping) and isinstance(init.get("mode"), str):
        return init["mode"]
    config = run_json.get("config")
    if isinstance(config, Mapping) and isinstance(config.get("init"), str):
        return config["init"]
    return None


def evaluate_policy(
    run_json: Mapping, eval_json: Mapping, audit: Mapping, policy: Policy
) -> Decision:
    """Applies ``policy`` to one release.

    Args:
      run_json: the run's run.json (only ``init.mode`` / ``config.init`` and ``dp`` are read).
      eval_json: the run's eval.json (``accuracy_mean``).
      audit: the run's audit/audit.json (validated by ``inputs.validate_audit``).
      policy: the loaded policy.

    Returns:
      A ``Decision`` with one rule per check, in a stable order: audit strength, init mode,
      utility, the ``[dp]`` rules, then the game's rules per attack (group "all", then the
      policy's groups).
    """
    rules: list[Rule] = []
    game = got if isinstance(got := audit.get("game"), Mapping) else {}
    attacks = got if isinstance(got := game.get("attacks"), Mapping) else {}

    for name in policy.required_attacks:
        ran = isinstance(attacks.get(name), Mapping)
        rules.append(
            Rule(
                f"audit.attack_ran.{name}",
                ran,
                True,
                "present",
                ran,
                "" if ran else "attack missing from the audit's game",
            )
        )
    n_shadows = shadow_count(audit)
    rules.append(
        Rule(
            "audit.min_shadows",
            n_shadows,
            policy.min_shadows,
            ">=",
            n_shadows is not None and n_shadows >= policy.min_shadows,
            "" if n_shadows is not None else "shadow count missing in the audit",
        )
    )

    mode = init_mode(run_json)
    rules.append(
        Rule(
            "init.mode",
            mode,
            list(policy.allowed_init_modes),
            "in",
            mode in policy.allowed_init_modes,
            "" if mode is not None else "init mode missing in run.json",
        )
    )
    init = got if isinstance(got := audit.get("init"), Mapping) else {}
    if mode == "real":
        n_init = _int(init.get("n_init_records"))
        has = bool(attacks) and all(
            isinstance((a.get("groups") or {}).get("init"), Mapping)
            for a in attacks.values()
            if isinstance(a, Mapping)
        )
        ok = bool(n_init) and has and bool(init.get("init_aware_shadows"))
        rules.append(
            Rule(
                "init.records_audited",
                ok,
                True,
                "present",
                ok,
                ""
                if ok
                else "a real-init run needs its init records audited as a "
                "group by init-aware shadows; re-run rcig-release audit",
            )
        )

    acc = _num(eval_json.get("accuracy_mean"))
    rules.append(
        _ge(
            "utility.accuracy",
            acc,
            policy.min_accuracy,
            "" if acc is not None else "accuracy_mean missing in eval.json",
        )
    )
    if policy.min_gain_over_naive is not None:
        rules.append(_gain_rule(acc, audit, policy.min_gain_over_naive))

    rules += dp_rules(run_json, policy)
    rules += privacy_rules(audit, policy)
    return Decision(policy.label, policy.sha256, tuple(rules), policy.demonstration)


def dp_rules(run_json: Mapping, policy: Policy) -> list[Rule]:
    """``[dp]``: the run's proven ε (and δ) from run.json's ``dp`` statement. A run without one
    fails ("not a DP run"). The statement's own validity (its ε recomputed by the accountant) is
    checked by release and verify, not here."""
    if policy.dp_max_epsilon is None:
        return []
    dp = run_json.get("dp")
    pairs = [("dp.epsilon", "epsilon", policy.dp_max_epsilon)]
    if policy.dp_max_delta is not None:
        pairs.append(("dp.delta", "delta", policy.dp_max_delta))
    if not isinstance(dp, Mapping):
        return [Rule(name, None, limit, "<=", False, "not a DP run") for name, _, limit in pairs]
    rules = []
    for name, key, limit in pairs:
        value = _num(dp.get(key))
        note = "proven by the run's accountant" if key == "epsilon" else ""
        rules.append(
            _le(name, value, limit, note)
            if value is not None
            else Rule(name, None, limit, "<=", False, f"dp.{key} missing or not a number")
        )
    return rules


def _gain_rule(eval_acc: float | None, audit: Mapping, limit: float) -> Rule:
    """Accuracy over the naive release, on the same protocol where the audit gives both numbers."""
    naive, source = target_accuracy(baseline(audit, "naive"))
    if naive is None:
        return Rule(
            "utility.gain_over_naive",
            None,
            limit,
            ">=",
            False,
            "naive-release accuracy missing in the audit",
        )
    if source == "targets":
        own, _ = target_accuracy(audit)  # the audit's networks trained on this release
        if own is not None:
            return _ge(
                "utility.gain_over_naive", own - naive, limit, "audit target networks, both sets"
            )
    if eval_acc is None:
        return Rule(
            "utility.gain_over_naive",
            None,
            limit,
            ">=",
            False,
            "accuracy_mean missing in eval.json",
        )
    return _ge("utility.gain_over_naive", eval_acc - naive, limit)


def _ge(name: str, value: float | None, limit: float, note: str = "") -> Rule:
    return Rule(name, value, limit, ">=", value is not None and value >= limit - _TOL, note)
