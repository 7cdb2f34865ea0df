"""Release policies: the loader's schema checks and evaluate_policy against hand-built tables."""

import copy
from pathlib import Path

import pytest

from rcig_release.errors import InputError
from rcig_release.release.decision import evaluate_policy
from rcig_release.release.policy import load_policy, parse_policy
from rcig_release.release.testing import ATTACKS, CLEAN, LEAK, metrics

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "policies" / "default.toml"
STRICT = ROOT / "policies" / "strict.toml"

MINIMAL = b"""
[policy]
name = "t"
[audit]
required_attacks = ["loss", "nearest"]
min_shadows = 4
[limits]
bound = "ci_upper"
unresolved = "pass"
max_auc = 0.6
max_tpr_at_fpr_0_001 = 0.02
max_tpr_at_fpr_0_01 = 0.05
max_epsilon_lower_bound = 2.0
[limits.groups]
patterns = ["init*"]
bound = "point"
unresolved = "pass"
max_auc = 0.75
max_tpr_at_fpr_0_001 = 0.5
max_tpr_at_fpr_0_01 = 0.5
max_epsilon_lower_bound = 3.0
[copies]
max_near_copies = 0
allow_near_copies_in_bundle = false
[init]
allowed_modes = ["real", "noise"]
[utility]
min_accuracy = 0.3
min_gain_over_naive = 0.02
"""


def policy(text: bytes = MINIMAL, **replace: str):
    for old, new in replace.items():
        old = old.replace("__", " = ").encode()
        assert old in text, old
        text = text.replace(old, new.encode(), 1)
    return parse_policy(text, "p.toml")


def audit(attacks=None, near=0, shadows=16, naive=0.5):
    if attacks is None:
        attacks = {a: copy.deepcopy(CLEAN) for a in ("loss", "nearest")}
    return {
        "run_sha256": "0" * 64,
        "attacks": attacks,
        "copy_check": {"near_copies": near, "threshold": 0.05},
        "baselines": {"naive_release": {"accuracy": naive, "attacks": {}}},
        "n_shadows": shadows,
    }


RUN = {"init": {"mode": "real"}, "config": {"init": "real"}}
EVAL = {"accuracy_mean": 0.8}


# ---- loader ---------------------------------------------------------------------------------


def test_shipped_policies_load():
    d, s = load_policy(DEFAULT), load_policy(STRICT)
    assert d.name == "default" and s.name == "strict"
    assert d.max_near_copies == 0 and s.max_near_copies == 0
    assert not d.allow_near_copies_in_bundle and not s.allow_near_copies_in_bundle
    assert s.allowed_init_modes == ("noise",)
    assert set(d.required_attacks) == set(ATTACKS)
    assert len(d.sha256) == 64 and d.sha256 != s.sha256


