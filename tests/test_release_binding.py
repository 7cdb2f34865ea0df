"""The released bytes bound to the audited pipeline (issue 21, item 5): the audit records the
sha256 of run.json and distilled.npz and release refuses either changed since; `release --replay`
re-runs the distillation and requires identical arrays; a DP run, whose noise cannot be replayed,
is bound by its checkpoint chain.

The runs here are real, tiny distillations (8×8 images, width-2 network, 2 steps, no learning-rate
search), made in-process so that the replays reuse the compiled step."""

import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rcig_release import checkpoint
from rcig_release.cli.main import app
from rcig_release.config import DistillConfig
from rcig_release.errors import InputError
from rcig_release.pipeline import distill_run
from rcig_release.release import replay as replaymod
from rcig_release.release.bundle import release
from rcig_release.release.hashing import file_sha256
from rcig_release.release.safety import load_private_splits
from rcig_release.release.verify import verify_bundle
from release_fixtures import (
    audit_dict,
    audit_records,
    fake_run,
    private_data,
    rebind_audit,
    write_game_files,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "policies" / "default.toml"
STRICT = ROOT / "policies" / "strict.toml"
DP = ROOT / "policies" / "dp.toml"
TINY = dict(
    width=2,
    depth=1,
    pool_size=2,
    pool_max_steps=2,
    real_batch=16,
    tune_lr=False,
    log_every=1,
    checkpoint_every=1,
    steps=2,
    ipc=2,
    init="noise",
)
DP_CFG = {"dp_epsilon": 8.0, "zca": False}
# the tiny data's game is too small for the default policy's decidability rules (the gate
# recomputes them); the binding does not depend on the policy, so these releases override it
TINY_AUDIT = "binding test: an audit at chance on tiny data, undecidable at these sizes"


def make_data(path: Path) -> Path:
    """Three classes of 8×8 grey images (a bright band in a class-specific row), 60 training and
    20 held-out images each: enough held-out images for the memorisation check's level."""
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for c in range(3):
        x = rng.uniform(0, 0.3, (80, 8, 8, 1))
        x[:, 2 * c + 1, :] += 0.6
        xs.append(x)
        ys.append(np.full(80, c))
    x, y = np.concatenate(xs).astype(np.float32), np.concatenate(ys)
    test = np.concatenate([np.arange(len(y))[y == c][-20:] for c in range(3)])
    train = np.setdiff1d(np.arange(len(y)), test)
    np.savez(path, x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test])
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("binding")
    data = make_data(root / "data.npz")
    made = {}
    for name, extra in (
        ("plain", {}),
        ("other_seed", {"seed": 1}),
        ("real_copies", {"init": "real", "steps": 0}),
        ("dp", DP_CFG),
        ("dp_other", {**DP_CFG, "seed": 1}),
    ):
        distill_run(root / name, str(data), DistillConfig(**{**TINY, **extra}))
        made[name] = root / name
    return data, made


def audited(run: Path, data: Path) -> Path:
    """Gives a run an evaluation and an audit (synthetic figures of a release at chance, as
    ``testing.fake_run``'s) that record the run's current run.json and distilled.npz."""
    run_json = json.loads((run / "run.json").read_text())
    with np.load(run / "distilled.npz") as z:
        images = z["images"]
    with np.load(data) as d:
        x_train = d["x_train"]
    audit = audit_dict(
        file_sha256(run / "distilled.npz"),
        images,
        x_train,
        leak=False,
        classes=tuple(run_json["data"]["classes"]),
    )
    audit["run_json_sha256"] = file_sha256(run / "run.json")
    # the game's raw files (the gate recomputes every statistic from them), at chance
    private = load_private_splits(run_json)
    with np.load(run / "distilled.npz") as z:
        init = np.asarray(z["init_indices"], np.int64)
    audit["game"], section = write_game_files(
        run / "audit",
        types.SimpleNamespace(y_train=private.y_train, y_test=private.y_test),
        init,
        len(run_json["data"]["classes"]),
        leak_records=0,
        dp=run_json.get("dp"),
    )
    n_init = int(np.isin(audit_records(run)["members"], init[init >= 0]).sum())
    audit["init"] = {
        "mode": run_json["init"]["mode"],
        "n_init_records": n_init,
        "init_aware_shadows": False,
    }
    if run_json.get("dp") is not None:
        audit["dp"] = section
    (run / "audit" / "audit.json").write_text(json.dumps(audit))
    (run / "eval.json").write_text(
        json.dumps({"arch": "convnet", "models": 2, "accuracy_mean": 0.8, "accuracy_std": 0.01})
    )
    return run


