"""A DP-feature-means run's bundle (``--dp-mechanism features``) gets the coverage of a DP-RCIG
bundle (issue 20 item 3): by default only the DP output and what derives from it and public
facts, byte for byte independent of the private statistics; the card states the one-release
guarantee; verify recomputes ε with the one-release accountant and catches an edited ε."""

import datetime
import json
import types

import numpy as np
from test_release_private import (
    DP,
    PRIVATE_KEYS,
    _Frozen,
    bundle_bytes,
    differing,
    json_keys,
    key_file,
)

from rcig_release.config import DistillConfig
from rcig_release.rcig import dpstat
from rcig_release.release import bundle as bundlemod
from rcig_release.release import coverage
from rcig_release.release import dp as release_dp
from rcig_release.release.bundle import release
from rcig_release.release.verify import verify_bundle
from release_fixtures import (
    fake_run,
    loader_for,
    private_data,
)


def features_statement(n_train: int = 200) -> dict:
    """The run.json ``dp`` of a features run, written by the mechanism's own ``record``."""
    cfg = DistillConfig(
        ipc=2, dp_epsilon=1.0, dp_delta=1e-6, dp_mechanism="features", dp_networks=3, width=2
    )
    cfg = cfg.replace(dp_noise_multiplier=dpstat.calibrate_noise(1.0, 1e-6))
    return {
        **dpstat.record(cfg, n_train, 3 * 32 + 64 + 1, 3),
        "preprocessing": "fixed per-channel standardisation, not fitted; no ZCA",
    }


def features_run(root, *, variant: int):
    """As test_release_private.dp_run, with a features statement: fixed output and statement;
    the private splits, the attacks' AUCs and the accuracies depend on ``variant`` (the audit's
    game and DP section are those fake_run computes from its raw files)."""
    data = private_data(seed=2 * variant)
    statement = features_statement()
    run = fake_run(root, data=data, dp=statement)
    audit_path = run / "audit" / "audit.json"
    audit = json.loads(audit_path.read_text())
    rng = np.random.default_rng(100 + variant)
    for a in audit["attacks"].values():
        a["auc"] = float(0.5 + 0.02 * rng.random())
    audit_path.write_text(json.dumps(audit))
    ev = json.loads((run / "eval.json").read_text())
    ev["accuracy_mean"] = float(0.7 + 0.2 * rng.random())
    ev["accuracies"] = [float(v) for v in 0.7 + 0.2 * rng.random(5)]
    (run / "eval.json").write_text(json.dumps(ev))
    return run, data


def test_a_features_bundle_holds_no_private_statistic_by_default(tmp_path, monkeypatch):
    monkeypatch.setattr(bundlemod, "_dt", types.SimpleNamespace(datetime=_Frozen, UTC=datetime.UTC))
    key = key_file(tmp_path / "k")
    built = {}
    for variant in (0, 1):
        run, data = features_run(tmp_path / f"run{variant}", variant=variant)
        for include in (False, True):
            out = tmp_path / f"b{variant}{'i' if include else ''}"
            result = release(
                run,
                DP,
                out,
                load_private=loader_for(data),
                fingerprint_key=key,
                include_private_stats=include,
                name="DP features toy",
            )
            assert result.decision.passed
            assert result.private_stats == (coverage.INCLUDED if include else coverage.WITHHELD)
            assert verify_bundle(out) == []
            built[variant, include] = bundle_bytes(out)
    default = built[0, False]
    assert differing(default, built[1, False]) == []  # no file is a function of the statistics
    assert differing(built[0, True], built[1, True]) != []  # the comparison can fail
    assert not any(p.startswith("report/") for p in default)
    for path, data in default.items():
        if path.endswith(".json"):
            keys = json_keys(json.loads(data))
            assert not keys & PRIVATE_KEYS, (path, keys & PRIVATE_KEYS)
    prov = json.loads(default["provenance.json"])
    assert prov["dp"]["dp_mechanism"] == "features" and prov["dp"]["sampling"] == "none"
    assert prov["release"]["private_stats"] == "withheld"
    card = default["README.md"].decode()
    assert "one Gaussian release" in card and "no sampling, no composition" in card


def test_verify_recomputes_a_features_epsilon_and_catches_an_edit(tmp_path):
    run, data = features_run(tmp_path / "run", variant=0)
    out = tmp_path / "b"
    release(run, DP, out, load_private=loader_for(data), fingerprint_key=key_file(tmp_path / "k"))
    prov = json.loads((out / "provenance.json").read_text())
    dp = release_dp.validate_dp(prov["dp"])
    assert release_dp.check_epsilon(dp) is None
    assert dp["epsilon"] == dpstat.epsilon_for(dp["noise_multiplier"], dp["delta"]) <= 1.0
    # a DP-RCIG reading of the same σ (q = 1, one step) gives the same ε: one Gaussian release
    assert math_close(release_dp.epsilon_for(dp["noise_multiplier"], dp["delta"], 1.0, 1), dp)
    # broken: the ε lowered in the statement is caught by the recomputation
    assert "not what the accountant gives" in release_dp.check_epsilon({**dp, "epsilon": 0.5})


def math_close(eps: float, dp: dict) -> bool:
    return abs(eps - dp["epsilon"]) <= 1e-9 * dp["epsilon"]
