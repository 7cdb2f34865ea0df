"""Nothing published that the guarantee does not cover (issue 20, item 3).

- Every bundle carries the data fingerprint keyed (HMAC-SHA256 under the custodian's key), never
  the unsalted fingerprint or any sha256 of the private arrays (grepped in every file's bytes).
- A DP bundle by default holds the DP output and what derives only from it and public facts: it is
  byte for byte the same whatever the audit's statistics, the accuracies and the private splits'
  values are. With --include-private-stats the card lists, file by file, what (ε, δ) covers.
- verify handles both layouts.
"""

import datetime
import hashlib
import hmac
import json
import os
import secrets
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import resealing
from rcig_release.cli.main import app
from rcig_release.data.dataset import make_dataset
from rcig_release.errors import InputError
from rcig_release.release import bundle as bundlemod
from rcig_release.release import coverage
from rcig_release.release import fingerprint as fpmod
from rcig_release.release.bundle import release
from rcig_release.release.hashing import bytes_sha256
from rcig_release.release.verify import verify_bundle
from release_fixtures import (
    dp_statement,
    fake_run,
    loader_for,
    private_data,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "policies" / "default.toml"
DP = ROOT / "policies" / "dp.toml"


def real_data(seed: int = 0):
    """A private data set with its real fingerprint (``make_dataset``), saved where fake_run's
    run.json says its source is, so the CLI's own loader finds it."""
    rng = np.random.default_rng(seed)
    # testing.private_data's sizes: the audit's game then has 200 + 200 records, enough for the
    # default policy's rules (which the gate recomputes) to be decidable
    x = rng.uniform(0, 1, size=(800, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, size=800)
    return make_dataset(x[:400], y[:400], x[400:], y[400:], ("zero", "one", "two"), "x", None)


def with_source(run: Path, ds) -> Path:
    """Writes ``ds`` to the npz run.json names (and records the real source fingerprint in the
    audit, as audits/runner.py does)."""
    src = Path(json.loads((run / "run.json").read_text())["data"]["source"])
    src.parent.mkdir(parents=True, exist_ok=True)
    np.savez(src, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    audit_path = run / "audit" / "audit.json"
    audit = json.loads(audit_path.read_text())
    audit["data"] = {
        "source_fingerprint": ds.fingerprint,
        "n_train": len(ds.x_train),
        "n_test": len(ds.x_test),
    }
    audit_path.write_text(json.dumps(audit))
    return run


def key_file(path: Path) -> Path:
    path.write_bytes(secrets.token_bytes(32))
    path.chmod(0o600)
    return path


def forbidden_digests(ds, run: Path) -> list[bytes]:
    """Every unsalted digest of the private data a bundle could leak: the fingerprint, the sha256
    of each split array's bytes, and the sha256 of run.json (which holds the fingerprint); each as
    lower- and upper-case hex and as raw bytes."""
    hexes = [ds.fingerprint.removeprefix("sha256:")]
    for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        hexes.append(hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest())
    hexes.append(bytes_sha256((run / "run.json").read_bytes()))
    out = []
    for h in hexes:
        out += [h.encode(), h.upper().encode(), bytes.fromhex(h)]
    return out


def leaks(bundle: Path, forbidden: list[bytes]) -> list[str]:
    return [
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and any(f in p.read_bytes() for f in forbidden)
    ]


@pytest.mark.parametrize("kind", ["plain", "dp", "dp_included"])
def test_no_bundle_file_holds_an_unsalted_hash_of_the_private_data(tmp_path, kind):
    ds = real_data()
    dp = dp_statement() if kind != "plain" else None
    run = with_source(fake_run(tmp_path / "run", data=ds, dp=dp), ds)
    forbidden = forbidden_digests(ds, run)
    # the check sees what the run directory (private to the custodian) holds
    assert sorted(leaks(run, forbidden)) == ["audit/audit.json", "run.json"]
    out = tmp_path / "b"
    release(
        run,
        DP if dp else DEFAULT,
        out,
        load_private=loader_for(ds),
        fingerprint_key=key_file(tmp_path / "k"),
        include_private_stats=kind == "dp_included",
    )
    assert leaks(out, forbidden) == []
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["data"]["fingerprint_hmac"].startswith("hmac-sha256:")


def test_the_hash_check_fails_on_a_bundle_that_publishes_the_plain_fingerprint(
    tmp_path, monkeypatch
):
    """The grep above is able to fail: with the keying switched off, it finds the fingerprint."""
    ds = real_data()
    run = with_source(fake_run(tmp_path / "run", data=ds), ds)
    monkeypatch.setattr(
        bundlemod, "public_data", lambda run_json, key: dict(run_json["data"])
    )  # broken: the unsalted fingerprint kept
    out = tmp_path / "b"
    release(
        run, DEFAULT, out, load_private=loader_for(ds), fingerprint_key=key_file(tmp_path / "k")
    )
    assert "provenance.json" in leaks(out, forbidden_digests(ds, run))


# ---- the keyed fingerprint ----------------------------------------------------------------------


def test_the_keyed_fingerprint_checks_with_the_right_key_only(tmp_path):
    ds = real_data()
    run = with_source(fake_run(tmp_path / "run", data=ds), ds)
    key = key_file(tmp_path / "custodian.key")
    out = tmp_path / "b"
    release(run, DEFAULT, out, load_private=loader_for(ds), fingerprint_key=key)
    prov = json.loads((out / "provenance.json").read_text())
    # the documented check without rcig-release (docs/release.md): HMAC-SHA256 of run.json's
    # "sha256:<hex>" fingerprint under the key
    fp = json.loads((run / "run.json").read_text())["data"]["fingerprint"]
    mac = hmac.new(key.read_bytes(), fp.encode("ascii"), hashlib.sha256).hexdigest()
    assert prov["data"]["fingerprint_hmac"] == "hmac-sha256:" + mac
    assert verify_bundle(out, fingerprint_key=key, run=run) == []
    src = json.loads((run / "run.json").read_text())["data"]["source"]
    assert verify_bundle(out, fingerprint_key=key, data=src) == []  # the data itself

    other = key_file(tmp_path / "other.key")
    problems = verify_bundle(out, fingerprint_key=other, run=run)
    assert len(problems) == 1 and "made with another key" in problems[0], problems
    other_ds = real_data(seed=1)
    other_run = with_source(fake_run(tmp_path / "run2", data=other_ds), other_ds)
    problems = verify_bundle(out, fingerprint_key=key, run=other_run)
    assert len(problems) == 1 and "not made from this data" in problems[0], problems

    runner = CliRunner()
    r = runner.invoke(app, ["verify", str(out), "--fingerprint-key", str(key), "--run", str(run)])
    assert r.exit_code == 0 and "keyed fingerprint valid" in r.output, r.output
    r = runner.invoke(app, ["verify", str(out), "--fingerprint-key", str(other), "--run", str(run)])
    assert r.exit_code == 1 and "another key" in r.output
    r = runner.invoke(app, ["verify", str(out), "--fingerprint-key", str(key)])
    assert r.exit_code == 2 and "needs --run RUN or --data SPEC" in r.output


def test_the_fingerprint_key_file(tmp_path, monkeypatch):
    ds = real_data()
    run = with_source(fake_run(tmp_path / "run", data=ds), ds)
    load = loader_for(ds)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    first = release(run, DEFAULT, tmp_path / "b1", load_private=load)
    default = tmp_path / "config" / "rcig-release" / "fingerprint.key"
    assert first.fingerprint_key == default and first.key_created
    assert default.stat().st_mode & 0o777 == 0o600 and len(default.read_bytes()) == 32
    assert (default.parent.stat().st_mode & 0o777) == 0o700
    second = release(run, DEFAULT, tmp_path / "b2", load_private=load)
    assert not second.key_created
    fps = [
        json.loads((tmp_path / b / "provenance.json").read_text())["data"]["fingerprint_hmac"]
        for b in ("b1", "b2")
    ]
    assert fps[0] == fps[1]  # one custodian key: the same data gets the same keyed fingerprint
    r = CliRunner().invoke(
        app, ["release", str(run), "--policy", str(DEFAULT), "--out", str(tmp_path / "b3")]
    )
    assert r.exit_code == 0 and f"keyed with {default}" in r.output.replace("\n", ""), r.output

    loose = key_file(tmp_path / "loose.key")
    loose.chmod(0o644)
    with pytest.raises(InputError, match="accessible by group or others"):
        release(run, DEFAULT, tmp_path / "c", load_private=load, fingerprint_key=loose)
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 16)
    short.chmod(0o600)
    with pytest.raises(InputError, match="at least 32"):
        release(run, DEFAULT, tmp_path / "c", load_private=load, fingerprint_key=short)
    with pytest.raises(InputError, match="fingerprint key not found"):  # never made up
        release(run, DEFAULT, tmp_path / "c", load_private=load, fingerprint_key=tmp_path / "nope")
    with pytest.raises(InputError, match="outside the bundle"):
        release(
            run, DEFAULT, tmp_path / "c", load_private=load, fingerprint_key=tmp_path / "c" / "k"
        )
    assert not (tmp_path / "c").exists() and not (tmp_path / "nope").exists()


def test_keyed_and_key_id_are_hmacs():
    key = bytes(range(32))
    fp = "sha256:" + "ab" * 32
    assert fpmod.keyed(fp, key) == "hmac-sha256:" + hmac.new(key, fp.encode(), "sha256").hexdigest()
    assert fpmod.keyed(fp, key) != fpmod.keyed(fp, bytes(32))
    assert fpmod.key_id(key) != fpmod.key_id(bytes(32)) and len(fpmod.key_id(key)) == 16
    with pytest.raises(InputError, match="not a 'sha256:<64 hex digits>'"):
        fpmod.keyed("ab" * 32, key)


# ---- a DP bundle withholds what the guarantee does not cover -------------------------------------


def dp_run(root: Path, *, variant: int):
    """A DP run whose released arrays, run.json and DP statement are fixed, and whose private
    statistics depend on ``variant``: its attack figures and copy check, the evaluation's
    accuracies, and the private splits' values (same recorded fingerprint, as the test loader
    allows)."""
    data = private_data(seed=2 * variant)  # seeds whose memorisation check passes
    statement = dp_statement()
    run = fake_run(root, data=data, dp=statement)
    audit_path = run / "audit" / "audit.json"
    audit = json.loads(audit_path.read_text())
    # the game and its dp section are fake_run's, written as raw files that the gate recomputes
    # them from (the audit's seed and configuration are public: the same for both variants)
    rng = np.random.default_rng(100 + variant)
    for a in audit["attacks"].values():
        a["auc"] = float(0.5 + 0.02 * rng.random())
    audit["copy_check"]["threshold"] = float(0.04 + 0.01 * rng.random())
    audit_path.write_text(json.dumps(audit))
    ev = json.loads((run / "eval.json").read_text())
    ev["accuracy_mean"] = float(0.7 + 0.2 * rng.random())
    ev["accuracies"] = [float(x) for x in 0.7 + 0.2 * rng.random(5)]
    (run / "eval.json").write_text(json.dumps(ev))
    return run, data


def bundle_bytes(out: Path) -> dict[str, bytes]:
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    prov = json.loads(files["provenance.json"])
    prov["created"] = "<time>"
    files["provenance.json"] = json.dumps(prov).encode()
    return files


def differing(a: dict[str, bytes], b: dict[str, bytes]) -> list[str]:
    return sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))


