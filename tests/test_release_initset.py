"""The init set a release claims is the one its recorded configuration draws: edited or blanked
init indices, or an edited seed, are exit 2 naming the field."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rcig_release.cli.main import app
from rcig_release.errors import InputError
from rcig_release.release import safety
from rcig_release.release.bundle import ReleaseRefused, release
from rcig_release.release.initset import recompute_init_indices
from release_fixtures import (
    RUN_SEED,
    drawn_init,
    fake_run,
    loader_for,
    private_data,
    rebind_audit,
)

DEFAULT = Path(__file__).resolve().parents[1] / "policies" / "default.toml"


def edit(run: Path, *, npz=None, run_json=None):
    """Rewrites RUN/distilled.npz's init_indices and/or run.json (the audit is re-pointed at the new
    files, as a new audit of the edited run would be, so that only the init set is wrong)."""
    if npz is not None:
        with np.load(run / "distilled.npz") as z:
            arrays = {k: z[k] for k in z.files}
        if npz == "drop":
            arrays.pop("init_indices")
        else:
            arrays["init_indices"] = np.asarray(npz, np.int64)
        np.savez(run / "distilled.npz", **arrays)
    if run_json is not None:
        rj = json.loads((run / "run.json").read_text())
        run_json(rj)
        (run / "run.json").write_text(json.dumps(rj))
    rebind_audit(run)  # as a new audit of the edited run would record it


@pytest.fixture()
def data():
    return private_data()


def refuse(run, data, tmp_path, match):
    with pytest.raises(InputError, match=match):
        release(run, DEFAULT, tmp_path / "out", load_private=loader_for(data), override="x")
    assert not (tmp_path / "out").exists()


def test_recomputed_init_set_is_the_pipelines(data):
    rj = {"config": {"ipc": 2, "init": "real", "seed": RUN_SEED}}
    got = recompute_init_indices(rj, data.x_train, data.y_train, 3)
    assert got.tolist() == drawn_init(data, 2, 3, RUN_SEED).tolist()
    assert (data.y_train[got] == np.repeat(np.arange(3), 2)).all()
    noise = recompute_init_indices(
        {"config": {"ipc": 2, "init": "noise", "seed": 1}}, data.x_train, data.y_train, 3
    )
    assert (noise == -1).all() and len(noise) == 6


def test_an_untouched_leak_run_is_refused_by_the_check_not_the_init_set(tmp_path, data):
    run = fake_run(tmp_path / "run", data=data, leak=True)
    with pytest.raises(ReleaseRefused, match="memorisation check"):
        release(run, DEFAULT, tmp_path / "out", load_private=loader_for(data), override="x")


def test_edited_init_indices_are_exit_2(tmp_path, data):
    run = fake_run(tmp_path / "run", data=data, leak=True)
    init = json.loads((run / "run.json").read_text())["init"]["indices"]
    other = list(init)
    other[0] = int(np.flatnonzero(data.y_train == data.y_train[init[0]])[-1])  # same class
    assert other[0] not in init

    def set_json(rj):
        rj["init"]["indices"] = other

    edit(run, npz=other, run_json=set_json)
    refuse(run, data, tmp_path, r"RUN/distilled.npz: init_indices .*differ from the init set")


def test_blanked_init_indices_of_a_real_run_are_exit_2(tmp_path, data):
    run = fake_run(tmp_path / "run", data=data, leak=True)

    def blank(rj):
        rj["init"]["indices"] = [-1] * 6

    edit(run, npz=[-1] * 6, run_json=blank)
    refuse(run, data, tmp_path, r"RUN/distilled.npz: init_indices hold -1 for a real-init run")
    # dropped from both files: the existing check (inputs.py) names it too
    run2 = fake_run(tmp_path / "run2", data=data, leak=True)

    def drop(rj):
        rj["init"]["indices"] = None

    edit(run2, npz="drop", run_json=drop)
    refuse(run2, data, tmp_path, "real-init run without init_indices")


def test_an_edited_seed_or_mode_is_exit_2(tmp_path, data):
    run = fake_run(tmp_path / "run", data=data, leak=True)
    edit(run, run_json=lambda rj: rj["config"].update(seed=RUN_SEED + 1))
    refuse(run, data, tmp_path, "differ from the init set that run.json config")
    run2 = fake_run(tmp_path / "run2", data=data, leak=True)
    edit(run2, run_json=lambda rj: rj["init"].update(mode="noise"))
    refuse(run2, data, tmp_path, r"run.json: init.mode is 'noise' but config.init is 'real'")
    # a noise run whose config is edited to real: the recorded -1s are not what real init draws
    run3 = fake_run(tmp_path / "run3", data=data)
    edit(
        run3, run_json=lambda rj: (rj["config"].update(init="real"), rj["init"].update(mode="real"))
    )
    refuse(run3, data, tmp_path, "init_indices hold -1 for a real-init run")
    run4 = fake_run(tmp_path / "run4", data=data)
    edit(run4, run_json=lambda rj: rj["config"].update(ipc=5))
    refuse(run4, data, tmp_path, r"gives 15 init images, RUN/distilled.npz has 6")
    run5 = fake_run(tmp_path / "run5", data=data)
    edit(run5, run_json=lambda rj: rj["config"].update(bogus=1))
    refuse(run5, data, tmp_path, "run.json: config is not a distillation config")


def test_the_cli_says_one_line_and_exits_2(tmp_path, data, monkeypatch):
    run = fake_run(tmp_path / "run", data=data, leak=True)
    edit(run, run_json=lambda rj: rj["config"].update(seed=RUN_SEED + 1))
    monkeypatch.setattr(safety, "default_loader", loader_for(data))
    out = tmp_path / "cli"
    res = CliRunner().invoke(
        app, ["release", str(run), "--policy", str(DEFAULT), "--out", str(out), "--override", "x"]
    )
    assert res.exit_code == 2, res.output
    assert "init_indices" in res.output and "Traceback" not in res.output and not out.exists()
