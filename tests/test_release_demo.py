"""The shipped policies are package data (``--policy default|strict|dp|demo`` or a path), and the
``demo`` policy's bundle says on every document that it is a demonstration, not a privacy audit."""

import json
import tomllib
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rcig_release.cli.main import app
from rcig_release.errors import InputError
from rcig_release.release import safety
from rcig_release.release.bundle import release
from rcig_release.release.decision import evaluate_policy
from rcig_release.release.policy import (
    SHIPPED_SHA256,
    load_policy,
    parse_policy,
    resolve_policy,
    shipped_policy_path,
)
from rcig_release.release.verify import verify_bundle
from release_fixtures import fake_run, loader_for, private_data

ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "rcig_release" / "policies"


def test_every_shipped_policy_is_package_data_and_named():
    """The four policies live in rcig_release/policies/, pyproject ships *.toml from there, the
    top-level policies/ is the same directory, and each loads by its name with its shipped hash."""
    assert sorted(p.stem for p in PACKAGED.glob("*.toml")) == sorted(SHIPPED_SHA256)
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = meta["tool"]["setuptools"]["package-data"]["rcig_release"]
    assert any(PACKAGED.parent.joinpath(g).parent == PACKAGED for g in globs if "*" in g)
    assert (ROOT / "policies").resolve() == PACKAGED.resolve()
    for name, digest in SHIPPED_SHA256.items():
        path = shipped_policy_path(name)
        assert path.resolve() == (PACKAGED / f"{name}.toml").resolve()
        p = load_policy(name)
        assert p.name == name and p.sha256 == digest and not p.modified


def test_policy_names_paths_and_unknown_names(tmp_path, monkeypatch):
    assert resolve_policy("strict") == shipped_policy_path("strict")
    assert resolve_policy(str(PACKAGED / "dp.toml")) == PACKAGED / "dp.toml"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "default").write_bytes((PACKAGED / "strict.toml").read_bytes())
    assert resolve_policy("default") == Path("default")  # an existing file wins over a name
    for bad in ("defualt", "nope.toml", str(tmp_path / "missing.toml")):
        with pytest.raises(InputError) as e:
            resolve_policy(bad)
        assert "shipped: default, strict, dp, demo" in str(e.value)
    (tmp_path / "d").mkdir()
    with pytest.raises(InputError, match="is not a file"):
        resolve_policy("d")


def test_false_switches_a_rule_off_only_where_absent_would_not_mean_inherit():
    text = (PACKAGED / "default.toml").read_bytes()
    off = text.replace(b"detect_tpr_at_fpr_0_001 = 0.12", b"detect_tpr_at_fpr_0_001 = false")
    assert parse_policy(off).overall.detect_tpr_at_fpr_0_001 is None
    with pytest.raises(InputError, match="missing key limits.detect_tpr_at_fpr_0_001"):
        parse_policy(text.replace(b"detect_tpr_at_fpr_0_001 = 0.12", b""))
    with pytest.raises(InputError, match="wrong type"):  # true is no effect size
        parse_policy(text.replace(b"detect_auc = 0.57", b"detect_auc = true"))
    per_attack = text.replace(
        b"[limits.groups]", b"[limits.attack.loss]\ndetect_auc = false\n[limits.groups]"
    )
    with pytest.raises(InputError, match="limits.attack.loss.detect_auc has the wrong type"):
        parse_policy(per_attack)


def test_demo_policy_is_marked_and_still_tests():
    demo = load_policy("demo")
    default = load_policy("default")
    assert demo.demonstration and not default.demonstration
    assert demo.min_shadows == 4 and demo.required_attacks == default.required_attacks
    assert demo.overall.detect_auc is not None and demo.overall.detect_tpr_at_fpr_0_01 is not None
    assert demo.power == default.power and demo.alpha == default.alpha
    # the flag is part of the file: a copy without it is a modified, non-demonstration "demo"
    plain = parse_policy(
        shipped_policy_path("demo").read_bytes().replace(b"demonstration = true\n", b"")
    )
    assert plain.modified and not plain.demonstration


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    data = private_data()
    run = fake_run(tmp / "run", data=data)
    out = tmp / "bundle"
    result = release(run, "demo", out, load_private=loader_for(data))
    return run, out, result, data