PRIVATE_KEYS = {
    "rules",
    "memorisation",
    "p_value",
    "p_nearest",
    "p_init",
    "d_nearest",
    "d_init",
    "auc",
    "accuracy",
    "accuracy_mean",
    "accuracies",
    "tpr_at_fpr",
    "epsilon_lower_bound",
    "empirical_epsilon_lower_bound",
    "copy_check",
    "per_image",
    "game",
}  # (provenance's audit.config.attacks is the list of attacks run: configuration, public)


def json_keys(obj) -> set[str]:
    """Every key holding a value (not null, not the word "withheld"), at any depth."""
    if isinstance(obj, dict):
        held = {k for k, v in obj.items() if v is not None and v != coverage.WITHHELD}
        return held | {k for v in obj.values() for k in json_keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in json_keys(v)}
    return set()


class _Frozen(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2026, 12, 7, 12, 0, 0, tzinfo=tz)


def test_a_dp_bundle_holds_no_private_statistic_by_default(tmp_path, monkeypatch):
    """Two DP runs with the same output and public facts and different private statistics (audit,
    accuracies, memorisation distances and p-values, private splits) give byte-identical default
    bundles: no file is a function of those statistics. With --include-private-stats they differ
    (the comparison can fail). The clock is frozen: the creation time is the one other input."""
    monkeypatch.setattr(bundlemod, "_dt", types.SimpleNamespace(datetime=_Frozen, UTC=datetime.UTC))
    key = key_file(tmp_path / "k")
    built = {}
    for variant in (0, 1):
        run, data = dp_run(tmp_path / f"run{variant}", variant=variant)
        for include in (False, True):
            out = tmp_path / f"b{variant}{'i' if include else ''}"
            result = release(
                run,
                DP,
                out,
                load_private=loader_for(data),
                fingerprint_key=key,
                include_private_stats=include,
                name="DP toy",
            )
            assert result.decision.passed and result.private_stats == (
                coverage.INCLUDED if include else coverage.WITHHELD
            )
            assert verify_bundle(out) == []
            built[variant, include] = bundle_bytes(out)
    default = built[0, False]
    assert differing(default, built[1, False]) == []
    assert not any(p.startswith("report/") for p in default)
    assert {"report/audit.json", "policy/verdict.json", "provenance.json", "README.md"} <= set(
        differing(built[0, True], built[1, True])
    )
    for path, data in default.items():
        if path.endswith(".json"):
            keys = json_keys(json.loads(data))
            assert not keys & PRIVATE_KEYS, (path, keys & PRIVATE_KEYS)
    prov = json.loads(default["provenance.json"])
    verdict = json.loads(default["policy/verdict.json"])
    assert prov["evaluation"] is None and prov["release"]["private_stats"] == "withheld"
    assert verdict["verdict"] == "pass" and verdict["safety"] == {
        "passed": True,
        "memorisation": "withheld",
    }
    assert verdict["dp"]["audit_check"] is None
    card = default["README.md"].decode()
    assert "not in this bundle" in card and "test accuracy" not in card


