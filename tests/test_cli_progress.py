"""What the terminal shows while a command runs: XLA's compiler chatter goes to a log file (not
through the progress bars), and without a terminal the commands print plain progress lines."""

import os
import subprocess
import sys

from rcig_release.cli.xla_log import ChatterFilter

XLA_BLOCK = [
    "2024-06-17 11:40:02.931165: E external/xla/xla/service/slow_operation_alarm.cc:65] ",
    "********************************",
    "[Compiling module jit_step] Very slow compile? If you want to file a bug, run with envvar "
    "XLA_FLAGS=--xla_dump_to=/tmp/foo and attach the results.",
    "********************************",
    "E1207 05:31:02.123456   12345 slow_operation_alarm.cc:140] The operation took 2m12.8s",
    "",
]


def test_filter_keeps_xla_messages_and_passes_everything_else():
    f = ChatterFilter()
    assert all(f.is_chatter(line) for line in XLA_BLOCK)
    for line in ("distill: step 10/100", "error: --out x exists", "  indented user text"):
        assert not f.is_chatter(line), line


CHILD = r"""
import os, sys
from rcig_release.cli import xla_log
xla_log.install()
print("python stderr line", file=sys.stderr)
os.write(2, ("\n".join(BLOCK) + "\nplain C line\n").encode())
"""


def run_child(tmp_path, setting: str):
    env = {**os.environ, "RCIG_RELEASE_XLA_LOG": setting}
    code = f"BLOCK = {XLA_BLOCK!r}\n" + CHILD
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )


def test_chatter_goes_to_the_log_and_the_rest_to_the_terminal(tmp_path):
    log = tmp_path / "xla.log"
    r = run_child(tmp_path, str(log))
    assert r.returncode == 0, r.stderr
    assert "python stderr line" in r.stderr and "plain C line" in r.stderr
    assert "Very slow compile" not in r.stderr and "slow_operation_alarm" not in r.stderr
    assert f"kept out of the terminal: {log}" in r.stderr
    text = log.read_text()
    assert "Very slow compile" in text and "The operation took" in text
    assert "plain C line" not in text


def test_the_broken_variant_without_the_filter_shows_the_chatter(tmp_path):
    """RCIG_RELEASE_XLA_LOG=- leaves descriptor 2 alone: the same chatter reaches the terminal,
    so the test above would fail without the filter."""
    r = run_child(tmp_path, "-")
    assert r.returncode == 0 and "Very slow compile" in r.stderr


def test_plain_lines_are_throttled_and_carry_an_eta():
    import io

    from rich.console import Console

    from rcig_release.cli.progress import PlainLines

    buf = io.StringIO()
    now = [0.0]
    lines = PlainLines(Console(file=buf, width=200), "distill", every=30, clock=lambda: now[0])
    lines.phase("learning-rate search")
    now[0] = 10.0
    lines.phase("distill")
    for step in range(1, 101):  # one step a second
        now[0] = 10.0 + step
        lines.step(step, 100, f"outer loss {1 / step:.4f}")
    out = buf.getvalue().splitlines()
    assert out[0] == "distill: learning-rate search (0:00:00 elapsed)"
    assert out[1] == "distill: distill (0:00:10 elapsed)"
    steps = out[2:]
    # the first step, then one line per 30 s, and the last step
    assert [s.split()[2] for s in steps] == ["1/100", "31/100", "61/100", "91/100", "100/100"]
    assert "ETA 0:01:09" in steps[1]  # 69 steps left at the measured 1 step/s
    assert steps[-1].endswith("outer loss 0.0100")


def test_distill_without_a_terminal_prints_plain_lines(tmp_path, monkeypatch):
    """CliRunner is no terminal: the distill command reports its phases and steps as lines."""
    from typer.testing import CliRunner

    import rcig_release.pipeline as pipeline
    from rcig_release.cli.main import app
    from rcig_release.errors import InputError

    def fake_distill_run(out, data, cfg, *, phase=None, progress=None, **kw):
        phase("learning-rate search")
        phase("compiling the step")
        for step in (1, 2, 3):
            progress(step, 3, {"outer_loss": 0.5})
        raise InputError("stop here")

    monkeypatch.setattr(pipeline, "distill_run", fake_distill_run)
    r = CliRunner().invoke(app, ["distill", "--preset", "cpu", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    err = r.stderr.splitlines()
    assert "distill: compiling the step (" in r.stderr
    assert any(line.startswith("distill: distill 3/3 (100 %)") for line in err), err
    assert "\r" not in r.stderr and "━" not in r.stderr  # no bar drawn into a log
