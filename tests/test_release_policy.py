"""Release policies: the loader's schema checks, and evaluate_policy on audits whose game section
was computed by the audit's own statistics (``testing.simulated_game``), never hand-made metrics."""

import copy
import os
import re
from pathlib import Path

import pytest

from rcig_release.errors import InputError
from rcig_release.release.decision import evaluate_policy
from rcig_release.release.policy import load_policy, parse_policy
from release_fixtures import ATTACKS, simulated_game

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "policies" / "default.toml"
STRICT = ROOT / "policies" / "strict.toml"
DP = ROOT / "policies" / "dp.toml"
DEMO = ROOT / "policies" / "demo.toml"

MINIMAL = b"""
[policy]
name = "t"
[audit]
required_attacks = ["loss", "nearest"]
min_shadows = 4
[gate]
alpha = 0.05
power = 0.99
[limits]
detect_auc = 0.55
detect_tpr_at_fpr_0_01 = 0.035
detect_tpr_at_fpr_0_001 = 0.02
max_epsilon_lower_bound = 1.0
[limits.groups]
patterns = ["init*"]
detect_auc = 0.85
[copies]
allow_near_copies_in_bundle = false
[init]
allowed_modes = ["real", "noise"]
[utility]
min_accuracy = 0.3
"""


def policy(text: bytes = MINIMAL, **replace: str):
    for old, new in replace.items():
        old = old.replace("__", " = ").encode()
        assert old in text, old
        text = text.replace(old, new.encode(), 1)
    return parse_policy(text, "p.toml")


def audit(leak=False, shadows=16, records=1000, **kw):
    g = copy.deepcopy(simulated_game(leak, shadows=shadows, records=records, **kw))
    return {
        "run_sha256": "0" * 64,
        "game": g,
        "n_shadows": shadows,
        "init": {
            "mode": "real" if leak else "noise",
            "n_init_records": 10 if leak else 0,
            "init_aware_shadows": leak,
        },
    }


NOISE = {"init": {"mode": "noise"}}
REAL = {"init": {"mode": "real"}}
EVAL = {"accuracy_mean": 0.8}


# ---- loader ---------------------------------------------------------------------------------


def test_shipped_policies_load():
    d, s = load_policy(DEFAULT), load_policy(STRICT)
    assert d.name == "default" and s.name == "strict"
    assert not d.allow_near_copies_in_bundle and not s.allow_near_copies_in_bundle
    assert s.allowed_init_modes == ("noise", "dp-mean") and d.alpha == 0.05 and d.power == 0.99
    assert set(d.required_attacks) == set(ATTACKS)
    assert len(d.sha256) == 64 and d.sha256 != s.sha256


