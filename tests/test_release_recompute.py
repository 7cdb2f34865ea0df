"""The gate recomputes every statistic it reads from the audit's raw files (issue #21, item 4).

An edited ``audit.json`` (a p-value, a fold size, an ε bound, the confidence, the shadow count, the
init group) never changes a verdict: ``release`` refuses it (exit 2, naming the field) and
``verify`` names it in a bundle (exit 1); edited raw files (coins, records, scores) are caught too.
Synthetic runs from ``tests/release_fixtures.py`` (the raw files are drawn by the audit's own
functions from the seed; the game's scores are simulated).
"""

import io
import json
import shutil

import numpy as np
import pytest
from test_release_tamper import DEFAULT, edit_json, reseal
from typer.testing import CliRunner

from rcig_release.audits import dpcheck, game
from rcig_release.cli.main import app
from rcig_release.errors import InputError
from rcig_release.release import recompute, safety
from rcig_release.release.bundle import ReleaseRefused, release
from rcig_release.release.decision import evaluate_policy
from rcig_release.release.policy import load_policy
from rcig_release.release.verify import verify_bundle
from release_fixtures import (
    dp_statement,
    fake_run,
    loader_for,
    private_data,
)

DATA = private_data()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recompute")
    clean = fake_run(tmp / "clean", data=DATA)
    leak = fake_run(tmp / "leak", data=DATA, leak=True)
    bundle = tmp / "bundle"
    release(clean, DEFAULT, bundle, load_private=loader_for(DATA))
    return {"clean": clean, "leak": leak, "bundle": bundle}


@pytest.fixture
def clean(runs, tmp_path):
    shutil.copytree(runs["clean"], tmp_path / "clean")
    return tmp_path / "clean"


@pytest.fixture
def leak(runs, tmp_path):
    shutil.copytree(runs["leak"], tmp_path / "leak")
    return tmp_path / "leak"


@pytest.fixture
def bundle(runs, tmp_path):
    shutil.copytree(runs["bundle"], tmp_path / "b")
    return tmp_path / "b"


def _release(run, tmp_path, **kw):
    return release(run, DEFAULT, tmp_path / "out", load_private=loader_for(DATA), **kw)


def _inputs(run):
    raw = recompute.read_audit_dir(run / "audit")
    with np.load(run / "distilled.npz") as z:
        init = z["init_indices"]
    gi = recompute.inputs_from_audit_dir(
        raw, init_indices=init, n_classes=3, labels=(DATA.y_train, DATA.y_test)
    )
    return raw, gi


# ---- the recomputation is the audit's computation ---------------------------------------------


def test_the_recomputation_equals_the_audits_own_numbers(runs):
    """From the raw files alone, with the groups built here by hand and the audit's own
    ``game.statistics`` / ``dpcheck.dp_section`` (the end-to-end check on a real audit is in
    tests/test_audit_runner.py)."""
    for name in ("clean", "leak"):
        run = runs[name]
        audit = json.loads((run / "audit/audit.json").read_text())
        raw, gi = _inputs(run)
        recs = json.loads((run / "audit/records.json").read_text())
        members, nonmembers = np.array(recs["members"]), np.array(recs["nonmembers"])
        cls = np.r_[DATA.y_train[members], DATA.y_test[nonmembers]]
        with np.load(run / "distilled.npz") as z:
            init_idx = z["init_indices"]
        init = np.r_[np.isin(members, init_idx[init_idx >= 0]), np.zeros(len(nonmembers), bool)]
        assert init.sum() == (6 if name == "leak" else 0)
        groups = {"all": np.ones(len(cls), bool)}
        if init.any():
            groups["init"] = init
        groups.update({f"class_{c}": cls == c for c in range(3)})
        with np.load(run / "audit/game_scores.npz") as z:
            keep = z["keep"]
            scores = {k: z[k] for k in z.files if k != "keep"}
        assert np.array_equal(keep, np.load(run / "audit/keep.npy"))
        assert np.array_equal(keep, np.random.default_rng([0, 2]).random(keep.shape) < 0.5)
        by_hand = json.loads(
            json.dumps(game.statistics(scores, keep, groups, delta=1e-8, alpha=0.01))
        )
        rec = recompute.recompute(gi, init_mode="real" if name == "leak" else "noise")
        assert rec["game"]["attacks"] == by_hand["attacks"]
        assert rec["game"]["epsilon"] == by_hand["epsilon"]
        assert rec["n_shadows"] == 16 and rec["init"]["n_init_records"] == init.sum()
        assert recompute.differences(audit, rec) == []
    # a DP run's section as dpcheck computes it
    statement = dp_statement()
    audit = json.loads((runs["clean"] / "audit/audit.json").read_text())
    _, gi = _inputs(runs["clean"])
    rec = recompute.recompute(gi, init_mode="noise", run_dp=statement, parts=("dp",))
    want = dpcheck.dp_section(
        statement, gi.scores, gi.keep, {"all": np.ones(400, bool)}, alpha=0.01
    )
    assert rec["dp"] == json.loads(json.dumps(want))
    assert recompute.differences({**audit, "dp": want}, rec) == []