def test_with_private_stats_the_card_lists_coverage_file_by_file(tmp_path):
    run, data = dp_run(tmp_path / "run", variant=0)
    out = tmp_path / "b"
    release(
        run,
        DP,
        out,
        load_private=loader_for(data),
        fingerprint_key=key_file(tmp_path / "k"),
        include_private_stats=True,
    )
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    card = (out / "README.md").read_text()
    table = card.split("What the (ε, δ) statement covers, file by file:")[1].split("## ")[0]
    rows = {
        line.split(" | ")[0].removeprefix("| "): line.split(" | ")[1]
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| file")
    }
    pngs = [f for f in files if f.startswith("data/images/")]
    assert rows.pop("data/images/&lt;class&gt;/&lt;i&gt;.png \\(6 files\\)") == "yes"
    assert sorted(rows) == [f.replace("_", "\\_") for f in files if f not in pngs]
    for f in ("report/audit.json", "report/roc.png", "report/report.html", "policy/verdict.json"):
        assert rows[f] == "no", f
    for f in ("data/distilled.npz", "data/labels.csv", "data/metadata.jsonl"):
        assert rows[f] == "yes", f
    assert rows["provenance.json"] == "partly"
    # the DP sentence is generated from the table: every covered file in it, every other named
    sentence = card.split("## Differential privacy")[1].split("| property")[0]
    for f in ("data/distilled.npz", "data/labels.csv", "policy/policy.toml"):
        assert f"`{f}`" in sentence.split("It does **not** cover")[0]
    for f in ("report/audit.json", "report/roc.png", "policy/verdict.json"):
        assert f"`{f}`" in sentence.split("It does **not** cover")[1]
    assert "This release is **(" not in card  # no fixed claim about the whole release


