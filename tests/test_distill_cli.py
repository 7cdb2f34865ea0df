"""`rcig-release distill` and `evaluate` end to end on tiny data: files, contracts, bad inputs,
and a run killed with SIGKILL then resumed ending bit-identical to an uninterrupted one."""

import json
import os
import signal
import subprocess
import sys
import time
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


def make_npz(path: Path, per_class=(12, 12, 12), nan=False) -> Path:
    """Three separable classes of 8×8 grey images (a bright band in a class-specific row)."""
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for c, n in enumerate(per_class):
        x = rng.uniform(0, 0.3, (n + 4, 8, 8))
        x[:, 2 * c + 1, :] += 0.6
        xs.append(x)
        ys.append(np.full(n + 4, c))
    x, y = np.concatenate(xs).astype(np.float32), np.concatenate(ys)
    test = np.concatenate([np.arange(len(y))[y == c][-4:] for c in range(3)])
    train = np.setdiff1d(np.arange(len(y)), test)
    if nan:
        x[train[0], 0, 0] = np.nan
    np.savez(path, x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test])
    return path


@pytest.fixture()
def tiny(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    return make_npz(tmp_path / "tiny.npz"), tmp_path / "tiny.toml"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_distill_then_evaluate_writes_the_run_directory(tiny, tmp_path):
    data, toml = tiny
    run = tmp_path / "run"
    r = invoke(
        "distill",
        "--data",
        data,
        "--out",
        run,
        "--config",
        toml,
        "--steps",
        4,
        "--ipc",
        2,
        "--init",
        "real",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    with np.load(run / "distilled.npz") as z:
        assert z["images"].shape == (6, 8, 8, 1) and z["labels"].shape == (6, 3)
        assert z["images"].min() >= 0 and z["images"].max() <= 1
        assert list(z["classes"]) == ["0", "1", "2"]
        init = z["init_indices"]
    rj = json.loads((run / "run.json").read_text())
    assert rj["status"] == "done" and rj["config"]["steps"] == 4
    assert rj["data"]["fingerprint"].startswith("sha256:") and rj["init"]["mode"] == "real"
    y_train = np.load(data)["y_train"]
    assert list(y_train[init]) == [0, 0, 1, 1, 2, 2] and rj["init"]["indices"] == init.tolist()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2, 3, 4]
    assert {
        "outer_loss",
        "inner_loss",
        "hvp_residual",
        "inner_lr",
        "hvp_lr",
        "temperature",
        "seconds",
    } <= set(lines[0])
    assert (run / "preview.png").stat().st_size > 0
    assert str(tmp_path) not in (run / "run.json").read_text().replace(str(data), "")

    r = invoke("evaluate", run, "--models", 2, "--steps", 60, "--json")
    assert r.exit_code == 0, r.output
    ev = json.loads((run / "eval.json").read_text())
    assert ev["models"] == 2 and len(ev["accuracies"]) == 2 and 0 <= ev["accuracy_mean"] <= 1
    assert ev["arch"] == "convnet"
    r = invoke("evaluate", run, "--models", 1, "--steps", 20, "--width", 4)
    assert r.exit_code == 0, r.output
    history = [json.loads(line) for line in (run / "evals.jsonl").read_text().splitlines()]
    assert [h["models"] for h in history] == [2, 1]  # the first evaluation is kept
    assert json.loads((run / "eval.json").read_text()) == history[-1]


def test_steps_zero_exports_the_initial_real_images(tiny, tmp_path):
    data, toml = tiny
    run = tmp_path / "run0"
    r = invoke(
        "distill",
        "--data",
        data,
        "--out",
        run,
        "--config",
        toml,
        "--steps",
        0,
        "--ipc",
        3,
        "--init",
        "real",
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    with np.load(run / "distilled.npz") as z:
        x_train = np.load(data)["x_train"][..., None]
        np.testing.assert_allclose(z["images"], x_train[z["init_indices"]], atol=1e-5)
        np.testing.assert_allclose(z["labels"], np.repeat(np.eye(3) - 1 / 3, 3, axis=0), atol=1e-7)


@pytest.mark.parametrize(
    "case", ["missing", "ipc0", "too_few", "nan", "nonempty", "badinit", "unknown_key"]
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tiny, tmp_path, case):
    data, toml = tiny
    out = tmp_path / "out"
    args = ["distill", "--data", data, "--out", out, "--config", toml, "--steps", 1, "--quiet"]
    if case == "missing":
        args[2] = tmp_path / "nope.npz"
    elif case == "ipc0":
        args += ["--ipc", 0]
    elif case == "too_few":
        args += ["--ipc", 13]
    elif case == "nan":
        args[2] = make_npz(tmp_path / "nan.npz", nan=True)
    elif case == "nonempty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "badinit":
        args += ["--init", "zeros"]
    elif case == "unknown_key":
        bad = tmp_path / "bad.toml"
        bad.write_text("[distill]\nwidht = 3\n")
        args[6] = bad
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    msg = r.output.strip()
    if msg.startswith("device: JAX "):  # the run's first line, once its configuration is valid
        msg = msg.split("\n", 1)[1]
    assert msg.startswith("error:") and "\n" not in msg and "Traceback" not in msg
    if case == "nonempty":
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    else:
        assert not out.exists()


def _cli(*args):
    return [sys.executable, "-m", "rcig_release.cli", *[str(a) for a in args]]


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tiny, tmp_path):
    data, toml = tiny
    # enough steps that the run is still going when the watcher sees the step-4 checkpoint,
    # even with a warm compilation cache
    base = ["distill", "--data", data, "--config", toml, "--steps", 60, "--ipc", 2, "--quiet"]
    base += ["--init", "real", "--no-check"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        _cli(*base, "--out", killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    meta = killed / "checkpoints" / "meta.json"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if meta.is_file() and json.loads(meta.read_text())["step"] >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "distilled.npz").exists()
    subprocess.run(_cli(*base, "--out", straight), env=env, check=True, capture_output=True)
    r = subprocess.run(
        _cli("distill", "--out", killed, "--resume", "--quiet"),
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    with np.load(straight / "distilled.npz") as a, np.load(killed / "distilled.npz") as b:
        for k in ("images", "labels", "images_model", "log_temp", "init_indices"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)

    def strip(p):
        return [
            {k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (p / "metrics.jsonl").read_text().splitlines()
        ]

    assert strip(straight) == strip(killed)
    assert json.loads((killed / "run.json").read_text())["resumed_from"] >= 4