def test_an_untouched_audit_releases_and_verifies(runs):
    assert verify_bundle(runs["bundle"]) == []
    files = {p.relative_to(runs["bundle"]).as_posix() for p in runs["bundle"].rglob("*")}
    assert {"report/game_scores.npz", "report/game_records.json"} <= files
    # the audit's score file byte for byte; the records as classes and init flags only
    assert (runs["bundle"] / "report/game_scores.npz").read_bytes() == (
        runs["clean"] / "audit/game_scores.npz"
    ).read_bytes()
    doc = json.loads((runs["bundle"] / "report/game_records.json").read_text())
    assert set(doc) == {"about", "n_records", "record_class", "init"} and doc["n_records"] == 400
    assert set(doc["record_class"]) == {0, 1, 2} and set(doc["init"]) == {False}
    with np.load(runs["bundle"] / "report/game_scores.npz") as z:
        assert set(z.files) == {"keep", "loss", "shadow", "lira_online", "lira_offline", "rmia"} | {
            "nearest",
            "nearest_feature",
        }
        assert all(z[k].ndim == 2 for k in z.files)  # [K, N]: no pixel, no index
    assert not any(f.split("/")[-1] in ("records.json", "keep.npy") for f in files)  # no index


# ---- release: an edited audit.json is exit 2 naming the field ---------------------------------

G = ("game", "attacks")


def _set(path, value):
    def edit(a):
        node = a
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value

    return edit


EDITS = [
    (
        "clean",
        _set((*G, "lira_online", "groups", "all", "p_value", "auc"), 0.9),
        "game.attacks.lira_online.groups.all.p_value.auc is 0.9, recomputed from",
    ),
    (
        "clean",
        lambda a: a["game"]["attacks"]["loss"]["groups"]["all"]["folds"][1]["tpr_at_fpr"][
            "0.001"
        ].update(n_out=20000),
        "game.attacks.loss.groups.all.folds[1].tpr_at_fpr.0.001.n_out is 20000",
    ),
    (
        "leak",
        _set((*G, "nearest", "groups", "all", "epsilon_lower_bound"), 5.0),
        "game.attacks.nearest.groups.all.epsilon_lower_bound is 5.0",
    ),
    (
        "clean",
        _set((*G, "rmia", "groups", "all", "max_epsilon"), 40.0),
        "game.attacks.rmia.groups.all.max_epsilon is 40.0",
    ),
    ("clean", _set(("game", "epsilon", "confidence"), 0.999), "game.epsilon.confidence is 0.999"),
    ("clean", _set(("n_shadows",), 64), "n_shadows is 64, recomputed from"),
    ("leak", _set(("init", "n_init_records"), 0), "init.n_init_records is 0"),
    (
        "leak",
        _set(("init", "init_aware_shadows"), False),
        "init.init_aware_shadows is false",
    ),
    (
        "clean",
        lambda a: a["game"]["attacks"].update(extra=a["game"]["attacks"]["loss"]),
        "game.attacks.extra is not in game_scores.npz",
    ),
    ("clean", _set(("config", "delta"), 0.5), "config.delta is 0.5, RUN/audit/audit_config.json"),
]


@pytest.mark.parametrize("which, edit, message", EDITS)
def test_an_edited_audit_json_is_refused_naming_the_field(runs, tmp_path, which, edit, message):
    run = tmp_path / which
    shutil.copytree(runs[which], run)
    edit_json(run / "audit/audit.json", edit)
    with pytest.raises(InputError) as e:
        _release(run, tmp_path, override="edited")
    assert str(e.value).startswith("audit.json: ") and message in str(e.value), str(e.value)
    assert not (tmp_path / "out").exists()