def test_demo_bundle_says_demonstration_everywhere_and_verifies(demo_bundle):
    run, out, result, _ = demo_bundle
    assert result.decision.passed and result.decision.demonstration
    assert verify_bundle(out) == []
    verdict = json.loads((out / "policy/verdict.json").read_text())
    assert verdict["policy"]["demonstration"] is True
    assert "demonstration at reduced audit sizes, not a privacy audit" in verdict["demonstration"]
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert "privacy-audited" not in meta["tags"] and "demonstration" in meta["tags"]
    assert "demonstration at reduced" in card.split("---\n", 2)[2][:1500]  # in the first screen
    assert "privacy-audited" not in json.loads((out / "croissant.json").read_text())["keywords"]
    assert "demonstration" in (out / "report/report.html").read_text()
    assert "TPR at 0.1 % FPR (the policy does not apply it)" in card
    # the same run under the default policy: tagged, and no demonstration statement
    d = evaluate_policy(
        json.loads((run / "run.json").read_text()),
        json.loads((run / "eval.json").read_text()),
        json.loads((run / "audit/audit.json").read_text()),
        load_policy("default"),
    )
    assert not d.demonstration


def test_demo_verdict_flag_must_match_the_bundled_policy(demo_bundle, tmp_path):
    """verify: a verdict that drops the demonstration flag no longer matches the bundled policy
    (the broken variant of the check is the bundle itself with the flag flipped)."""
    from rcig_release.release import consistency

    _, out, _, _ = demo_bundle
    files = {"policy/policy.toml": (out / "policy/policy.toml").read_bytes()}
    verdict = json.loads((out / "policy/verdict.json").read_text())
    prov = json.loads((out / "provenance.json").read_text())
    problems: list[str] = []
    consistency.load_policy_file(files, verdict, prov, problems)
    assert problems == []
    verdict["policy"]["demonstration"] = False
    consistency.load_policy_file(files, verdict, prov, problems)
    assert any("demonstration" in p for p in problems)


def test_cli_release_by_name(tmp_path, demo_bundle, monkeypatch):
    run, _, _, data = demo_bundle
    monkeypatch.setattr(safety, "default_loader", loader_for(data))
    out = tmp_path / "b"
    res = CliRunner().invoke(app, ["release", str(run), "--policy", "demo", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "demonstration" in res.output and out.is_dir()
    res = CliRunner().invoke(
        app, ["release", str(run), "--policy", "defualt", "--out", str(tmp_path / "c")]
    )
    assert res.exit_code == 2
    assert "shipped: default, strict, dp, demo" in res.output and not (tmp_path / "c").exists()


def test_demo_policy_decides_at_its_sizes_and_refuses_a_planted_leak():
    """On games simulated by the audit's own statistics at the demo's sizes (4 shadows, 360
    records, as digits gives): a release at chance passes every privacy rule of the demo policy
    (each applied test decidable), the planted leak is refused with a leak detected, and the
    default policy cannot decide at these sizes (it refuses the same release at chance)."""
    from rcig_release.release.documents import outcome_text
    from release_fixtures import simulated_game

    demo, default = load_policy("demo"), load_policy("default")
    run = {"init": {"mode": "noise"}, "config": {"init": "noise"}}
    ev = {"accuracy_mean": 0.6}

    def privacy(leak: bool, seed: int, policy):
        g = simulated_game(leak, shadows=4, records=360, seed=seed)
        audit = {"game": g, "n_shadows": 4, "attacks": {}, "copy_check": {}}
        return [
            r for r in evaluate_policy(run, ev, audit, policy).rules if r.name.startswith("game.")
        ]

    passed = sum(all(r.passed for r in privacy(False, seed, demo)) for seed in range(4))
    assert passed == 4  # each fails with probability <= 0.05
    for seed in range(2):
        rules = privacy(True, seed, demo)
        assert any(outcome_text(r) == "LEAK DETECTED" for r in rules)
    at_chance = privacy(False, 0, default)
    assert any(outcome_text(r) == "undecidable" for r in at_chance)
