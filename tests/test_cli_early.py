"""Every path, policy and output-directory check runs before any data or JAX is loaded: the error
comes as one line and exit 2 while ``jax`` is still absent from ``sys.modules`` (a timing-free
check of "within about a second": importing JAX alone takes seconds on the test machine)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

CODE = """
import json, sys
from rcig_release.cli.main import main
results = []
for args in json.loads(sys.argv[1]):
    sys.argv = ["rcig-release"] + args
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    # each case is judged on its own: JAX imported by an earlier case would show in every later one
    results.append({"code": code, "jax": "jax" in sys.modules})
    print("=== end of case ===", file=sys.stderr, flush=True)
print(json.dumps(results))
"""


def run_cli_cases(cases: list[list[str]], cwd: Path) -> list[tuple[dict, str]]:
    """Runs the cases one after the other in one fresh process (one import of the CLI)."""
    r = subprocess.run(
        [sys.executable, "-c", CODE, json.dumps(cases)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )
    results = json.loads(r.stdout.strip().splitlines()[-1])
    errs = r.stderr.split("=== end of case ===")
    return list(zip(results, errs, strict=False))


def run_cli(args: list[str], cwd: Path) -> tuple[dict, str]:
    return run_cli_cases([args], cwd)[0]


@pytest.fixture
def runs(tmp_path):
    """A run directory with the files distill writes (contents never read by these checks), one
    without an audit, and a non-empty directory."""
    full = tmp_path / "full"
    (full / "audit").mkdir(parents=True)
    for name in ("distilled.npz", "run.json", "eval.json", "audit/audit.json"):
        (full / name).write_bytes(b"{}")
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("distilled.npz", "run.json", "eval.json"):
        (bare / name).write_bytes(b"{}")
    (tmp_path / "bundle").mkdir()
    return tmp_path


CASES = [
    (["distill", "--out", "bare"], "exists and is not empty"),
    (["distill", "--out", "new", "--data", "missing.npz"], "data file not found: missing.npz"),
    (["distill", "--out", "new", "--data", "nowhere/"], "data source not found: nowhere/"),
    (["distill", "--out", "new", "--config", "nope.toml"], "--config nope.toml: no such file"),
    (["distill", "--out", "new", "--resume"], "--resume: run directory not found"),
    (["evaluate", "nowhere"], "run directory not found: nowhere"),
    (["audit", "nowhere"], "run directory not found: nowhere"),
    (["audit", "bundle"], "distilled.npz is missing"),
    (["release", "bare", "--policy", "default", "--out", "b"], "audit.json is missing"),
    (["release", "full", "--policy", "default", "--out", "bundle"], "output already exists"),
    (
        ["release", "full", "--policy", "defualt", "--out", "b"],
        "shipped: default, strict, dp, demo",
    ),
    (["release", "full", "--policy", "x/p.toml", "--out", "b"], "no such file"),
    (["release", "nowhere", "--policy", "x", "--out", "b", "--license", "a b"], "not an SPDX"),
    (
        ["release", "full", "--policy", "default", "--out", "b", "--fingerprint-key", "k"],
        "k: no such",
    ),
]


def test_bad_paths_are_reported_before_jax_is_imported(runs):
    results = run_cli_cases([args for args, _ in CASES], runs)
    assert len(results) == len(CASES)
    for (args, message), (result, err) in zip(CASES, results, strict=True):
        assert result["code"] == 2, (args, err)
        assert message in err and "Traceback" not in err, (args, err)
        assert not result["jax"], f"JAX was imported before the error: {args}: {err}"
    assert not (runs / "b").exists() and not (runs / "new").exists()


def test_a_malformed_policy_is_reported_before_jax(runs):
    (runs / "bad.toml").write_text("[policy]\nname = 'x'\n")
    result, err = run_cli(["release", "full", "--policy", "bad.toml", "--out", "b"], runs)
    assert result["code"] == 2 and "missing key" in err and not result["jax"]


def test_the_check_is_real_a_run_that_passes_it_goes_on_to_load(runs):
    """The broken variant: paths that pass the checks reach the library, which imports JAX (or
    reads the files) before failing on the placeholder contents."""
    result, err = run_cli(["audit", "full", "-q"], runs)
    assert result["code"] == 2 and result["jax"], err