def test_the_reviewers_edit_cannot_pass_a_leaking_release(leak, tmp_path, monkeypatch):
    """Every p-value set to 0.5 and every ε bound to 0 in audit.json of a release the game refuses:
    exit 2 (CLI), never "policy passed"; the decision on the recomputed values is unchanged."""
    original = json.loads((leak / "audit/audit.json").read_text())
    policy = load_policy(DEFAULT)
    run_json = json.loads((leak / "run.json").read_text())
    before = evaluate_policy(run_json, {"accuracy_mean": 0.9}, original, policy)
    assert not before.passed

    def forge(a):
        for att in a["game"]["attacks"].values():
            for g in att["groups"].values():
                g["p_value"] = {k: 0.5 for k in g["p_value"]}
                for f in g["folds"]:
                    f["auc"]["p_value"] = 0.5
                    for t in f["tpr_at_fpr"].values():
                        t["p_value"] = 0.5
                if "epsilon_lower_bound" in g:
                    g["epsilon_lower_bound"] = 0.0

    edit_json(leak / "audit/audit.json", forge)
    forged = json.loads((leak / "audit/audit.json").read_text())
    rule = "game.nearest[all].tpr_at_fpr_0.001"
    assert not before.rule(rule).passed
    # what the gate would have concluded from audit.json's numbers
    assert evaluate_policy(run_json, {"accuracy_mean": 0.9}, forged, policy).rule(rule).passed
    monkeypatch.setattr(safety, "default_loader", loader_for(DATA))
    res = CliRunner().invoke(
        app, ["release", str(leak), "--policy", str(DEFAULT), "--out", str(tmp_path / "o")]
    )
    assert res.exit_code == 2, res.output
    assert "p_value" in res.output and "recomputed from" in res.output
    assert not (tmp_path / "o").exists()
    # the decision reads the recomputed values: substituting them restores the verdict
    _, gi = _inputs(leak)
    rec = recompute.recompute(gi, init_mode="real")
    after = evaluate_policy(
        run_json, {"accuracy_mean": 0.9}, recompute.substitute(forged, rec), policy
    )
    assert [r.to_json() for r in after.rules] == [r.to_json() for r in before.rules]


# ---- release: edited raw files -----------------------------------------------------------------


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _rewrite_scores(run, change):
    with np.load(run / "audit/game_scores.npz") as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez_compressed(run / "audit/game_scores.npz", **arrays)
    return arrays


def test_edited_coins_are_refused(clean, tmp_path):
    keep = np.load(clean / "audit/keep.npy")
    flipped = keep.copy()
    flipped[0, 0] = ~flipped[0, 0]
    (clean / "audit/keep.npy").write_bytes(_npy(flipped))
    with pytest.raises(InputError, match="keep.npy differs from the keep in"):
        _release(clean, tmp_path)
    # the same flip in both files: not the coins the seed draws
    _rewrite_scores(clean, lambda a: a.update(keep=flipped))
    with pytest.raises(InputError, match=r"keep is not the coins the audit's seed \(0\) draws"):
        _release(clean, tmp_path)


def test_edited_records_and_seed_are_refused(clean, leak, tmp_path):
    rec = json.loads((clean / "audit/records.json").read_text())
    outside = sorted(set(range(400)) - set(rec["members"]))[0]
    rec["members"][0] = outside  # another training record audited in its place
    (clean / "audit/records.json").write_text(json.dumps(rec))
    with pytest.raises(InputError, match=r"records.json: not the records the audit's seed"):
        _release(clean, tmp_path)
    # an init record of the run dropped from the audit
    rec = json.loads((leak / "audit/records.json").read_text())
    dropped = rec["init_records"].pop(0)
    rec["members"].remove(dropped)
    rec["members"].append(outside)
    (leak / "audit/records.json").write_text(json.dumps(rec))
    with pytest.raises(InputError, match="init record.*not among the audit's init records"):
        _release(leak, tmp_path)


def test_a_different_seed_is_refused(clean, tmp_path):
    for path in ("audit/audit_config.json", "audit/audit.json"):
        edit_json(clean / path, lambda c: (c.get("config", c)).update(seed=1))
    with pytest.raises(InputError, match=r"the audit's seed \(1\)"):
        _release(clean, tmp_path)


def test_edited_scores_are_refused_naming_the_field(leak, tmp_path):
    def hide(a):  # the init records' leak taken out of the release-direct attacks
        for k in ("nearest", "nearest_feature"):
            a[k] = np.where(a[k] > 10, a[k] - 20.0, a[k])

    _rewrite_scores(leak, hide)
    with pytest.raises(InputError, match=r"^audit.json: game.attacks.nearest.*recomputed from"):
        _release(leak, tmp_path, override="x")


def test_float32_scores_of_an_older_audit_are_refused(clean, tmp_path):
    _rewrite_scores(
        clean, lambda a: a.update({k: v.astype(np.float32) for k, v in a.items() if k != "keep"})
    )
    with pytest.raises(InputError, match="loss is float32, not the float64 scores.*re-run"):
        _release(clean, tmp_path)


