"""DP-RCIG through audit and release: the audit's check of the proven ε, the [dp] policy rules, the
guarantee in every bundle document, and verify recomputing ε.

Every ε here comes from the accountant (``testing.dp_statement`` calls ``dp.epsilon_for``) and
every audit ``dp`` section from the audit's own function (``dpcheck.dp_section``) on the simulated
game (``testing.simulated_scores``); no verdict or bound is typed in.
"""

import copy
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import resealing
from rcig_release.audits import dpcheck, epsilon
from rcig_release.cli.main import app
from rcig_release.errors import DpViolation, InputError
from rcig_release.release import dp as dpmod
from rcig_release.release.bundle import DpViolationRefused, release
from rcig_release.release.decision import evaluate_policy
from rcig_release.release.policy import load_policy, parse_policy
from rcig_release.release.verify import verify_bundle
from release_fixtures import (
    dp_audit_section,
    dp_statement,
    fake_run,
    loader_for,
    private_data,
    rebind_audit,
    simulated_game,
    simulated_scores,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "policies" / "default.toml"
DP = ROOT / "policies" / "dp.toml"
EVAL = {"accuracy_mean": 0.8}


@pytest.fixture(scope="module")
def statement():
    """σ 1.1, q 0.05, 200 steps, δ 1e-5: ε ≈ 3.96 from the accountant."""
    return dp_statement()


@pytest.fixture(scope="module")
def small():
    """σ 5, 20 steps: ε ≈ 0.15, below the planted leak's empirical lower bound at δ 1e-5."""
    return dp_statement(noise_multiplier=5.0, steps=20)


def game_audit(leak=False):
    return {
        "run_sha256": "0" * 64,
        "game": copy.deepcopy(simulated_game(leak)),
        "n_shadows": 16,
        "init": {"mode": "noise", "n_init_records": 0, "init_aware_shadows": False},
    }


# ---- the accountant recomputation -----------------------------------------------------------


def test_epsilon_for_is_the_pld_accountant_and_check_epsilon_catches_an_edit(statement):
    eps = dpmod.epsilon_for(1.1, 1e-5, 0.05, 200)
    assert statement["epsilon"] == eps and 3.0 < eps < 5.0
    assert dpmod.epsilon_for(2.0, 1e-5, 0.05, 200) < eps  # more noise, smaller ε
    assert dpmod.check_epsilon(statement) is None
    assert "not what the accountant gives" in dpmod.check_epsilon(
        {**statement, "epsilon": eps * 0.9}
    )
    assert dpmod.check_epsilon({**statement, "epsilon": eps * (1 + 1e-8)}) is None  # within 1e-6


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("clip_norm"), "missing key clip_norm"),
        (lambda d: d.update(extra=1), "unknown key extra"),
        (lambda d: d.update(epsilon=float("nan")), "epsilon must be a finite number > 0"),
        (lambda d: d.update(delta=0.0), "delta must be a number in (0, 1)"),
        (lambda d: d.update(steps=1.5), "steps must be an integer"),
        (lambda d: d.update(sampling="shuffle"), "sampling must be 'poisson'"),
        (lambda d: d.update(neighbouring="replace_one"), "neighbouring must be 'add_remove_one'"),
    ],
)
def test_a_malformed_statement_is_an_input_error(statement, edit, message):
    d = copy.deepcopy(statement)
    edit(d)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dpmod.validate_dp(d)


# ---- the audit's check ----------------------------------------------------------------------