def test_the_dp_sentence_follows_the_table():
    table = coverage.rows(
        ["data/distilled.npz", "data/labels.csv", "report/audit.json", "provenance.json"],
        included=True,
    )
    text = coverage.sentence(table, "1", "1e-06")
    assert "`data/labels.csv`" in text.split("does **not**")[0]
    moved = [
        (f, "no", "", "x") if f == "data/labels.csv" else r for r, f in ((r, r[0]) for r in table)
    ]
    text = coverage.sentence(moved, "1", "1e-06")
    assert "`data/labels.csv`" in text.split("does **not**")[1]
    # a file this version does not know is never claimed as covered
    assert coverage.rows(["report/game_scores.npz", "notes.txt"], included=True)[0][1] == "no"
    assert coverage.rows(["notes.txt"], included=True)[0][1] == "no"


# ---- verify on the withheld layout ---------------------------------------------------------------


def _reseal(bundle: Path) -> None:
    resealing.reseal(bundle)  # in the writer's format: verify rebuilds croissant.json


@pytest.fixture(scope="module")
def withheld(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("withheld")
    run, data = dp_run(tmp / "run", variant=0)
    key = key_file(tmp / "k")
    out, inc = tmp / "b", tmp / "inc"
    release(run, DP, out, load_private=loader_for(data), fingerprint_key=key)
    release(
        run, DP, inc, load_private=loader_for(data), fingerprint_key=key, include_private_stats=True
    )
    return out, inc


def _edit(path: Path, edit) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj, indent=2) + "\n")