@pytest.mark.parametrize("name", ["game_scores.npz", "keep.npy", "records.json"])
def test_missing_raw_files_are_exit_2(clean, tmp_path, name):
    (clean / "audit" / name).unlink()
    with pytest.raises(InputError, match=f"RUN/audit/{name} not found"):
        _release(clean, tmp_path)


def test_a_dp_audit_section_is_recomputed(tmp_path):
    small = dp_statement(noise_multiplier=5.0, steps=20)
    run = fake_run(tmp_path / "run", data=DATA, dp=small, dp_game_leak=True)
    # the violation hidden in the numbers themselves (lower bound set below the proven ε)
    edit_json(
        run / "audit/audit.json",
        lambda a: a["dp"].update(
            empirical_epsilon_lower_bound=0.01, consistent=True, verdict="consistent"
        ),
    )
    with pytest.raises(InputError, match="dp.empirical_epsilon_lower_bound is 0.01"):
        _release(run, tmp_path, override="x")


# ---- verify: the bundled score files -------------------------------------------------------------


BUNDLE_EDITS = [
    (
        _set((*G, "loss", "groups", "all", "p_value", "tpr_at_fpr_0.01"), 0.77),
        "report/audit.json: game.attacks.loss.groups.all.p_value.tpr_at_fpr_0.01 is 0.77",
    ),
    (
        lambda a: a["game"]["attacks"]["rmia"]["groups"]["all"]["folds"][0]["auc"].update(
            n_in=5000
        ),
        "report/audit.json: game.attacks.rmia.groups.all.folds[0].auc.n_in is 5000",
    ),
    (
        _set((*G, "shadow", "groups", "all", "epsilon_lower_bound"), 3.5),
        "report/audit.json: game.attacks.shadow.groups.all.epsilon_lower_bound is 3.5",
    ),
    (_set(("game", "epsilon", "confidence"), 0.5), "report/audit.json: game.epsilon.confidence"),
    (_set(("n_shadows",), 64), "report/audit.json: n_shadows is 64"),
]


@pytest.mark.parametrize("edit, message", BUNDLE_EDITS)
def test_verify_names_an_edited_bundled_audit(bundle, edit, message):
    edit_json(bundle / "report/audit.json", edit)
    reseal(bundle)
    problems = verify_bundle(bundle)
    assert any(p.startswith(message) for p in problems), problems
    assert all("recomputed from report/game_scores.npz" in p for p in problems), problems


def test_verify_names_edited_bundled_score_files(bundle, tmp_path):
    b2 = tmp_path / "b2"
    shutil.copytree(bundle, b2)
    # a score changed: the statistics in report/audit.json no longer follow from it
    with np.load(bundle / "report/game_scores.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["loss"] = arrays["loss"] + 2.0 * arrays["keep"]
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    (bundle / "report/game_scores.npz").write_bytes(buf.getvalue())
    reseal(bundle)
    problems = verify_bundle(bundle)
    assert any(
        p.startswith("report/audit.json: game.attacks.loss.groups.all.")
        and "recomputed from report/game_scores.npz" in p
        for p in problems
    ), problems
    res = CliRunner().invoke(app, ["verify", str(bundle)])
    assert res.exit_code == 1 and "game_scores.npz" in res.output

    # coins changed: not the seed's
    arrays["keep"][3, 7] = ~arrays["keep"][3, 7]
    np.savez_compressed(buf := io.BytesIO(), **arrays)
    (bundle / "report/game_scores.npz").write_bytes(buf.getvalue())
    reseal(bundle)
    assert any(
        p.startswith("report/game_scores.npz: keep is not the coins") for p in verify_bundle(bundle)
    )

    # the records' groups changed: a class moved
    edit_json(b2 / "report/game_records.json", lambda d: d["record_class"].__setitem__(0, 2))
    reseal(b2)
    problems = verify_bundle(b2)
    assert any(
        p.startswith("report/audit.json: game.attacks.") and ".groups.class_" in p for p in problems
    ), problems


def test_verify_needs_the_score_files(bundle):
    (bundle / "report/game_scores.npz").unlink()
    reseal(bundle)
    problems = verify_bundle(bundle)
    assert (
        "missing: report/game_scores.npz (the game's statistics cannot be recomputed)" in problems
    )


def test_a_failing_release_still_fails_after_an_edit_to_its_scores(leak, tmp_path):
    """Scores consistent with a forged audit.json cannot be made up: the coins are the seed's,
    so the leak's IN guesses are known; here the raw files are left alone and the gate refuses."""
    with pytest.raises(ReleaseRefused) as e:
        _release(leak, tmp_path)
    assert "game.nearest[init].auc" in {r.name for r in e.value.decision.failed}