def test_every_shipped_key_is_commented():
    """Every `key = value` line in the shipped policies carries a comment on it or just above it."""
    for path in (DEFAULT, STRICT):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if "=" in line and not line.lstrip().startswith("#"):
                assert "#" in line or lines[i - 1].lstrip().startswith("#"), f"{path.name}:{i + 1}: {line}"


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"min_shadows__4": "min_shadows = 4\nmin_shadow = 4"}, "unknown key audit.min_shadow"),
        ({"[utility]": "[utility]\nextra = 1"}, "unknown key utility.extra"),
        ({"[copies]": "[copy]\n[copies]"}, "unknown key copy"),
        ({"max_auc__0.6": "max_auc = 1.5"}, "limits.max_auc must be in"),
        ({"max_auc__0.6": 'max_auc = "0.6"'}, "limits.max_auc has the wrong type"),
        ({"max_near_copies__0": "max_near_copies = false"}, "copies.max_near_copies has the wrong type"),
        ({"max_near_copies__0": "max_near_copies = -1"}, "must be >= 0"),
        ({'bound__"point"': 'bound = "median"'}, "limits.groups.bound must be one of"),
        ({'required_attacks__["loss", "nearest"]': 'required_attacks = ["loss", "lira"]'}, "unknown value 'lira'"),
        ({'allowed_modes__["real", "noise"]': 'allowed_modes = ["real", "zeros"]'}, "unknown value 'zeros'"),
        ({"max_epsilon_lower_bound__2.0\n": "\n"}, "missing key limits.max_epsilon_lower_bound"),
        ({"[limits.groups]": "[limits.attack.lira]\nmax_auc = 0.5\n[limits.groups]"}, "unknown attack limits.attack.lira"),
        ({"[limits.groups]": "[limits.attack.nearest]\nmax_aux = 0.5\n[limits.groups]"},
         "unknown key limits.attack.nearest.max_aux"),
        ({'name__"t"': "name = "}, "not valid TOML"),
    ],
)
def test_loader_rejects(edit, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(")):
        policy(**edit)


def test_loader_unreadable_file(tmp_path):
    with pytest.raises(InputError, match="not readable: nope.toml"):
        load_policy(tmp_path / "nope.toml")


# ---- evaluate_policy tables ------------------------------------------------------------------


def _attacks(**over):
    a = {name: copy.deepcopy(CLEAN) for name in ("loss", "nearest")}
    for name, m in over.items():
        a[name] = m
    return a


CASES = [
    # (description, audit kwargs, run, eval, {rule: expected passed})
    ("clean release passes", {}, RUN, EVAL, {"*": True}),
    ("one near copy", {"near": 1}, RUN, EVAL, {"copies.near_copies": False}),
    ("too few shadows", {"shadows": 3}, RUN, EVAL, {"audit.min_shadows": False}),
    ("missing attack", {"attacks": {"loss": copy.deepcopy(CLEAN)}}, RUN, EVAL,
     {"audit.attack_ran.nearest": False, "audit.attack_ran.loss": True}),
    ("utility below min", {"naive": 0.2}, RUN, {"accuracy_mean": 0.29}, {"utility.accuracy": False}),
    ("no gain over naive", {"naive": 0.79}, RUN, EVAL, {"utility.gain_over_naive": False, "utility.accuracy": True}),
    ("gain exactly at the limit passes", {"naive": 0.78}, RUN, EVAL, {"utility.gain_over_naive": True}),
    ("init mode not allowed", {}, {"init": {"mode": "zeros"}}, EVAL, {"init.mode": False}),
    ("init mode from config", {}, {"config": {"init": "noise"}}, EVAL, {"init.mode": True}),
    ("init mode missing", {}, {}, EVAL, {"init.mode": False}),
    ("auc point below but CI upper above", {"attacks": _attacks(loss=metrics(0.58, None, 0.01, 0.1, width=0.03))},
     RUN, EVAL, {"attack.loss.auc": False}),
    ("auc without interval uses the point", {"attacks": _attacks(loss={**CLEAN, "auc_ci": None, "auc": 0.59})},
     RUN, EVAL, {"attack.loss.auc": True}),
    ("tpr@1% CI upper above", {"attacks": _attacks(nearest=metrics(0.5, None, 0.03, 0.1, width=0.03))},
     RUN, EVAL, {"attack.nearest.tpr@fpr=0.01": False}),
    ("unresolved tpr passes by default", {"attacks": _attacks(loss=metrics(0.5, None, 0.0, 0.0, width=0.01))},
     RUN, EVAL, {"attack.loss.tpr@fpr=0.001": True}),
    ("missing tpr key fails", {"attacks": _attacks(loss={**CLEAN, "tpr_at_fpr": {"0.01": 0.0}})},
     RUN, EVAL, {"attack.loss.tpr@fpr=0.001": False}),
    ("epsilon above", {"attacks": _attacks(rmia=metrics(0.5, None, 0.0, 2.5, width=0.01))},
     RUN, EVAL, {"attack.rmia.epsilon_lower_bound": False}),
    ("init group leak (point bound)", {"attacks": _attacks(nearest={**CLEAN, "groups": {"init": LEAK, "class_0": LEAK}})},
     RUN, EVAL, {"attack.nearest[init].auc": False, "attack.nearest[init].tpr@fpr=0.01": False,
                 "attack.nearest[init].tpr@fpr=0.001": False, "attack.nearest[init].epsilon_lower_bound": False,
                 "attack.nearest.auc": True}),
    ("unmatched group not judged", {"attacks": _attacks(nearest={**CLEAN, "groups": {"class_0": LEAK}})},
     RUN, EVAL, {"*": True}),
]


@pytest.mark.parametrize("desc, audit_kw, run, ev, expected", CASES, ids=[c[0] for c in CASES])
def test_policy_table(desc, audit_kw, run, ev, expected):
    decision = evaluate_policy(run, ev, audit(**audit_kw), policy())
    if expected == {"*": True}:
        assert decision.passed, [r for r in decision.failed]
        return
    for name, passed in expected.items():
        assert decision.rule(name).passed is passed, decision.rule(name)
    failing = {k for k, v in expected.items() if not v}
    assert {r.name for r in decision.failed} == failing


def test_rule_values_and_limits():
    d = evaluate_policy(RUN, {"accuracy_mean": 0.7}, audit(naive=0.6, near=2), policy())
    near = d.rule("copies.near_copies")
    assert (near.value, near.limit, near.comparison, near.passed) == (2, 0, "<=", False)
    gain = d.rule("utility.gain_over_naive")
    assert gain.value == pytest.approx(0.1) and gain.limit == 0.02 and gain.passed
    auc = d.rule("attack.loss.auc")
    assert auc.value == pytest.approx(CLEAN["auc_ci"][1]) and auc.note == "95% interval upper end"


def test_point_bound_and_unresolved_fail():
    p = policy(**{'bound__"ci_upper"': 'bound = "point"', 'unresolved__"pass"': 'unresolved = "fail"'})
    d = evaluate_policy(RUN, EVAL, audit(attacks=_attacks(loss=metrics(0.58, None, 0.01, 0.1, width=0.1))), p)
    assert d.rule("attack.loss.auc").passed and d.rule("attack.loss.auc").value == 0.58
    assert not d.rule("attack.loss.tpr@fpr=0.001").passed


def test_per_attack_override():
    policy(**{"[limits.groups]": "[limits.attack.nearest_feature]\nmax_auc = 0.52\n[limits.groups]"})
    p = policy(**{"[limits.groups]": "[limits.attack.nearest]\nmax_auc = 0.52\n[limits.groups]"})
    d = evaluate_policy(RUN, EVAL, audit(), p)
    assert not d.rule("attack.nearest.auc").passed and d.rule("attack.nearest.auc").limit == 0.52
    assert d.rule("attack.loss.auc").passed and d.rule("attack.nearest.tpr@fpr=0.01").limit == 0.05


def test_missing_optional_fields_fail_rules_not_crash():
    a = audit()
    del a["baselines"], a["n_shadows"]
    d = evaluate_policy(RUN, {}, a, policy())
    assert {r.name for r in d.failed} == {"audit.min_shadows", "utility.accuracy", "utility.gain_over_naive"}
    a["config"] = {"shadows": 32}
    assert evaluate_policy(RUN, EVAL, a, policy()).rule("audit.min_shadows").value == 32


def test_evaluate_is_pure():
    a, r, e = audit(), copy.deepcopy(RUN), dict(EVAL)
    before = copy.deepcopy((a, r, e))
    d1 = evaluate_policy(r, e, a, policy())
    d2 = evaluate_policy(r, e, a, policy())
    assert d1 == d2 and (a, r, e) == before


def test_shipped_default_rejects_planted_leak_and_strict_rejects_real_init():
    from rcig_release.release.testing import audit_dict, private_data

    data = private_data()
    leak = audit_dict("0" * 64, data.x_train[:6], data.x_train, leak=True)
    run = {"init": {"mode": "real"}}
    d = evaluate_policy(run, {"accuracy_mean": 0.56}, leak, load_policy(DEFAULT))
    failed = {r.name for r in d.failed}
    assert "copies.near_copies" in failed and d.rule("copies.near_copies").value == 6
    assert any(n.startswith("attack.nearest") for n in failed)
    assert "utility.gain_over_naive" in failed
    clean = audit_dict("0" * 64, data.x_train[:6] * 0 + 0.5, data.x_train, leak=False)
    assert evaluate_policy(run, {"accuracy_mean": 0.8}, clean, load_policy(DEFAULT)).passed
    strict = evaluate_policy(run, {"accuracy_mean": 0.8}, clean, load_policy(STRICT))
    assert not strict.rule("init.mode").passed and not strict.rule("audit.min_shadows").passed


def test_runner_layout_of_the_audit():
    """audits/runner.py writes baselines naive/full_data with targets.test_accuracy_mean."""
    from rcig_release.release.testing import audit_dict, private_data, to_runner_layout

    data = private_data()
    a = to_runner_layout(audit_dict("0" * 64, data.x_train[:6] * 0 + 0.5, data.x_train, leak=False))
    d = evaluate_policy(RUN, {"accuracy_mean": 0.9}, a, load_policy(DEFAULT))
    assert d.passed, d.failed
    gain = d.rule("utility.gain_over_naive")
    # same protocol on both sides: the audit's own target networks (0.78) vs the naive ones (0.55)
    assert gain.value == pytest.approx(0.78 - 0.55) and "audit target networks" in gain.note
    del a["targets"]
    assert evaluate_policy(RUN, {"accuracy_mean": 0.9}, a, load_policy(DEFAULT)).rule(
        "utility.gain_over_naive").value == pytest.approx(0.9 - 0.55)