def copy_run(src: Path, dst: Path, data: Path) -> Path:
    shutil.copytree(src, dst)
    return audited(dst, data)


def arrays_of(run: Path) -> dict:
    with np.load(run / "distilled.npz") as z:
        return {k: z[k] for k in z.files}


def run_json_of(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


# ---- the audit's record of the files it audited -------------------------------------------------


def test_editing_run_json_or_distilled_npz_after_the_audit_is_exit_2(tmp_path):
    data = private_data()
    run = fake_run(tmp_path / "run", data=data)
    rj = json.loads((run / "run.json").read_text())
    rj["config"]["init"] = "real"
    (run / "run.json").write_text(json.dumps(rj))
    r = CliRunner().invoke(
        app, ["release", str(run), "--policy", str(DEFAULT), "--out", str(tmp_path / "b")]
    )
    assert r.exit_code == 2 and "RUN/run.json changed since the audit" in r.output, r.output

    run2 = fake_run(tmp_path / "run2", data=data)
    other = fake_run(tmp_path / "run3", data=data, leak=True)  # valid images of another run
    shutil.copy(other / "distilled.npz", run2 / "distilled.npz")
    r = CliRunner().invoke(
        app, ["release", str(run2), "--policy", str(DEFAULT), "--out", str(tmp_path / "b")]
    )
    assert r.exit_code == 2 and "RUN/distilled.npz changed since the audit" in r.output, r.output
    assert not (tmp_path / "b").exists()


def test_a_policy_requiring_replay_refuses_a_release_without_it(tmp_path):
    data = private_data()
    run = fake_run(tmp_path / "run", data=data)
    with pytest.raises(InputError, match=r"requires --replay \(release.require_replay\)"):
        release(run, STRICT, tmp_path / "b")
    assert not (tmp_path / "b").exists()


# ---- replay -------------------------------------------------------------------------------------


def test_replay_passes_on_an_untouched_run_and_is_recorded(runs, tmp_path):
    data, made = runs
    run = copy_run(made["plain"], tmp_path / "run", data)
    result = release(run, DEFAULT, tmp_path / "b", replay=True, override=TINY_AUDIT)
    assert result.binding is not None and result.binding.method == "replay"
    assert {"images", "labels", "images_model", "init_indices"} <= set(result.binding.compared)
    verdict = json.loads((tmp_path / "b" / "policy" / "verdict.json").read_text())
    assert verdict["replay"]["method"] == "replay" and verdict["replay"]["identical"] is True
    assert verify_bundle(tmp_path / "b") == []


def test_replay_refuses_other_valid_images(runs, tmp_path):
    """distilled.npz replaced by another run's valid images (and the audit redone for them): the
    digests match, the replay does not."""
    data, made = runs
    run = copy_run(made["plain"], tmp_path / "run", data)
    shutil.copy(made["other_seed"] / "distilled.npz", run / "distilled.npz")
    rebind_audit(run)
    with pytest.raises(InputError, match="images is not what a replay"):
        release(run, DEFAULT, tmp_path / "b", replay=True, override=TINY_AUDIT)
    assert not (tmp_path / "b").exists()


def test_replay_refuses_copies_passed_off_as_a_noise_run(runs, tmp_path):
    """The issue's forgery: images that are private training images (a --steps 0 --init real
    run), their init indices blanked, run.json claiming the noise-initialised run."""
    data, made = runs
    run = copy_run(made["plain"], tmp_path / "run", data)
    arrays = arrays_of(made["real_copies"])
    arrays["init_indices"] = np.full_like(arrays["init_indices"], -1)
    np.savez(run / "distilled.npz", **arrays)
    rebind_audit(run)
    with pytest.raises(InputError, match="is not what a replay"):
        replaymod.check(run, run_json_of(run), arrays_of(run))
    with pytest.raises(InputError, match="is not what a replay"):
        release(run, DEFAULT, tmp_path / "b", replay=True, override=TINY_AUDIT)


def test_replay_compares_every_array_bit_for_bit(runs):
    """One ulp in one pixel, or an extra array, is a mismatch (no tolerance)."""
    _, made = runs
    rj, arrays = run_json_of(made["plain"]), arrays_of(made["plain"])
    replaymod.check(made["plain"], rj, arrays)
    nudged = dict(arrays)
    img = nudged["images"].copy()
    img.flat[7] = np.nextafter(img.flat[7], np.float32(2))
    nudged["images"] = img
    ulp = float(np.spacing(arrays["images"].flat[7]))
    with pytest.raises(
        InputError, match=rf"images is not what x produces, max \|difference\| {ulp:.3g}"
    ):
        replaymod.compare(nudged, arrays, "x")
    with pytest.raises(InputError, match="extra note"):
        replaymod.compare({**arrays, "note": np.zeros(1)}, arrays, "x")


def test_replay_refuses_another_jax_version_or_device(runs, tmp_path):
    data, made = runs
    run = copy_run(made["plain"], tmp_path / "run", data)
    rj = run_json_of(run)
    rj["versions"]["jax"] = "0.0.1"
    with pytest.raises(InputError, match="same JAX version and device kind"):
        replaymod.check(run, rj, arrays_of(run))
    rj = run_json_of(run)
    rj["device"]["kind"] = "NVIDIA H100 80GB HBM3"
    with pytest.raises(InputError, match=r"only bit-identical on the same JAX version"):
        replaymod.check(run, rj, arrays_of(run))


# ---- the DP checkpoint chain --------------------------------------------------------------------


def test_dp_release_replay_checks_the_checkpoint_chain(runs, tmp_path):
    data, made = runs
    run = copy_run(made["dp"], tmp_path / "run", data)
    assert replaymod.method_for(run_json_of(run)) == replaymod.CHAIN
    result = release(run, DP, tmp_path / "b", replay=True, override=TINY_AUDIT)
    assert result.binding is not None and result.binding.method == "checkpoint-chain"
    verdict = json.loads((tmp_path / "b" / "policy" / "verdict.json").read_text())
    assert verdict["replay"]["method"] == "checkpoint-chain"
    assert not any(p.startswith("checkpoints") for p in result.files)  # private: never copied
    assert verify_bundle(tmp_path / "b") == []


def test_dp_chain_fails_on_a_swapped_state_file(runs, tmp_path):
    data, made = runs
    run = copy_run(made["dp"], tmp_path / "run", data)
    meta = json.loads((run / "checkpoints" / "meta.json").read_text())
    other = json.loads((made["dp_other"] / "checkpoints" / "meta.json").read_text())
    (run / "checkpoints" / meta["state_file"]).write_bytes(
        (made["dp_other"] / "checkpoints" / other["state_file"]).read_bytes()
    )
    with pytest.raises(InputError, match="state file's sha256 is not the one meta.json records"):
        replaymod.check(run, run_json_of(run), arrays_of(run))


def test_dp_chain_fails_on_a_swapped_checkpoint(runs, tmp_path):
    """Another DP run's checkpoint (meta and state): its configuration is not run.json's; with
    the configuration forged to match, its EMA images are not distilled.npz's."""
    data, made = runs
    run = copy_run(made["dp"], tmp_path / "run", data)
    shutil.rmtree(run / "checkpoints")
    shutil.copytree(made["dp_other"] / "checkpoints", run / "checkpoints")
    with pytest.raises(InputError, match="another configuration than run.json's"):
        replaymod.check(run, run_json_of(run), arrays_of(run))
    meta_path = run / "checkpoints" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["config"] = run_json_of(run)["config"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"images is not what the run's last checkpoint"):
        replaymod.check(run, run_json_of(run), arrays_of(run))


def test_dp_chain_fails_on_replaced_images_or_a_broken_chain(runs, tmp_path):
    data, made = runs
    run = copy_run(made["dp"], tmp_path / "run", data)
    replaymod.check(run, run_json_of(run), arrays_of(run))
    shutil.copy(made["dp_other"] / "distilled.npz", run / "distilled.npz")
    with pytest.raises(InputError, match="not what the run's last checkpoint"):
        replaymod.check(run, run_json_of(run), arrays_of(run))

    run = copy_run(made["dp"], tmp_path / "run2", data)
    meta_path = run / "checkpoints" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["previous_state_sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="previous_state_sha256 is not the chain's previous link"):
        replaymod.check(run, run_json_of(run), arrays_of(run))


def test_checkpoint_chain_records_every_state(tmp_path):
    d = tmp_path / "ck"
    states = [{"x": np.full(3, float(i), np.float32), "step": np.int32(i)} for i in range(3)]
    for i, st in enumerate(states):
        checkpoint.save(d, st, {"step": i + 1})
    checkpoint.save(d, states[-1], {"step": 3})  # saved twice (the end save): one link
    meta, data = checkpoint.verify_chain(d)
    assert [c["step"] for c in meta["chain"]] == [1, 2, 3]
    assert meta["previous_state_sha256"] == meta["chain"][1]["state_sha256"]
    assert len(list(d.glob("state-*.msgpack"))) == 1  # earlier states are deleted
    restored, _ = checkpoint.load(d, states[0])
    np.testing.assert_array_equal(restored["x"], states[-1]["x"])
    meta["chain"][0]["step"] = 5
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="steps do not increase"):
        checkpoint.verify_chain(d)