def test_every_shipped_key_is_commented():
    """Every `key = value` line in the shipped policies carries a comment on it or just above it."""
    for path in (DEFAULT, STRICT, DP, DEMO):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if "=" in line and not line.lstrip().startswith("#"):
                assert "#" in line or lines[i - 1].lstrip().startswith("#"), (
                    f"{path.name}:{i + 1}: {line}"
                )


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"min_shadows__4": "min_shadows = 4\nmin_shadow = 4"}, "unknown key audit.min_shadow"),
        ({"[utility]": "[utility]\nextra = 1"}, "unknown key utility.extra"),
        ({"[copies]": "[copy]\n[copies]"}, "unknown key copy"),
        ({"detect_auc__0.55": "detect_auc = 1.5"}, "limits.detect_auc must be in"),
        ({"detect_auc__0.55": "detect_auc = 0.5"}, "limits.detect_auc must be above 0.5"),
        ({"detect_auc__0.55": "detect_auc = nan"}, "limits.detect_auc must be a finite number"),
        (
            {"max_epsilon_lower_bound__1.0": "max_epsilon_lower_bound = inf"},
            "must be a finite number",
        ),
        ({"detect_auc__0.55": 'detect_auc = "0.6"'}, "limits.detect_auc has the wrong type"),
        (
            {"detect_tpr_at_fpr_0_001__0.02": "detect_tpr_at_fpr_0_001 = 0.0005"},
            "must be above 0.001",
        ),
        (
            {"detect_auc__0.55": "detect_auc = 0.55\nmax_auc = 0.6"},
            "unknown key limits.max_auc (the gate now tests",
        ),
        (
            {"detect_auc__0.55": "max_auc = 0.6"},
            "missing key limits.detect_auc (limits.max_auc is the earlier",
        ),
        ({"alpha__0.05": "alpha = 0.5"}, "gate.alpha must be in"),
        ({"power__0.99": "power = 1.0"}, "gate.power must be in"),
        ({"min_shadows__4": "min_shadows = 0"}, "min_shadows must be >= 2"),
        (
            {'required_attacks__["loss", "nearest"]': "required_attacks = []"},
            "must name at least one attack",
        ),
        ({'patterns__["init*"]': "patterns = []"}, "patterns must list at least one"),
        (
            {'required_attacks__["loss", "nearest"]': 'required_attacks = ["loss", "lira"]'},
            "unknown value 'lira'",
        ),
        (
            {'allowed_modes__["real", "noise"]': 'allowed_modes = ["real", "zeros"]'},
            "unknown value 'zeros'",
        ),
        ({'allowed_modes__["real", "noise"]': "allowed_modes = []"}, "must name at least one mode"),
        ({"max_epsilon_lower_bound__1.0\n": "\n"}, "missing key limits.max_epsilon_lower_bound"),
        (
            {"[limits.groups]": "[limits.attack.lira]\ndetect_auc = 0.6\n[limits.groups]"},
            "unknown attack limits.attack.lira",
        ),
        (
            {"[limits.groups]": "[limits.attack.nearest]\nmax_aux = 0.5\n[limits.groups]"},
            "unknown key limits.attack.nearest.max_aux",
        ),
        ({'name__"t"': "name = "}, "not valid TOML"),
    ],
)
def test_loader_rejects(edit, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(")):
        policy(**edit)


def test_loader_unreadable_file(tmp_path):
    with pytest.raises(
        InputError, match="nope.toml': no shipped policy of that name and no such file"
    ):
        load_policy(tmp_path / "nope.toml")
    (tmp_path / "locked.toml").write_bytes(DEFAULT.read_bytes())
    (tmp_path / "locked.toml").chmod(0)
    if not os.access(tmp_path / "locked.toml", os.R_OK):  # root reads it anyway
        with pytest.raises(InputError, match="not readable: locked.toml"):
            load_policy(tmp_path / "locked.toml")


# ---- evaluate_policy on the audit's game -----------------------------------------------------


def test_a_release_at_chance_passes_the_default_policy():
    d = evaluate_policy(NOISE, EVAL, audit(), load_policy(DEFAULT))
    assert d.passed, [(r.name, r.note) for r in d.failed]
    tests = [r for r in d.rules if r.comparison == "p >"]
    # every attack of the game (7) x 3 tests over all records; alpha split: (0.05 - 0.01) / 21
    assert len(tests) == 21 and tests[0].limit == pytest.approx(0.04 / 21)
    assert all("power" in r.note for r in tests)


def test_the_planted_leak_is_refused_by_the_release_direct_attacks():
    d = evaluate_policy(REAL, EVAL, audit(leak=True), load_policy(DEFAULT))
    failed = {r.name for r in d.failed}
    assert "game.nearest[init].auc" in failed and "game.nearest[all].tpr_at_fpr_0.001" in failed
    assert all(n.startswith("game.nearest") for n in failed), failed
    assert d.rule("init.records_audited").passed


def test_rules_the_sizes_cannot_decide_fail_closed_with_the_option_to_raise():
    d = evaluate_policy(NOISE, EVAL, audit(shadows=4, records=100), load_policy(DEFAULT))
    und = [r for r in d.failed if "undecidable" in r.note]
    assert und and all("raise --records or --shadows" in r.note for r in und)
    assert {r.name for r in d.failed} >= {"audit.min_shadows", "game.loss[all].tpr_at_fpr_0.001"}
    assert d.rule("game.loss[all].epsilon_lower_bound").passed  # 200 guesses per fold can show 2.3
    p = policy(**{"max_epsilon_lower_bound__1.0": "max_epsilon_lower_bound = 3.0"})
    eps = evaluate_policy(NOISE, EVAL, audit(shadows=4, records=100), p).rule(
        "game.loss[all].epsilon_lower_bound"
    )
    assert not eps.passed and "largest ε lower bound they can show" in eps.note


def test_epsilon_rule_compares_with_the_limit_and_reports_saturation():
    a = audit(leak=True)
    g = a["game"]["attacks"]["nearest"]["groups"]["init"]
    assert g["epsilon_lower_bound"] > 0 and g["epsilon_lower_bound"] <= g["max_epsilon"] + 1e-9
    p = policy(**{"detect_auc__0.85": "detect_auc = 0.85\nmax_epsilon_lower_bound = 0.2"})
    d = evaluate_policy(REAL, EVAL, a, p)
    r = d.rule("game.nearest[init].epsilon_lower_bound")
    assert not r.passed and r.value == g["epsilon_lower_bound"] and r.limit == 0.2
    assert d.rule("game.loss[init].epsilon_lower_bound").passed


def test_missing_game_and_missing_init_group_fail():
    a = audit()
    del a["game"]
    d = evaluate_policy(NOISE, EVAL, a, policy())
    assert not d.rule("game.present").passed and not d.rule("audit.attack_ran.loss").passed
    d = evaluate_policy(REAL, EVAL, audit(), policy())  # real init but no init group audited
    assert not d.rule("init.records_audited").passed


@pytest.mark.parametrize(
    "run, ev, rule",
    [
        ({"init": {"mode": "zeros"}}, EVAL, "init.mode"),
        ({}, EVAL, "init.mode"),
        (NOISE, {"accuracy_mean": 0.29}, "utility.accuracy"),
        (NOISE, {}, "utility.accuracy"),
    ],
)
def test_non_privacy_rules(run, ev, rule):
    d = evaluate_policy(run, ev, audit(), policy())
    assert {r.name for r in d.failed} == {rule}


def test_too_few_shadows_and_gain_over_naive():
    a = audit()
    a["n_shadows"] = 3
    a["baselines"] = {"naive": {"targets": {"test_accuracy_mean": 0.79}}}
    p = policy(**{"min_accuracy__0.3": "min_accuracy = 0.3\nmin_gain_over_naive = 0.02"})
    d = evaluate_policy(NOISE, EVAL, a, p)
    assert {r.name for r in d.failed} == {"audit.min_shadows", "utility.gain_over_naive"}


def test_per_attack_override_changes_only_that_attack():
    p = policy(
        **{"[limits.groups]": "[limits.attack.nearest]\ndetect_auc = 0.501\n[limits.groups]"}
    )
    d = evaluate_policy(NOISE, EVAL, audit(), p)
    assert not d.rule("game.nearest[all].auc").passed
    assert "undecidable" in d.rule("game.nearest[all].auc").note
    assert d.rule("game.loss[all].auc").passed


def test_evaluate_is_pure():
    a, r, e = audit(), copy.deepcopy(NOISE), dict(EVAL)
    before = copy.deepcopy((a, r, e))
    d1 = evaluate_policy(r, e, a, policy())
    d2 = evaluate_policy(r, e, a, policy())
    assert d1 == d2 and (a, r, e) == before


def test_strict_needs_noise_init_and_64_shadows():
    d = evaluate_policy(REAL, EVAL, audit(leak=True), load_policy(STRICT))
    assert not d.rule("init.mode").passed and not d.rule("audit.min_shadows").passed


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda g: g["attacks"]["loss"]["groups"]["all"]["p_value"].update(auc=1.5),
            "p_value.auc must be a number in [0, 1]",
        ),
        (
            lambda g: g["attacks"]["loss"]["groups"]["all"]["p_value"].update(auc="0.5"),
            "p_value.auc must be a number",
        ),
        (
            lambda g: g["attacks"]["loss"]["groups"]["all"].update(folds=[]),
            "folds must be a non-empty list",
        ),
        (
            lambda g: g["attacks"]["loss"]["groups"]["all"]["folds"][0]["auc"].update(n_in=-3),
            "n_in must be a count",
        ),
        (lambda g: g["attacks"]["loss"].update(groups=[]), "groups must be a non-empty object"),
        (
            lambda g: g["attacks"]["loss"]["groups"]["all"].update(
                epsilon_lower_bound=float("nan")
            ),
            "finite number",
        ),
        (lambda g: g["epsilon"].update(confidence=2), "confidence must be a number in (0, 1)"),
    ],
)
def test_a_tampered_game_section_is_one_clear_input_error(edit, message):
    from rcig_release.release.inputs import validate_game

    g = copy.deepcopy(simulated_game(False))
    edit(g)
    with pytest.raises(InputError, match=re.escape(message)):
        validate_game(g)
    validate_game(copy.deepcopy(simulated_game(False)))  # the untouched section is valid


def test_shipped_hashes_match_the_files_and_a_modified_copy_says_so(tmp_path):
    from rcig_release.release.policy import SHIPPED_SHA256

    for path in (DEFAULT, STRICT, DP, DEMO):
        p = load_policy(path)
        assert SHIPPED_SHA256[p.name] == p.sha256 and not p.modified and p.label == p.name
    loose = tmp_path / "default.toml"
    loose.write_bytes(DEFAULT.read_bytes().replace(b"power = 0.99", b"power = 0.5"))
    p = load_policy(loose)
    assert p.name == "default" and p.modified and "modified" in p.label
    d = evaluate_policy(NOISE, EVAL, audit(), p)
    assert d.policy_name.startswith("default (modified: sha256 ")
    assert not policy().modified  # a policy with its own name is not compared
