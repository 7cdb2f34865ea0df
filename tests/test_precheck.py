"""Fail fast: the release's memorisation check at the end of `distill` and `evaluate`, as
`rcig-release check RUN` (exit 0 / 3 / 2) and before the audit's shadows (exit 3, `--force`)."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rcig_release.cli.main import app

TINY_TOML = """
[distill]
width = 2
depth = 1
pool_size = 2
pool_max_steps = 2
real_batch = 16
tune_max_trials = 6
log_every = 1
checkpoint_every = 2
"""


def make_npz(path: Path, n_train=60, n_test=60, classes=3) -> Path:
    """Grey 8×8 images, a class-specific bright row plus per-image noise; enough held-out images
    (180) that the check can reach its level at 1 image per class."""
    rng = np.random.default_rng(0)

    def part(n):
        y = np.repeat(np.arange(classes), n)
        x = rng.uniform(0, 0.5, (len(y), 8, 8))
        x[np.arange(len(y)), 2 * y + 1, :] += 0.5
        return np.clip(x, 0, 1).astype(np.float32), y

    x_tr, y_tr = part(n_train)
    x_te, y_te = part(n_test)
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return path


@pytest.fixture()
def data(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    return make_npz(tmp_path / "d.npz"), tmp_path / "tiny.toml"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def distil(data, out, *extra):
    npz, toml = data
    return invoke("distill", "--data", npz, "--out", out, "--config", toml, "--quiet", *extra)


def test_real_init_is_told_at_start_and_end_and_check_exits_3(data, tmp_path):
    run = tmp_path / "real"
    r = distil(data, run, "--steps", 0, "--init", "real")
    assert r.exit_code == 0, r.output
    out = r.output
    assert "--init real: every image starts from one training record" in out
    assert out.index("starts from one training record") < out.index("done")
    assert "memorisation check: FAILED, release would refuse" in out
    assert "3 of 3 released image(s) flagged" in out and "remedy: --init real" in out
    assert "--init centroids" in out

    r = invoke("check", run)
    assert r.exit_code == 3, r.output
    line = r.output.strip()
    assert line.startswith("error:") and "\n" not in line and "--init centroids" in line
    r = invoke("check", run, "--json")
    assert r.exit_code == 3
    j = json.loads(r.stdout)
    assert j["would_be_refused"] and j["flagged"] == 3 and j["init_mode"] == "real"
    # counts and p-values only: no training index, no pixel value
    assert "index" not in json.dumps(j) and j["smallest_p"] < 0.05 / 6
    # the smallest p over both test families: each image's nearest-record test and the init test
    assert j["smallest_p"] == min(j["smallest_p_nearest"], j["init_test_p"])


def test_default_init_is_releasable_and_evaluate_ends_with_the_check(data, tmp_path):
    run = tmp_path / "default"
    r = distil(data, run, "--steps", 0)
    assert r.exit_code == 0, r.output
    rj = json.loads((run / "run.json").read_text())
    assert rj["config"]["init"] == "centroids" and rj["init"]["mode"] == "centroids"
    assert rj["init"]["indices"] == [-1, -1, -1]
    assert rj["init"]["aggregate"]["min_records"] == 10
    assert "starts from one training record" not in r.output
    assert "memorisation check: passed" in r.output
    r = invoke("check", run)
    assert r.exit_code == 0 and "passed" in r.output
    r = invoke("evaluate", run, "--models", 1, "--steps", 10, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["models"] == 1  # stdout stays the JSON; the check is on stderr
    assert "memorisation check: passed" in r.stderr


def test_check_bad_input_is_exit_2_and_a_check_that_cannot_run_does_not_fail_distill(
    data, tmp_path
):
    r = invoke("check", tmp_path / "missing")
    assert r.exit_code == 2 and r.output.startswith("error:") and "not found" in r.output
    run = tmp_path / "r"
    assert distil(data, run, "--steps", 0).exit_code == 0
    rj = json.loads((run / "run.json").read_text())
    del rj["data"]["fingerprint"]  # evaluate does without it; the check refuses to guess the data
    (run / "run.json").write_text(json.dumps(rj))
    r = invoke("check", run)
    assert r.exit_code == 2 and "fingerprint" in r.output and len(r.output.splitlines()) == 1
    r = invoke("evaluate", run, "--models", 1, "--steps", 5, "--data", data[0])
    assert r.exit_code == 0, r.output
    assert "memorisation check not run" in r.output


def test_an_unresolvable_check_names_the_data_not_the_init(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    npz = make_npz(tmp_path / "small.npz", n_train=12, n_test=2)  # 6 held-out images
    r = distil((npz, tmp_path / "tiny.toml"), tmp_path / "r", "--steps", 0, "--init", "noise")
    assert r.exit_code == 0, r.output
    r = invoke("check", tmp_path / "r")
    assert r.exit_code == 3 and "cannot reach its level" in r.output and "too small" in r.output


def test_audit_stops_before_its_shadows_and_force_goes_on(data, tmp_path, monkeypatch):
    run = tmp_path / "real"
    assert distil(data, run, "--steps", 0, "--init", "real", "--no-check").exit_code == 0
    r = invoke("audit", run, "--shadows", 2, "--quiet")
    assert r.exit_code == 3, r.output
    assert "release would refuse" in r.output and "--init centroids" in r.output
    assert not (run / "audit").exists()  # nothing written, no shadow run

    seen = {}

    def fake(run, cfg, **kw):
        seen.update(kw)
        raise SystemExit(0)

    monkeypatch.setattr("rcig_release.audits.runner.run_audit", fake)
    invoke("audit", run, "--shadows", 2, "--quiet", "--force")
    assert seen["stop_if_unreleasable"] is False
    invoke("audit", run, "--shadows", 2, "--quiet")
    assert seen["stop_if_unreleasable"] is True


def test_library_audit_records_the_precheck_and_stops_on_request(data, tmp_path):
    from rcig_release.audits import AuditConfig, run_audit
    from rcig_release.release.precheck import WouldBeRefused, check_run

    run = tmp_path / "real"
    assert distil(data, run, "--steps", 0, "--init", "real", "--no-check").exit_code == 0
    with pytest.raises(WouldBeRefused, match="3 of 3"):
        run_audit(run, AuditConfig(shadows=2, targets=1, records=10), stop_if_unreleasable=True)
    assert not (run / "audit").exists()
    pre = check_run(run)
    assert not pre.passed and pre.result.flagged == 3 and "--init centroids" in pre.remedy


def test_the_check_is_releases_own_init_set_and_init_test(data, tmp_path):
    """check/distill/audit call what release calls: the recorded init set is recomputed (an edited
    one is exit 2 before any check) and a real run gets the within-class init test."""
    from rcig_release.release.precheck import check_run

    real = tmp_path / "real"
    assert distil(data, real, "--steps", 0, "--init", "real", "--no-check").exit_code == 0
    assert check_run(real).result.memorisation.has_init  # the init test ran (needs the labels)
    default = tmp_path / "default"
    assert distil(data, default, "--steps", 0, "--no-check").exit_code == 0
    assert not check_run(default).result.memorisation.has_init

    with np.load(default / "distilled.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["init_indices"] = np.asarray([0, -1, -1], np.int64)  # claims a record after all
    np.savez(default / "distilled.npz", **arrays)
    rj = json.loads((default / "run.json").read_text())
    rj["init"]["indices"] = [0, -1, -1]
    (default / "run.json").write_text(json.dumps(rj))
    r = invoke("check", default)
    assert r.exit_code == 2 and "aggregate-init run" in r.output, r.output
    r = invoke("audit", default, "--shadows", 2, "--quiet")
    assert r.exit_code == 2 and "aggregate-init run" in r.output, r.output
    assert not (default / "audit").exists()