def test_the_dp_check_has_the_games_family_and_shows_more_at_the_runs_delta():
    """The DP check (pre-registered rules, dpcheck.py) over the game's family: it finds the
    planted init leak at δ = 1e-5, and over all records it can show far more at that δ than the
    game's own grid of rules recomputed there (docs/audit.md)."""
    scores, keep, groups = simulated_scores(True)
    e = dpcheck.empirical_epsilon(scores, keep, groups, delta=1e-5, alpha=0.01)
    g = simulated_game(True)
    assert e["family_size"] == g["epsilon"]["family_size"] and e["confidence"] == 0.99
    assert e["attained_by"]["group"] == "init" and e["attained_by"]["attack"].startswith("nearest")
    assert 1.0 < e["epsilon_lower_bound"] <= e["largest_showable_epsilon"]
    assert e["rules"] == ["top ⌈m/2⌉", "top ⌈m/8⌉"]
    null_scores, null_keep, null_groups = simulated_scores(False)  # "all" and classes only
    null = dpcheck.empirical_epsilon(null_scores, null_keep, null_groups, delta=1e-5, alpha=0.01)
    n = null_keep.shape[1] * null_keep.shape[0] // 2  # canaries per fold
    grid = epsilon.max_epsilon(n // 2, n - n // 2, delta=1e-5, alpha=null["alpha_per_bound"])
    assert (
        null["epsilon_lower_bound"] == 0.0 and null["largest_showable_epsilon"] > 2.0 > 1.0 > grid
    )


def test_dp_section_consistent_and_violation(statement, small):
    ok = dp_audit_section(statement, leak=True)
    assert ok["verdict"] == "consistent" and ok["consistent"] is True
    assert ok["proven_epsilon"] == statement["epsilon"] and ok["delta"] == 1e-5
    assert 1.0 < ok["empirical_epsilon_lower_bound"] < statement["epsilon"]
    bad = dp_audit_section(small, leak=True)
    assert bad["verdict"] == "dp-violation" and bad["consistent"] is False
    assert bad["empirical_epsilon_lower_bound"] > small["epsilon"]
    assert "not a privacy measurement" in bad["meaning"]
    null = dp_audit_section(small, leak=False)  # at chance: nothing to contradict
    assert null["verdict"] == "consistent" and null["empirical_epsilon_lower_bound"] == 0.0


def _cli_audit(dp_section):
    g = {
        "auc": 0.5,
        "p_value": {"auc": 0.5, "tpr_at_fpr_0.01": 0.5, "tpr_at_fpr_0.001": 0.5},
        "epsilon_lower_bound": 0.0,
        "max_epsilon": 2.5,
    }
    return {
        "run_sha256": "ab" * 32,
        "n_shadows": 16,
        "records": {"members": 10, "nonmembers": 10, "calibration": 5},
        "game": {
            "epsilon": {"delta": 1e-8, "confidence": 0.99},
            "attacks": {"loss": {"groups": {"all": g}}},
        },
        "attacks": {
            "loss": {
                "auc": 0.5,
                "tpr_at_fpr": {"0.001": None, "0.01": 0.1},
                "tpr_at_fpr_ci": {"0.001": None, "0.01": [0.0, 0.2]},
            }
        },
        "baselines": {},
        "dp": dp_section,
        "copy_check": {"near_copies": 0, "threshold": 0.1, "n_released": 10, "rule": "r"},
    }


@pytest.mark.parametrize("json_out", [False, True])
def test_audit_cli_prints_both_epsilons_and_exits_4_on_a_violation(
    monkeypatch, tmp_path, statement, small, json_out
):
    flags = ["--json"] if json_out else ["--quiet"]
    for name in ("distilled.npz", "run.json"):  # what the command's path checks look for
        (tmp_path / name).write_bytes(b"")
    good = _cli_audit(dp_audit_section(statement, leak=True))
    monkeypatch.setattr("rcig_release.audits.runner.run_audit", lambda run, cfg, **kw: good)
    r = CliRunner().invoke(app, ["audit", str(tmp_path), *flags])
    assert r.exit_code == 0, r.output
    if json_out:
        assert json.loads(r.stdout)["dp"]["verdict"] == "consistent"
    else:
        assert "proven ε = 3.962 at δ = 1e-05" in r.stdout and "consistent" in r.stdout
        assert "empirical ε lower bound at that δ = 1.278" in r.stdout

    bad = _cli_audit(dp_audit_section(small, leak=True))
    monkeypatch.setattr("rcig_release.audits.runner.run_audit", lambda run, cfg, **kw: bad)
    r = CliRunner().invoke(app, ["audit", str(tmp_path), *flags])
    assert r.exit_code == DpViolation.exit_code == 4, r.output
    assert (
        "dp-violation" in r.output and "bug" in r.output and "not a privacy measurement" in r.output
    )


# ---- policy -----------------------------------------------------------------------------------


def test_dp_policy_rule_pass_fail_and_non_dp(statement):
    pol = load_policy(DP)
    assert (pol.dp_max_epsilon, pol.dp_max_delta) == (10.0, 1e-5)
    audit = game_audit()
    d = evaluate_policy({"init": {"mode": "noise"}, "dp": statement}, EVAL, audit, pol)
    assert d.passed, [(r.name, r.note) for r in d.failed]
    assert d.rule("dp.epsilon").value == statement["epsilon"] and d.rule("dp.epsilon").limit == 10.0

    tight = parse_policy(DP.read_bytes().replace(b"max_epsilon = 10", b"max_epsilon = 3"), "p.toml")
    d = evaluate_policy({"init": {"mode": "noise"}, "dp": statement}, EVAL, audit, tight)
    assert [r.name for r in d.failed] == ["dp.epsilon"] and d.rule("dp.epsilon").value > 3

    wide = dp_statement(delta=1e-4)
    d = evaluate_policy({"init": {"mode": "noise"}, "dp": wide}, EVAL, audit, pol)
    assert [r.name for r in d.failed] == ["dp.delta"]

    d = evaluate_policy({"init": {"mode": "noise"}}, EVAL, audit, pol)
    assert {r.name: r.note for r in d.failed} == {
        "dp.epsilon": "not a DP run",
        "dp.delta": "not a DP run",
    }
    # a policy without [dp] has no dp rule, DP run or not
    assert not [
        r
        for r in evaluate_policy(
            {"init": {"mode": "noise"}, "dp": statement}, EVAL, audit, load_policy(DEFAULT)
        ).rules
        if r.name.startswith("dp.")
    ]


@pytest.mark.parametrize(
    "table, message",
    [
        ("[dp]\nmax_epsilon = nan\n", "dp.max_epsilon must be a finite number"),
        ("[dp]\nmax_epsilon = inf\n", "dp.max_epsilon must be a finite number"),
        ("[dp]\nmax_epsilon = 0\n", "dp.max_epsilon must be above 0"),
        ("[dp]\nmax_epsilon = -1\n", "dp.max_epsilon must be in"),
        ('[dp]\nmax_epsilon = "10"\n', "dp.max_epsilon has the wrong type"),
        ("[dp]\nmax_epsilon = true\n", "dp.max_epsilon has the wrong type"),
        ("[dp]\nmax_delta = 1e-5\n", "missing key dp.max_epsilon"),
        ("[dp]\nmax_epsilon = 8\nmax_delta = 0\n", "dp.max_delta must be in (0, 1)"),
        ("[dp]\nmax_epsilon = 8\nmax_delta = 1\n", "dp.max_delta must be in (0, 1)"),
        ("[dp]\nmax_epsilon = 8\nmax_delta = nan\n", "dp.max_delta must be a finite number"),
        ("[dp]\nmax_epsilon = 8\nmax_eps = 1\n", "unknown key dp.max_eps"),
    ],
)
def test_dp_table_values_are_validated(table, message):
    text = DEFAULT.read_bytes() + b"\n" + table.encode()
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_policy(text, "p.toml")


def test_cli_bad_dp_policy_exits_2(tmp_path, statement):
    data = private_data()
    run = fake_run(tmp_path / "run", data=data, dp=statement)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(DP.read_bytes().replace(b"max_epsilon = 10", b"max_epsilon = nan"))
    r = CliRunner().invoke(
        app, ["release", str(run), "--policy", str(bad), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and "dp.max_epsilon" in r.output
    assert not (tmp_path / "o").exists()


# ---- release ---------------------------------------------------------------------------------


def test_a_dp_violation_is_refused_even_with_override(tmp_path, small, monkeypatch):
    data = private_data()
    run = fake_run(tmp_path / "run", data=data, dp=small, dp_game_leak=True)
    assert json.loads((run / "audit" / "audit.json").read_text())["dp"]["verdict"] == "dp-violation"
    for policy in (DEFAULT, DP):
        with pytest.raises(DpViolationRefused, match="dp-violation.*--override does not bypass"):
            release(
                run, policy, tmp_path / "out", load_private=loader_for(data), override="ship it"
            )
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(
        "rcig_release.release.bundle.load_private_splits",
        lambda *a, **k: pytest.fail("the private data must not be read"),
    )
    r = CliRunner().invoke(
        app,
        [
            "release",
            str(run),
            "--policy",
            str(DP),
            "--out",
            str(tmp_path / "out"),
            "--override",
            "ship it",
        ],
    )
    assert r.exit_code == 4, r.output
    assert "dp-violation" in r.output and "bug" in r.output
    assert not (tmp_path / "out").exists()


def test_a_hidden_violation_and_a_stale_or_missing_dp_audit_are_refused(tmp_path, statement, small):
    data = private_data()
    run = fake_run(tmp_path / "run", data=data, dp=small, dp_game_leak=True)
    a_path = run / "audit" / "audit.json"
    audit = json.loads(a_path.read_text())
    audit["dp"]["verdict"], audit["dp"]["consistent"] = (
        "consistent",
        True,
    )  # the numbers still say it
    a_path.write_text(json.dumps(audit))
    with pytest.raises(DpViolationRefused):
        release(run, DP, tmp_path / "o1", load_private=loader_for(data), override="x")

    run = fake_run(tmp_path / "run2", data=data, dp=statement)
    run_json = json.loads((run / "run.json").read_text())
    run_json["dp"] = small  # a new statement, the audit of the old one
    (run / "run.json").write_text(json.dumps(run_json))
    with pytest.raises(InputError, match="RUN/run.json changed since the audit"):
        release(run, DP, tmp_path / "o2", load_private=loader_for(data))
    rebind_audit(run)  # the audit's record of run.json updated, its dp section not
    with pytest.raises(InputError, match="stale audit"):
        release(run, DP, tmp_path / "o2", load_private=loader_for(data))
    audit = json.loads((run / "audit" / "audit.json").read_text())
    del audit["dp"]
    (run / "audit" / "audit.json").write_text(json.dumps(audit))
    with pytest.raises(InputError, match="re-run rcig-release audit"):
        release(run, DP, tmp_path / "o3", load_private=loader_for(data))
    run_json["dp"] = {**small, "epsilon": 0.01}  # not what the accountant gives
    (run / "run.json").write_text(json.dumps(run_json))
    rebind_audit(run)
    with pytest.raises(InputError, match="not what the accountant gives"):
        release(run, DP, tmp_path / "o4", load_private=loader_for(data))
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


@pytest.fixture(scope="module")
def dp_bundle(tmp_path_factory, statement):
    tmp = tmp_path_factory.mktemp("dpb")
    data = private_data()
    run = fake_run(tmp / "run", data=data, dp=statement)
    out = tmp / "bundle"
    result = release(
        run, DP, out, load_private=loader_for(data), name="DP toy", include_private_stats=True
    )
    assert result.decision.passed, [(r.name, r.note) for r in result.decision.failed]
    return out


@pytest.fixture(scope="module")
def plain_bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plain")
    data = private_data()
    out = tmp / "bundle"
    release(fake_run(tmp / "run", data=data), DEFAULT, out, load_private=loader_for(data))
    return out


def test_the_guarantee_is_stated_in_every_document(dp_bundle, statement):
    assert verify_bundle(dp_bundle) == []
    eps = f"{statement['epsilon']:.6g}"
    card = (dp_bundle / "README.md").read_text()
    section = card.split("## Differential privacy")[1].split("## Privacy considerations")[0]
    for text in (
        f"ε = {eps}, δ = 1e-05",
        "one training image",
        "add or remove one training image",
        "dp\\_accounting PLD \\(dp-accounting 0.6.0\\)",
        "| noise multiplier σ | 1.1 |",
        "| clip norm | 1 |",
        "poisson, rate 0.05",
        "| steps | 200 |",
        "consistent",
    ):
        assert text in section, text
    assert "no differential-privacy guarantee" not in card
    assert "differential-privacy" in card.split("---")[1]  # the front matter's tag

    prov = json.loads((dp_bundle / "provenance.json").read_text())
    assert prov["dp"] == statement and list(prov["dp"]) == list(dpmod.DP_KEYS)

    verdict = json.loads((dp_bundle / "policy" / "verdict.json").read_text())
    assert verdict["dp"]["guarantee"] == statement
    assert verdict["dp"]["audit_check"]["verdict"] == "consistent"
    assert {r["name"]: r["passed"] for r in verdict["rules"]}["dp.epsilon"] is True

    meta = json.loads((dp_bundle / "croissant.json").read_text())
    assert f"({eps}, 1e-05)-differentially private" in meta["description"]
    assert "one training image" in meta["rai:personalSensitiveInformation"]
    (rs,) = [r for r in meta["recordSet"] if r["@id"] == "differential_privacy"]
    assert rs["data"] == [
        {
            f"differential_privacy/{k}": v
            for k, v in statement.items()
            if k in {f["name"] for f in rs["field"]}
        }
    ]
    assert len(rs["field"]) == len(dpmod.DP_KEYS)

    report = (dp_bundle / "report" / "report.html").read_text()
    assert f"(ε = {eps}, δ = 1e-05) differential-privacy guarantee" in report
    assert "It does <b>not</b> cover this report" in report


def test_a_non_dp_bundle_says_there_is_no_guarantee(plain_bundle):
    card = (plain_bundle / "README.md").read_text()
    assert "**no differential-privacy guarantee**" in card
    prov = json.loads((plain_bundle / "provenance.json").read_text())
    verdict = json.loads((plain_bundle / "policy" / "verdict.json").read_text())
    meta = json.loads((plain_bundle / "croissant.json").read_text())
    assert prov["dp"] is None and verdict["dp"] is None
    assert "no differential-privacy guarantee" in meta["description"]
    assert "no differential-privacy guarantee" in meta["rai:personalSensitiveInformation"]
    assert not [r for r in meta["recordSet"] if r["@id"] == "differential_privacy"]
    assert (
        "no differential-privacy guarantee" in (plain_bundle / "report" / "report.html").read_text()
    )


def test_dp_croissant_validates_without_warnings(dp_bundle, caplog, statement):
    mlc = pytest.importorskip("mlcroissant")
    with caplog.at_level(logging.WARNING):
        ds = mlc.Dataset(jsonld=str(dp_bundle / "croissant.json"))
    assert not ds.metadata.ctx.issues.errors and not ds.metadata.ctx.issues.warnings, (
        ds.metadata.ctx.issues.report()
    )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    (rec,) = list(ds.records("differential_privacy"))
    assert rec["differential_privacy/epsilon"] == statement["epsilon"]
    assert rec["differential_privacy/steps"] == 200


# ---- verify ------------------------------------------------------------------------------------


def _reseal(bundle: Path) -> None:
    """A forger's reseal: every checksum in croissant.json and the manifest recomputed."""
    resealing.reseal(bundle)  # in the writer's format: verify rebuilds croissant.json


def _edit_json(path: Path, edit) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def test_verify_detects_a_tampered_epsilon_everywhere_resealed(dp_bundle, tmp_path, statement):
    """ε lowered consistently in provenance, verdict, audit, croissant and card, then resealed:
    the accountant's recomputation from σ, q, steps and δ still catches it."""
    import shutil

    b = tmp_path / "b"
    shutil.copytree(dp_bundle, b)
    old, new = statement["epsilon"], 1.0
    _edit_json(b / "provenance.json", lambda p: p["dp"].update(epsilon=new))
    _edit_json(
        b / "policy" / "verdict.json",
        lambda v: (
            v["dp"]["guarantee"].update(epsilon=new),
            [r.update(value=new) for r in v["rules"] if r["name"] == "dp.epsilon"],
        ),
    )
    _edit_json(b / "report" / "audit.json", lambda a: a["dp"].update(proven_epsilon=new))
    _edit_json(
        b / "croissant.json",
        lambda m: [
            r["data"][0].update({"differential_privacy/epsilon": new})
            for r in m["recordSet"]
            if r["@id"] == "differential_privacy"
        ],
    )
    for f in ("README.md", "report/report.html", "croissant.json"):
        (b / f).write_text((b / f).read_text().replace(f"{old:.6g}", f"{new:.6g}"))
    _reseal(b)
    problems = verify_bundle(b)
    assert any(
        "provenance.json dp: epsilon 1 is not what the accountant gives" in p for p in problems
    ), problems
    assert not any(p.startswith(("changed:", "extra:", "missing:")) for p in problems), problems


@pytest.mark.parametrize("where", ["README.md", "verdict", "croissant"])
def test_verify_detects_a_document_stating_another_epsilon(dp_bundle, tmp_path, statement, where):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(dp_bundle, b)
    eps = f"{statement['epsilon']:.6g}"
    if where == "README.md":
        (b / "README.md").write_text((b / "README.md").read_text().replace(eps, "1.5"))
        expect = "README.md: line"
    elif where == "verdict":
        _edit_json(
            b / "policy" / "verdict.json", lambda v: v["dp"]["guarantee"].update(epsilon=1.5)
        )
        expect = "policy/verdict.json: dp is"
    else:
        _edit_json(
            b / "croissant.json",
            lambda m: [
                r["data"][0].update({"differential_privacy/epsilon": 1.5})
                for r in m["recordSet"]
                if r["@id"] == "differential_privacy"
            ],
        )
        expect = "croissant.json: the differential_privacy record set"
    _reseal(b)
    problems = verify_bundle(b)
    assert any(p.startswith(expect) for p in problems), problems


def test_verify_flags_a_dp_violation_inside_a_bundle(dp_bundle, tmp_path, statement):
    """A bundle whose audit contradicts its guarantee should never exist."""
    import shutil

    b = tmp_path / "b"
    shutil.copytree(dp_bundle, b)
    _edit_json(
        b / "report" / "audit.json",
        lambda a: a["dp"].update(empirical_epsilon_lower_bound=statement["epsilon"] + 1.0),
    )
    _reseal(b)
    problems = verify_bundle(b)
    # the bound is recomputed from the bundled score files: the edited number is named
    assert any(
        p.startswith("report/audit.json: dp.empirical_epsilon_lower_bound is ")
        and "recomputed from report/game_scores.npz" in p
        for p in problems
    ), problems


def test_violation_tolerance_is_the_root_search_tolerance():
    assert not dpmod.violates(1.0 + 5e-7, 1.0) and dpmod.violates(1.0 + 2e-6, 1.0)
    assert math.isclose(dpmod.VIOLATION_TOL, 1e-6)
    assert np.isfinite(dpmod.epsilon_for(1.0, 1e-5, 0.01, 10))
