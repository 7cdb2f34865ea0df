"""The audit's progress inside a stage of shadow pipelines (audits/eta.py): step-level events
and an ETA from measured step times before the first pipeline ends, the Ray ETA from pipeline
wall times, the plain lines (rate-limited, the audit's ETA), and no effect on any result."""

import io
import json
import re
import shutil

import numpy as np
import pytest
from rich.console import Console

from rcig_release.audits import AuditConfig, run_audit
from rcig_release.audits.eta import PipelineClock, SlotClock, accepts_eta, forward
from rcig_release.cli.progress import PlainLines, stage_progress


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _simulate(clock_cls, *, n=4, steps=10, step_s=2.0, pre=30.0, compile_s=100.0, post=20.0):
    """n pipelines: setup ``pre`` s (+ ``compile_s`` in the first), ``steps`` steps of
    ``step_s`` s, then ``post`` s of network training. Returns [(time, eta, truth)] at every
    event of the first pipeline and the ETA at the first event after its first steps."""
    t = FakeClock()
    clock = clock_cls(n, clock=t)
    end = n * (pre + steps * step_s + post) + compile_s
    seen = []
    for k in range(n):
        clock.start(None)
        t.now += pre + (compile_s if k == 0 else 0.0)
        for s in range(1, steps + 1):
            t.now += step_s
            clock.step(s, steps)
            seen.append((k, t.now, clock.eta(), end - t.now))
        t.now += post
        clock.end()
        seen.append((k, t.now, clock.eta(), end - t.now))
    return seen


class PerPipelineClock(PipelineClock):
    """The broken variant: steps are not measured (only whole pipelines are)."""

    def step(self, t, steps):
        self.steps = steps


def _eta_before_first_end(seen):
    return [eta for k, _, eta, _ in seen[:-1] if k == 0 and eta is not None]


def test_pipeline_clock_gives_an_eta_from_step_times_inside_the_first_pipeline():
    seen = _simulate(PipelineClock)
    first = [s for s in seen if s[0] == 0]
    # from the second step of the first pipeline on: an ETA, before the first pipeline ends
    assert first[0][2] is None and all(e is not None for _, _, e, _ in first[1:])
    assert _eta_before_first_end(first)
    # the later pipelines skip the compile and the first one's overhead (to its first step,
    # compile included) is the estimate: a known over-estimate, no more than the compile
    _, _, eta, truth = first[1]
    assert truth - 20.0 <= eta <= truth + 3 * 100.0
    # after the first pipeline: its overhead (wall less steps, compile included: an
    # over-estimate by at most the compile per pipeline left); after the second, the
    # compile-free ones: the ETA is exact for these constant times
    for i, (k, _, eta, truth) in enumerate(seen):
        if k == 1 and i < len(seen) and seen[i + 1][0] == 1:
            assert truth <= eta <= truth + 3 * 100.0, (k, eta, truth)
        if k >= 2 or (k == 1 and seen[i + 1][0] == 2):
            assert eta == pytest.approx(truth, abs=1e-6), (k, eta, truth)
    assert seen[-1][2] == 0.0
    # the broken variant (only whole pipelines measured) has no ETA before the first ends
    broken = [s for s in _simulate(PerPipelineClock) if s[0] == 0]
    assert not _eta_before_first_end(broken)


