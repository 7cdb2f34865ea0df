"""`rcig-release audit` CLI: flags reach the library; errors become exit 2 (heavy call patched)."""

import json

import pytest
from typer.testing import CliRunner

from rcig_release.cli.main import app


@pytest.fixture(autouse=True)
def run_files(tmp_path):
    """The files the command's path checks look for (the library is replaced in these tests)."""
    for name in ("distilled.npz", "run.json"):
        (tmp_path / name).write_bytes(b"")


_G = {
    "auc": 0.6,
    "p_value": {"auc": 0.002, "tpr_at_fpr_0.01": 0.5, "tpr_at_fpr_0.001": None},
    "epsilon_lower_bound": 0.0,
    "max_epsilon": 2.5,
}
FAKE = {
    "run_sha256": "ab" * 32,
    "n_shadows": 4,
    "records": {
        "members": 10,
        "nonmembers": 10,
        "calibration": 5,
        "population": 5,
        "file": "records.json",
    },
    "game": {
        "epsilon": {"delta": 1e-8, "confidence": 0.99},
        "attacks": {"loss": {"groups": {"all": _G, "init": {**_G, "auc": 0.9}}}},
    },
    "attacks": {
        "loss": {
            "auc": 0.6,
            "tpr_at_fpr": {"0.001": None, "0.01": 0.1},
            "tpr_at_fpr_ci": {"0.001": None, "0.01": [0.01, 0.3]},
            "advantage": 0.2,
            "groups": {"init": {"auc": 1.0}},
        }
    },
    "baselines": {},
    "copy_check": {"near_copies": 2, "threshold": 0.1, "n_released": 10, "rule": "r"},
}


def test_flags_reach_the_library(monkeypatch, tmp_path):
    seen = {}

    def fake(run, cfg, **kw):
        seen.update(run=run, cfg=cfg, **kw)
        return FAKE

    monkeypatch.setattr("rcig_release.audits.runner.run_audit", fake)
    r = CliRunner().invoke(
        app,
        [
            "audit",
            str(tmp_path),
            "--shadows",
            "4",
            "--targets",
            "2",
            "--records",
            "10",
            "--attacks",
            "loss,rmia",
            "--baselines",
            "none",
            "--resume",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    cfg = seen["cfg"]
    assert (cfg.shadows, cfg.targets, cfg.records) == (4, 2, 10)
    assert cfg.attacks == ("loss", "rmia") and cfg.baselines == () and seen["resume"] is True
    out = json.loads(r.stdout)
    assert out["copy_check"]["near_copies"] == 2 and out["game"]["loss"]["auc"] == 0.6
    assert (
        out["game"]["loss"]["p_value"]["auc"] == 0.002 and out["game"]["loss"]["init"]["auc"] == 0.9
    )
    assert out["this_release"]["loss"]["auc"] == 0.6


def test_table_output(monkeypatch, tmp_path):
    monkeypatch.setattr("rcig_release.audits.runner.run_audit", lambda run, cfg, **kw: FAKE)
    r = CliRunner().invoke(app, ["audit", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "loss" in r.stdout and "n/a" in r.stdout and "near copies" in r.stdout
    assert "Membership game" in r.stdout and "This release" in r.stdout and "0.002" in r.stdout


def test_closing_output_says_how_to_get_the_private_gallery(monkeypatch, tmp_path):
    """Without --private-gallery the closing output says how to get one and that it holds private
    pixels; with it, where it went; never in --json (the summary is the output)."""
    from rcig_release.cli.audit_cmd import GALLERY_HINT

    monkeypatch.setattr("rcig_release.audits.runner.run_audit", lambda run, cfg, **kw: FAKE)
    r = CliRunner().invoke(app, ["audit", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "--private-gallery DIR" in GALLERY_HINT and "private pixels" in GALLERY_HINT
    assert " ".join(r.stdout.split()).endswith(" ".join(GALLERY_HINT.split()))
    fake = {**FAKE, "private_gallery_images": 16}
    monkeypatch.setattr("rcig_release.audits.runner.run_audit", lambda run, cfg, **kw: fake)
    gallery = tmp_path.parent / "gallery"
    r = CliRunner().invoke(
        app, ["audit", str(tmp_path), "--quiet", "--private-gallery", str(gallery)]
    )
    assert r.exit_code == 0, r.output
    assert "private gallery: 16 image pairs in" in r.stdout and "do not share" in r.stdout
    assert "not written" not in r.stdout
    r = CliRunner().invoke(app, ["audit", str(tmp_path), "--json"])
    assert r.exit_code == 0 and "private-gallery" not in r.stdout


def test_bad_input_exits_2(tmp_path):
    r = CliRunner().invoke(app, ["audit", str(tmp_path), "--shadows", "3"])
    assert r.exit_code == 2 and "even" in r.output
    r = CliRunner().invoke(app, ["audit", str(tmp_path / "missing"), "--shadows", "2"])
    assert r.exit_code == 2 and "not found" in r.output
    r = CliRunner().invoke(app, ["audit", str(tmp_path), "--attacks", "bogus"])
    assert r.exit_code == 2 and "unknown attack" in r.output
