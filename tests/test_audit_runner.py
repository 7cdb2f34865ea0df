"""The audit end to end on a tiny synthetic run (--steps 0 --init real: a planted leak)."""

import json

import numpy as np
import pytest

from rcig_release.audits import AuditConfig, run_audit
from rcig_release.errors import InputError

H, C = 8, 4


def _make_run(tmp_path, *, init="real", dp=None, cfg=None):
    from rcig_release.config import DistillConfig, to_dict
    from rcig_release.data import fit_preprocessor, load_dataset
    from rcig_release.distill import distill
    from rcig_release.rundir import write_distilled, write_json

    rng = np.random.default_rng(0)
    protos = rng.random((C, H, H, 1))

    def make(n):
        y = np.arange(n) % C
        x = np.clip(protos[y] + rng.normal(0, 0.25, (n, H, H, 1)), 0, 1).astype(np.float32)
        return x, y

    x_tr, y_tr = make(320)
    x_te, y_te = make(240)
    npz = tmp_path / "data.npz"
    np.savez(npz, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    ds = load_dataset(str(npz))
    cfg = cfg or DistillConfig(ipc=2, steps=0, init=init, width=4, seed=3)
    prep = fit_preprocessor(ds.x_train, zca=False)
    res = distill(cfg, prep.transform(ds.x_train), ds.y_train, C)
    run = tmp_path / "run"
    run.mkdir()
    write_distilled(
        run,
        images=prep.inverse(res.images_model),
        labels=res.labels,
        classes=ds.classes,
        images_model=res.images_model,
        log_temp=res.log_temp,
        init_indices=res.init_indices,
        prep_arrays=prep.to_arrays(),
    )
    write_json(
        run / "run.json",
        {
            "config": to_dict(cfg),
            "data": {
                "source": str(npz),
                "fingerprint": ds.fingerprint,
                "split_seed": ds.split_seed,
                "n_train": ds.n_train,
                "n_test": ds.n_test,
            },
            "init": {"mode": init, "indices": res.init_indices.tolist()},
            **({"dp": dp} if dp is not None else {}),
        },
    )
    return run, res.init_indices


# mlp and one shadow per vmapped call: the fewest distinct compiles (the targets' shapes).
TINY = AuditConfig(
    shadows=2,
    targets=2,
    records=200,
    population=200,
    train_steps=30,
    warmup=5,
    full_steps=30,
    full_warmup=5,
    batch=64,
    arch="mlp",
    shadow_group=1,
)


@pytest.mark.slow  # ~60 s on the shared 2-core machine (mostly XLA compiles)
def test_runner_end_to_end_planted_leak(tmp_path):
    from release_fixtures import dp_statement

    # the planted leak claiming a DP guarantee (ε from the accountant, the pipeline not DP):
    # the audit must compare its game at the claim's δ
    claim = dp_statement(noise_multiplier=5.0, steps=20)
    run, init = _make_run(tmp_path, dp=claim)
    gallery = tmp_path / "gallery"
    out = run_audit(run, TINY, private_gallery=gallery, workers=1)
    d = out["dp"]
    assert (d["proven_epsilon"], d["delta"], d["confidence"]) == (claim["epsilon"], 1e-5, 0.99)
    assert d["family_size"] == out["game"]["epsilon"]["family_size"]
    assert 0 <= d["empirical_epsilon_lower_bound"] <= d["largest_showable_epsilon"] + 1e-6
    assert d["consistent"] == (d["empirical_epsilon_lower_bound"] <= claim["epsilon"] + 1e-6)
    assert d["verdict"] == ("consistent" if d["consistent"] else "dp-violation")
    audit = run / "audit"
    on_disk = json.loads((audit / "audit.json").read_text())
    assert on_disk == out
    # every statistic the gate reads, recomputed from the raw files as release does, is the
    # audit's own number (no field differs, even at float tolerance)
    from rcig_release.data import load_dataset
    from rcig_release.release import recompute

    ds = load_dataset(str(tmp_path / "data.npz"))
    raw = recompute.read_audit_dir(audit)
    recompute.check_config(out, raw)
    gi = recompute.inputs_from_audit_dir(
        raw, init_indices=init, n_classes=C, labels=(ds.y_train, ds.y_test)
    )
    again = recompute.recompute(gi, init_mode="real", run_dp=claim)
    assert set(again["game"]["attacks"]) == set(out["game"]["attacks"])
    assert recompute.differences(out, again) == []
    # schema
    import hashlib

    assert out["run_sha256"] == hashlib.sha256((run / "distilled.npz").read_bytes()).hexdigest()
    assert out["run_json_sha256"] == hashlib.sha256((run / "run.json").read_bytes()).hexdigest()
    for name in ("loss", "shadow", "lira_online", "lira_offline", "rmia", "nearest"):
        a = out["attacks"][name]  # this release: fixed members, thresholds on calibration images
        assert 0.0 <= a["auc"] <= 1.0 and "epsilon_lower_bound" not in a
        assert set(a["tpr_at_fpr"]) == {"0.001", "0.01"}
        assert a["tpr_at_fpr"]["0.01"] is None  # 60 calibration non-members cannot place 1 %
        assert "calibration" in a["tpr_at_fpr_reason"]["0.01"] and "init" in a["groups"]
        g = out["game"]["attacks"][name]["groups"]  # the game: every shadow a target
        assert {"all", "init"} <= set(g) and 0.0 <= g["all"]["p_value"]["auc"] <= 1.0
        assert g["all"]["n_guesses"] == 2 * (
            out["records"]["members"] + out["records"]["nonmembers"]
        )
        assert g["all"]["epsilon_lower_bound"] >= 0 and g["all"]["max_epsilon"] >= 0
    assert out["game"]["epsilon"]["family_size"] == 7 * 2 * 2  # attacks x {all, init} x folds
    assert out["game"]["rounds"][0] == {
        "targets": [0],
        "references": [1],
        "lira_variance": "shared global",
        "rmia_a": out["game"]["rounds"][0]["rmia_a"],
    }
    # init-aware shadows: an init record IN for a shadow is one of its init images, so the
    # nearest attack finds every such guess (distance 0) in the game's init group
    assert out["init"]["init_aware_shadows"] is True
    assert out["game"]["attacks"]["nearest"]["groups"]["init"]["auc"] == 1.0
    assert set(out["baselines"]) == {"naive", "full_data"}
    # the full-data model trains with its own recipe, the release's networks with the protocol
    full_t = out["baselines"]["full_data"]["targets"]
    assert (full_t["train_steps"], full_t["lr"], full_t["n_models"]) == (30, 2e-3, 1)
    assert (out["targets"]["train_steps"], out["targets"]["lr"]) == (30, 1e-4)
    assert out["n_shadows"] == 2 and out["config"]["shadows"] == 2
    # planted leak: every released image is an init image -> all flagged; init records found
    cc = out["copy_check"]
    assert cc["near_copies"] == len(init) == cc["n_released"] and cc["threshold"] > 0
    assert out["attacks"]["nearest"]["groups"]["init"]["auc"] == 1.0
    sc = np.load(audit / "scores.npz")
    assert sc["release__nearest"].shape == sc["member"].shape
    # records.json holds indices only; keep.npy balanced
    rec = json.loads((audit / "records.json").read_text())
    assert set(init.tolist()) <= set(rec["members"])
    keep = np.load(audit / "keep.npy")  # independent fair coins per (shadow, record)
    assert keep.dtype == bool and keep.shape == (2, len(sc["member"]))
    assert out["membership"]["draw"].startswith("independent fair coin")
    for f in ("roc.png", "histograms.png", "shadows/0.npz", "shadows/1.npz", "game_scores.npz"):
        assert (audit / f).is_file()
    assert len(list(gallery.glob("*.png"))) == len(init)
    # nothing in the audit directory stores images: shadows keep logits and distances
    for f in audit.glob("shadows*/*.npz"):
        with np.load(f) as z:
            want = {"logits", "keep"} | (
                set() if "full" in f.parent.name else {"near_pixel", "near_feature"}
            )
            assert set(z.files) == want and z["logits"].shape[-1] == C
    assert all(sc[k].ndim == 1 for k in sc.files)
    assert not list(audit.rglob("*.png"))[2:]  # only roc.png and histograms.png

    # an existing audit is never overwritten; --resume reuses the shadows
    with pytest.raises(InputError, match="--resume"):
        run_audit(run, TINY)
    mtime = (audit / "shadows" / "0.npz").stat().st_mtime_ns
    again = run_audit(run, TINY, resume=True)  # finished shadows: nothing recomputed
    assert (audit / "shadows" / "0.npz").stat().st_mtime_ns == mtime
    assert again["attacks"]["lira_online"]["auc"] == pytest.approx(
        out["attacks"]["lira_online"]["auc"]
    )
    with pytest.raises(InputError, match="differs in: shadows"):
        run_audit(run, TINY.replace(shadows=4), resume=True)


def test_runner_refuses_other_data_and_inner_gallery(tmp_path):
    run, _ = _make_run(tmp_path)
    other = tmp_path / "other.npz"
    rng = np.random.default_rng(9)
    np.savez(
        other,
        x_train=rng.random((40, H, H, 1)),
        y_train=np.arange(40) % C,
        x_test=rng.random((40, H, H, 1)),
        y_test=np.arange(40) % C,
    )
    with pytest.raises(InputError, match="fingerprint"):
        run_audit(run, TINY, data=str(other))
    with pytest.raises(InputError, match="outside the run directory"):
        run_audit(run, TINY, private_gallery=run / "g")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        run_audit(run, TINY, private_gallery=full)
    assert not (run / "audit").exists() and (full / "x.txt").read_text() == "keep me"


def test_shadow_config_reuses_the_runs_tuned_learning_rates():
    from types import SimpleNamespace

    from rcig_release.audits.runner import shadow_config
    from rcig_release.config import DistillConfig

    tuned = SimpleNamespace(
        config=DistillConfig(tune_lr=True), run_json={"tuning": {"inner_lr": 2e-3, "hvp_lr": 4.5}}
    )
    c = shadow_config(tuned, AuditConfig())
    assert (c.tune_lr, c.inner_lr, c.hvp_lr) == (False, 2e-3, 4.5)
    assert (
        c.replace(tune_lr=True, inner_lr=tuned.config.inner_lr, hvp_lr=tuned.config.hvp_lr)
        == tuned.config
    )  # nothing else changes
    assert shadow_config(tuned, AuditConfig(shadow_lrs="tune")) == tuned.config
    untuned = SimpleNamespace(config=DistillConfig(tune_lr=False), run_json={"tuning": {}})
    assert shadow_config(untuned, AuditConfig()) == untuned.config


def test_downstream_steps_count_the_images_before_flips():
    from rcig_release.audits.shadows import Downstream

    assert Downstream().steps_for(10, "mse") == 1000  # the protocol's U for a 10-image set
    # the authors pick U before adding the flips: 10 images stay at 1000 steps when doubled
    assert Downstream(flip=True).steps_for(10, "mse") == 1000
    assert Downstream(flip=True).steps_for(11, "mse") == 2000
    assert Downstream(flip=True).steps_for(10, "ce") == 1000  # real sets are not flipped
    assert Downstream(steps=7, flip=True).steps_for(10, "mse") == 7