@pytest.mark.parametrize(
    "tamper, expect",
    [
        (
            lambda b, inc: (
                (b / "report").mkdir(),
                shutil.copy(inc / "report" / "audit.json", b / "report" / "audit.json"),
            ),
            "report/audit.json: a statistic of the private data in a bundle whose provenance.json",
        ),
        (
            lambda b, inc: _edit(b / "policy" / "verdict.json", lambda v: v.update(rules=[])),
            "policy/verdict.json: rules holds audit statistics",
        ),
        (
            lambda b, inc: _edit(
                b / "policy" / "verdict.json", lambda v: v.update(verdict="overridden")
            ),
            "verdict is 'overridden' without failed rules and a reason",
        ),
        (
            lambda b, inc: _edit(
                b / "provenance.json", lambda p: p["release"].update(private_stats="included")
            ),
            "missing: report/audit.json",
        ),
        (
            lambda b, inc: _edit(b / "provenance.json", lambda p: p.update(evaluation={"a": 1})),
            "provenance.json: evaluation (accuracies on the private test split)",
        ),
        (
            lambda b, inc: _edit(b / "provenance.json", lambda p: p["dp"].update(epsilon=1.0)),
            "provenance.json dp: epsilon 1 is not what the accountant gives",
        ),
        (
            lambda b, inc: (b / "README.md").write_text(
                (b / "README.md")
                .read_text()
                .replace("| policy/verdict.json | no |", "| policy/verdict.json | yes |")
            ),
            "README.md: line",
        ),
    ],
)
def test_verify_checks_a_withheld_bundle(withheld, tmp_path, tamper, expect):
    out, inc = withheld
    assert verify_bundle(out) == [] and verify_bundle(inc) == []
    b = tmp_path / "b"
    shutil.copytree(out, b)
    tamper(b, inc)
    _reseal(b)
    problems = verify_bundle(b)
    assert any(expect in p for p in problems), problems


def test_verify_cli_says_what_a_withheld_bundle_shows(withheld):
    out, _ = withheld
    r = CliRunner().invoke(app, ["verify", str(out)])
    assert r.exit_code == 0 and "cannot be recomputed" in r.output.replace("\n", " "), r.output
    assert os.path.isdir(out) and not (out / "report").exists()