def test_pipeline_clock_times_steps_only_where_the_loop_waited_for_the_device():
    """The distillation loop dispatches steps asynchronously: the events between its first and
    its logged steps come at once, and the logged step waits for all of them."""

    def run(synced):
        t = FakeClock()
        clock = PipelineClock(2, clock=t)
        clock.start(None)
        t.now = 50.0
        clock.step(1, 20, True)  # the first step waits (compile and step)
        for s in range(2, 10):
            clock.step(s, 20, synced(s))  # dispatched at once
        early = clock.eta()
        t.now = 50.0 + 9 * 2.0
        clock.step(10, 20, True)  # logged: waits for 9 steps of 2 s
        return early, clock.step_seconds(), clock.eta()

    early, step_s, eta = run(lambda s: False)
    assert early is None  # nothing measured yet: no ETA rather than a wrong one
    assert step_s == pytest.approx(2.0)
    # 10 steps left + the rest of the overhead (50 s to the first step, 48 s of it spent) +
    # the second pipeline (its 20 steps and that overhead)
    assert eta == pytest.approx(10 * 2.0 + (50.0 - 48.0) + (20 * 2.0 + 50.0))
    # the broken variant (every event taken as finished) gives an ETA far too early: the 8
    # dispatched steps measured as taking no time
    early, _, _ = run(lambda s: True)
    assert early is not None and early < 0.5 * eta


def test_pipeline_clock_without_steps_uses_the_pipeline_wall_time():
    seen = _simulate(PipelineClock, steps=0, compile_s=0.0)
    assert seen[0][2] == pytest.approx(seen[0][3])  # after one pipeline: 3 more of 50 s


def test_slot_clock_eta_from_the_finished_pipelines_wall_times():
    t = FakeClock()
    clock = SlotClock(6, 2, clock=t)  # 6 pipelines of 10 s, 2 at a time: 30 s
    assert clock.eta() is None
    t.now = 10.0
    clock.finished()
    clock.finished()
    assert clock.eta() == pytest.approx(20.0)
    t.now = 15.0
    assert clock.eta() == pytest.approx(15.0)
    for now in (20.0, 20.0, 30.0, 30.0):
        t.now = now
        clock.finished()
    assert clock.eta() == 0.0


def test_forward_passes_eta_only_to_callbacks_that_take_it():
    old, new = [], []
    forward(lambda stage, done, total: old.append((stage, done, total)))("release", 1, 4, 9.0)
    forward(lambda *a: old.append(a))("release", 2, 4, 9.0)
    forward(lambda s, d, t, eta=None: new.append((s, d, t, eta)))("release", 1, 4, 9.0)
    assert old == [("release", 1, 4), ("release", 2, 4)] and new == [("release", 1, 4, 9.0)]
    # a builtin (takes no eta keyword): no crash. Not `print`: another test or library may
    # replace builtins.print with a wrapper that takes **kwargs, as the full suite showed
    assert accepts_eta(divmod) is False

    class Bar:
        def __call__(self, stage, done, total, *, eta=None):
            new.append(eta)

    assert accepts_eta(Bar()) and accepts_eta(lambda stage, done, total, **_: None)
    assert forward(None) is None


def test_plain_lines_show_the_step_and_the_audits_eta_and_stay_rate_limited(monkeypatch):
    monkeypatch.setenv("RCIG_RELEASE_PROGRESS_SECONDS", "30")
    now = [0.0]
    monkeypatch.setattr(PlainLines.__init__, "__defaults__", (None, lambda: now[0]))
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=False)
    with stage_progress(console) as progress:
        progress("release", 0, 4)
        for s in range(1, 101):  # one step a second, an ETA from the audit
            now[0] = float(s)
            progress(f"release: shadow 0: distill step {s}/100", 0, 4, eta=1000.0 - s)
        now[0] = 130.0
        progress("release", 1, 4, eta=500.0)
        progress("done", 1, 1)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "audit: shadow pipelines (release) (0:00:00 elapsed)"  # one phase line
    assert sum("elapsed)" in x for x in lines) == 1
    body = lines[1:]
    # the first event, then at most one line per 30 s, the completion
    assert len(body) <= 1 + 130 // 30 + 2, body
    assert body[1].endswith("ETA 0:16:10, shadow 0: distill step 30/100"), body
    assert any("1/4" in x and "ETA 0:08:20" in x for x in body)


