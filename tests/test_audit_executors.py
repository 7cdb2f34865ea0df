"""Where the audit's pipelines run (audits/executors.py): the local executor and Ray tasks write
the same shadow files, a Ray worker killed mid-pipeline is retried to the same result, --resume
works across executors, Ray asked for without the extra is one line and exit 2, and
--baselines-from reuses another audit's baseline pipelines only when they fit.

The Ray tests start a local Ray cluster of 2 CPUs (skipped where Ray is not installed)."""

import dataclasses
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from rcig_release.audits import executors, shadows
from rcig_release.cli.main import app
from rcig_release.config import DistillConfig
from rcig_release.errors import InputError, RcigReleaseError

H, C = 8, 4


def _job(kind="naive"):
    """A pipeline kind's shadows on tiny data: (``shadows.ShadowJob``, ``shadows.ShadowData``)."""
    rng = np.random.default_rng(1)
    x_tr, y_tr = rng.random((60, H, H, 1)).astype(np.float32), np.arange(60) % C
    x_te, y_te = rng.random((40, H, H, 1)).astype(np.float32), np.arange(40) % C
    members, nonmembers = np.arange(0, 20), np.arange(0, 20)
    keep = shadows.make_keep(4, 40, np.random.default_rng(0))
    job = shadows.ShadowJob(
        kind=kind,
        cfg=DistillConfig(ipc=2, width=4),
        keep=keep,
        members=members,
        nonmembers=nonmembers,
        num_classes=C,
        zca=False,
        seed=0,
        ds=shadows.Downstream(arch="mlp", width=8, n_models=2, steps=20, warmup=2),
    )
    data = shadows.ShadowData(
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        queries_pix=np.concatenate([x_tr[:20], x_te[:20], x_te[:10]]),
    )
    return job, data


def test_ray_without_the_extra_is_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as without the extra
    with pytest.raises(InputError, match=r"rcig-release\[cluster\]"):
        executors.Executor(kind="ray").check()
    with pytest.raises(InputError, match=r"rcig-release\[cluster\]"):
        executors.for_workers(2, executors.Executor())
    assert executors.for_workers(1, executors.Executor()).kind == "local"  # no Ray needed
    for args in (["--executor", "ray"], ["--workers", "2"]):
        r = CliRunner().invoke(app, ["audit", str(tmp_path / "run"), *args])
        assert r.exit_code == 2 and "pip install 'rcig-release[cluster]'" in r.output, r.output
        assert "Traceback" not in r.output
    r = CliRunner().invoke(app, ["audit", str(tmp_path / "run"), "--executor", "spark"])
    assert r.exit_code == 2 and "local or ray" in r.output