@pytest.mark.slow  # two tiny audits with 4-step distillations, ~2 min on the loaded machine
def test_progress_reports_steps_and_an_early_eta_and_changes_no_result(tmp_path):
    from test_audit_runner import _make_run

    from rcig_release.config import DistillConfig

    dcfg = DistillConfig(
        ipc=1,
        width=4,
        depth=1,
        pool_size=2,
        pool_max_steps=2,
        real_batch=16,
        tune_lr=False,
        steps=4,
        init="real",
        seed=3,
    )
    run, _ = _make_run(tmp_path, cfg=dcfg)
    other = tmp_path / "copy" / "run"  # the same name: audit.json names the run directory
    shutil.copytree(run, other)
    cfg = AuditConfig(
        shadows=2,
        targets=2,
        records=60,
        population=60,
        train_steps=10,
        warmup=2,
        batch=64,
        arch="mlp",
        shadow_group=1,
        baselines=(),
    )
    seen = []
    out = run_audit(run, cfg, progress=lambda s, d, t, eta=None: seen.append((s, d, t, eta)))
    old = []  # a callback of three arguments sees what it saw before: no step-level events
    plain = run_audit(other, cfg, progress=lambda s, d, t: old.append((s, d, t)))
    assert [e[1:] for e in old if e[0] == "release"] == [(0, 2), (1, 2), (2, 2)]
    assert all(": " not in e[0] for e in old)
    # no result changes: audit.json (timings aside) and every array of every npz/npy
    for d in (out, plain):
        d.pop("timings")
    assert out == plain
    a, b = run / "audit", other / "audit"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.suffix in (".npz", ".npy"))
    assert len(files) >= 4
    for f in files:
        if f.suffix == ".npy":
            assert np.array_equal(np.load(a / f), np.load(b / f))
            continue
        with np.load(a / f) as x, np.load(b / f) as y:
            assert x.files == y.files
            for k in x.files:
                assert np.array_equal(x[k], y[k]), (f, k)
    assert (a / "records.json").read_text() == (b / "records.json").read_text()
    assert json.loads((a / "audit.json").read_text())["n_shadows"] == 2

    def releases(events):
        return [e for e in events if e[0].split(": ")[0] == "release"]

    def eta_before_first_end(events):
        rel = releases(events)
        first_end = next(i for i, e in enumerate(rel) if e[1] >= 1)
        return any(e[3] is not None and e[3] >= 0 for e in rel[:first_end])

    # step-level events with monotone counts
    rel = releases(seen)
    dones = [d for _, d, _, _ in rel]
    assert dones == sorted(dones) and dones[-1] == 2
    steps: dict[int, list[int]] = {}
    for s, _, _, _ in rel:
        if m := re.fullmatch(r"release: shadow (\d+): distill step (\d+)/(\d+)", s):
            steps.setdefault(int(m[1]), []).append(int(m[2]))
    assert steps == {0: [1, 2, 3, 4], 1: [1, 2, 3, 4]}
    assert any(e[0] == "release: shadow 0: training the networks" for e in rel)
    # an ETA before the first pipeline ended
    assert eta_before_first_end(seen)
    # the broken variant: a callback called only per pipeline (the events without a detail)
    per_pipeline = [e for e in seen if ": " not in e[0]]
    assert [e[1] for e in releases(per_pipeline)] == [0, 1, 2]
    assert not eta_before_first_end(per_pipeline)


def test_grouped_pipelines_name_the_group_and_get_an_eta_from_whole_pipelines(tmp_path):
    """Naive pipelines (no distillation steps) two per vmapped training call: the training
    event names both shadows, and the ETA comes from the written pipelines' wall times."""
    from test_audit_executors import _job

    from rcig_release.audits import shadows

    seen = []
    shadows.run_shadows(
        *_job("naive"),
        out_dir=tmp_path / "s",
        resume=False,
        group=2,
        progress=lambda s, d, t, eta=None: seen.append((s, d, t, eta)),
    )
    assert ("naive: shadows 0,1: training the networks", 0, 4, None) in seen
    assert not any("distill step" in s for s, _, _, _ in seen)
    after = [e for e in seen if e[1] >= 2]
    assert after and all(e[3] is not None for e in after) and seen[-1][1:] == (4, 4, 0.0)