def _pipeline_pids() -> list[int]:
    """Ray worker processes running a shadow pipeline (Ray titles them ray::<task name>)."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if f.read().startswith(f"ray::{executors.TASK_NAME}".encode()):
                    pids.append(int(p))
        except OSError:
            continue
    return pids


@pytest.mark.slow  # a local Ray cluster and 8 tiny pipelines, ~60 s on the loaded 2-core machine
def test_ray_tasks_write_the_local_executors_files_and_survive_a_killed_worker(
    tmp_path, monkeypatch
):
    """Four naive pipelines on Ray (2 CPUs): the same logits and distances as in this process,
    after one worker was killed with SIGKILL mid-pipeline (Ray re-ran its task); progress counts
    running and queued, with an ETA once a pipeline is written; resume skips files another executor wrote. A local cluster is started
    for the audit even where ray.init would otherwise join another (RAY_ADDRESS set here)."""
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_ADDRESS", "192.0.2.1:6379")  # unreachable (TEST-NET-1)
    job, data = _job()
    keep = job.keep
    local, near_l = shadows.run_shadows(job, data, out_dir=tmp_path / "local", resume=False)

    killed: list[int] = []

    def killer():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            pids = _pipeline_pids()
            if pids:
                time.sleep(1.0)  # inside the pipeline (importing, compiling, distilling)
                try:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                except ProcessLookupError:  # finished in the meantime: the next one
                    pass
            time.sleep(0.1)

    seen = []
    session = executors.RaySession(executors.Executor(kind="ray", local_cpus=2))
    try:
        t = threading.Thread(target=killer, daemon=True)
        t.start()
        ray_out, near_r = shadows.run_shadows(
            job,
            data,
            out_dir=tmp_path / "ray",
            resume=False,
            executor=session,
            progress=lambda s, d, n, eta=None: seen.append((s, d, n, eta)),
        )
        t.join(timeout=1)
        assert killed, "no pipeline was running to kill"
        np.testing.assert_array_equal(ray_out, local)
        np.testing.assert_array_equal(near_r["pixel"], near_l["pixel"])
        np.testing.assert_array_equal(near_r["feature"], near_l["feature"])
        for k in range(4):
            with np.load(tmp_path / "ray" / f"{k}.npz") as z:
                assert np.array_equal(z["keep"], keep[k])
        assert any("running" in s and "queued" in s for s, _, _, _ in seen)
        assert seen[-1][1:] == (4, 4, 0.0)
        # the ETA from the finished pipelines' wall times: none before the first is written,
        # one from then on (audits/eta.py SlotClock)
        ray_events = [e for e in seen if "running" in e[0]]
        assert all(e[3] is None for e in ray_events if e[1] == 0)
        assert all(e[3] is not None and e[3] >= 0 for e in ray_events if e[1] >= 1)

        # --resume across executors: files the local executor wrote are kept, the rest run on Ray
        mixed = tmp_path / "mixed"
        mixed.mkdir()
        for k in (0, 2):
            (mixed / f"{k}.npz").write_bytes((tmp_path / "local" / f"{k}.npz").read_bytes())
        before = {k: (mixed / f"{k}.npz").stat().st_mtime_ns for k in (0, 2)}
        again, _ = shadows.run_shadows(job, data, out_dir=mixed, resume=True, executor=session)
        assert {k: (mixed / f"{k}.npz").stat().st_mtime_ns for k in (0, 2)} == before
        np.testing.assert_array_equal(again, local)

        # a pipeline that raises is not retried: one line naming the way on
        with pytest.raises(RcigReleaseError, match="--resume"):
            shadows.run_shadows(
                dataclasses.replace(job, cfg=DistillConfig(ipc=50, width=4)),
                data,
                out_dir=tmp_path / "bad",
                resume=False,
                executor=session,
            )
    finally:
        session.close()


def _strip_times(obj):
    if isinstance(obj, dict):
        return {k: _strip_times(v) for k, v in obj.items() if "seconds" not in k}
    if isinstance(obj, list):
        return [_strip_times(v) for v in obj]
    return obj


@pytest.mark.slow  # three tiny audits, ~2 min on the loaded 2-core machine
def test_baselines_from_another_audit_are_reused_only_when_they_fit(tmp_path):
    """A second release of the same data (other distilled images) audited with
    --baselines-from the first: its baseline shadow files are the first's, byte for byte, and
    its baseline results equal the first's; a different inclusion matrix is exit 2 naming it."""
    import shutil

    from test_audit_runner import TINY, _make_run

    from rcig_release.audits import run_audit
    from rcig_release.rundir import load_run, write_distilled

    run, _ = _make_run(tmp_path)
    first = run_audit(run, TINY)
    second = tmp_path / "second"
    shutil.copytree(run, second, ignore=shutil.ignore_patterns("audit"))
    r = load_run(run)
    moved = r.images_model + 0.05
    write_distilled(
        second,
        images=np.clip(r.preprocessor.inverse(moved), 0, 1),
        labels=r.labels,
        classes=r.classes,
        images_model=moved,
        log_temp=r.log_temp,
        init_indices=r.init_indices,
        prep_arrays=r.preprocessor.to_arrays(),
    )
    out = run_audit(second, TINY, baselines_from=run)
    for sub in ("shadows_naive", "shadows_full"):
        for k in range(TINY.shadows):
            a = (run / "audit" / sub / f"{k}.npz").read_bytes()
            assert (second / "audit" / sub / f"{k}.npz").read_bytes() == a
    assert _strip_times(out["baselines"]) == _strip_times(first["baselines"])
    assert out["baselines_from"] == run.name
    assert out["run_sha256"] != first["run_sha256"]  # another release, its own audit

    third = tmp_path / "third"
    shutil.copytree(second, third, ignore=shutil.ignore_patterns("audit"))
    with pytest.raises(InputError, match="inclusion matrix"):
        run_audit(third, TINY.replace(shadows=4), baselines_from=run)
    fourth = tmp_path / "fourth"
    shutil.copytree(second, fourth, ignore=shutil.ignore_patterns("audit"))
    with pytest.raises(InputError, match="no audit"):
        run_audit(fourth, TINY, baselines_from=tmp_path)
