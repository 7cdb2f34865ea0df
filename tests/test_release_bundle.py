"""`release`: pass -> bundle, fail -> nothing and exit 3, override recorded, safety never overridden."""

import csv
import getpass
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from rcig_release.cli.main import app
from rcig_release.errors import InputError
from rcig_release.release import safety
from rcig_release.release.bundle import ReleaseRefused, release
from rcig_release.release.documents import hf_license
from rcig_release.release.hashing import arrays_sha256, bytes_sha256
from rcig_release.release.verify import verify_bundle
from release_fixtures import (
    FINGERPRINT,
    fake_run,
    loader_for,
    private_data,
    rebind_audit,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "policies" / "default.toml"
EXPECTED = {
    "README.md",
    "croissant.json",
    "manifest-sha256.txt",
    "provenance.json",
    "data/distilled.npz",
    "data/labels.csv",
    "data/metadata.jsonl",
    "report/audit.json",
    "report/game_scores.npz",
    "report/game_records.json",
    "report/roc.png",
    "report/histograms.png",
    "report/report.html",
    "policy/verdict.json",
    "policy/policy.toml",
}


def files_of(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def data():
    return private_data()


@pytest.fixture
def clean_run(tmp_path, data):
    return fake_run(tmp_path / "run", data=data)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One passing release, shared by the read-only tests (a release renders figures: ~1-3 s)."""
    tmp = tmp_path_factory.mktemp("built")
    data = private_data()
    run = fake_run(tmp / "run", data=data)
    run_json = json.loads((run / "run.json").read_text())
    run_json["versions"]["where"] = str(Path.home() / "secret" / "project")
    run_json["device"] = f"cpu on {os.uname().nodename}"
    (run / "run.json").write_text(json.dumps(run_json))
    rebind_audit(run)  # as an audit of the edited run would record it
    load = loader_for(data)
    out = tmp / "out" / "bundle"
    result = release(
        run, DEFAULT, out, load_private=load, license_spdx="CC-BY-4.0", name="Toy: set"
    )
    return run, out, result, load, tmp


def test_pass_writes_the_bundle(built):
    clean_run, out, result, load, _ = built
    assert result.decision.passed and result.safety.passed and result.safety.flagged == 0
    assert load.calls == [(str(clean_run.resolve() / "private" / "secret.npz"), 7)]
    images = {
        f"data/images/{c}/{i}.png"
        for i, c in enumerate(["zero", "zero", "one", "one", "two", "two"])
    }
    assert files_of(out) == EXPECTED | images
    assert verify_bundle(out) == []
    # nothing else left next to the bundle (the temporary directory was renamed)
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]

    with np.load(clean_run / "distilled.npz") as z:
        images_run, labels_run = z["images"], z["labels"]
    with np.load(out / "data/distilled.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["classes", "images", "labels"]
        np.testing.assert_array_equal(z["images"], images_run)
        np.testing.assert_array_equal(z["labels"], labels_run)
        assert tuple(z["classes"]) == ("zero", "one", "two")
    px = np.asarray(Image.open(out / "data/images/one/3.png"))
    np.testing.assert_array_equal(px, np.round(images_run[3, ..., 0] * 255).astype(np.uint8))

    rows = list(csv.reader(io.StringIO((out / "data/labels.csv").read_text())))
    assert rows[0] == ["index", "file", "class", "zero", "one", "two"]
    assert rows[4][:3] == ["3", "data/images/one/3.png", "one"]
    np.testing.assert_array_equal(np.array([r[3:] for r in rows[1:]], dtype=np.float32), labels_run)

    verdict = json.loads((out / "policy/verdict.json").read_text())
    assert verdict["verdict"] == "pass" and verdict["override"] is None
    assert verdict["policy"]["sha256"] == bytes_sha256(DEFAULT.read_bytes())
    assert len(verdict["rules"]) == len(result.decision.rules)
    assert all({"name", "value", "limit", "passed"} <= set(r) for r in verdict["rules"])
    assert verdict["safety"]["passed"] and verdict["safety"]["exact_copies"] == 0
    mem = verdict["safety"]["memorisation"]
    assert mem["passed"] and mem["flagged"] == 0 and mem["n_tests"] == 6 and len(mem["images"]) == 6
    # the bundle's copy holds no training indices
    assert not any("index" in k and k != "index" for im in mem["images"] for k in im)

    prov = json.loads((out / "provenance.json").read_text())
    assert prov["content_sha256"] == arrays_sha256(images_run, labels_run, ("zero", "one", "two"))
    assert prov["run_sha256"] == bytes_sha256((clean_run / "distilled.npz").read_bytes())
    # the keyed fingerprint (under the default key, created for the session), never the plain one
    assert "fingerprint" not in prov["data"] and FINGERPRINT not in json.dumps(prov)
    assert prov["data"]["fingerprint_hmac"].startswith("hmac-sha256:")
    assert prov["data"]["source"] == "secret.npz (path withheld)"
    assert prov["seeds"] == {"distill": 3, "split": 7, "evaluate": None, "audit": 0}
    assert prov["audit"]["n_shadows"] == 16
    assert prov["release"]["private_stats"] == "included"  # no DP: the statistics stay

    audit_in = json.loads((clean_run / "audit/audit.json").read_text())
    audit_in.pop("run_json_sha256")  # a digest of run.json, which holds the plain fingerprint
    assert json.loads((out / "report/audit.json").read_text()) == audit_in


def test_card_front_matter(built):
    out = built[1]
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(header)
    assert meta["license"] == "cc-by-4.0" and meta["pretty_name"] == "Toy: set"
    assert meta["task_categories"] == ["image-classification"]
    assert meta["size_categories"] == ["n<1K"]
    assert {"synthetic", "dataset-distillation"} <= set(meta["tags"])
    for section in (
        "## How it was made",
        "## Uses",
        "## Privacy considerations",
        "## Utility",
        "## Bias, risks, and limitations",
    ):
        assert section in body
    assert "verdict **pass**" in body and "naive game AUC" in body and "does not cover" in body


def test_card_license_unknown_and_missing(tmp_path, clean_run, data):
    release(
        clean_run,
        DEFAULT,
        tmp_path / "a",
        load_private=loader_for(data),
        license_spdx="LicenseRef-Custom",
    )
    meta_a = yaml.safe_load((tmp_path / "a/README.md").read_text().split("---\n")[1])
    assert meta_a["license"] == "other" and meta_a["license_name"] == "LicenseRef-Custom"
    assert hf_license(None) == {"license": "other", "license_name": "unspecified"}
    assert hf_license("Apache-2.0") == {"license": "apache-2.0"}
    with pytest.raises(InputError, match="not an SPDX"):
        release(
            clean_run,
            DEFAULT,
            tmp_path / "c",
            load_private=loader_for(data),
            license_spdx="MIT; rm -rf",
        )


def test_croissant_lists_every_file_with_sha256(built):
    out = built[1]
    meta = json.loads((out / "croissant.json").read_text())
    assert (
        meta["conformsTo"] == "http://mlcommons.org/croissant/1.0" and meta["@type"] == "sc:Dataset"
    )
    listed = {
        d["contentUrl"]: d["sha256"] for d in meta["distribution"] if d["@type"] == "cr:FileObject"
    }
    assert [d["includes"] for d in meta["distribution"] if d["@type"] == "cr:FileSet"] == [
        "data/images/*/*.png"
    ]
    assert set(listed) == files_of(out) - {"croissant.json", "manifest-sha256.txt"}
    for path, digest in listed.items():
        assert bytes_sha256((out / path).read_bytes()) == digest
    manifest = dict(
        line.split("  ")[::-1] for line in (out / "manifest-sha256.txt").read_text().splitlines()
    )
    assert set(manifest) == files_of(out) - {"manifest-sha256.txt"}


def test_no_paths_user_or_host_names_in_bundle(built):
    out, tmp_path = built[1], built[4]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["versions"]["where"] == "<redacted>/project"
    for path in out.rglob("*"):
        if path.suffix in (".png", ".npz") or path.is_dir():
            continue
        text = path.read_text()
        assert (
            str(tmp_path) not in text and "/tmp/" not in text and str(Path.home()) + "/" not in text
        ), path
        for name in (getpass.getuser(), os.uname().nodename):
            if len(name) >= 2:
                assert not re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text), (path, name)


def test_roc_is_the_games_whatever_the_audit_dir_holds(tmp_path, data):
    """report/roc.png is drawn from the game's scores (report/game_scores.npz), not copied from
    RUN/audit/roc.png nor drawn from the release split's RUN/audit/scores.npz."""
    from rcig_release.release import figures, recompute

    with_roc = fake_run(tmp_path / "r1", data=data, with_roc=True)
    release(with_roc, DEFAULT, tmp_path / "b1", load_private=loader_for(data))
    with_scores = fake_run(tmp_path / "r2", data=data, with_scores=True)
    release(with_scores, DEFAULT, tmp_path / "b2", load_private=loader_for(data))
    assert (tmp_path / "b1/report/roc.png").read_bytes() != (
        with_roc / "audit/roc.png"
    ).read_bytes()
    for b in ("b1", "b2"):
        bundle = tmp_path / b
        scores, keep = recompute.load_game_scores((bundle / "report/game_scores.npz").read_bytes())
        assert (bundle / "report/roc.png").read_bytes() == figures.game_roc_png(scores, keep)
        with Image.open(bundle / "report/roc.png") as im:
            assert im.format == "PNG" and im.size[0] > 200


def test_fail_writes_nothing_and_exits_3(tmp_path, data, monkeypatch):
    leak = fake_run(tmp_path / "leak", data=data, leak=True)
    out = tmp_path / "out" / "bundle"
    with pytest.raises(ReleaseRefused) as e:
        release(leak, DEFAULT, out, load_private=loader_for(data))
    assert e.value.exit_code == 3
    failed = {r.name for r in e.value.decision.failed}
    assert "game.nearest[init].auc" in failed and "game.nearest[all].tpr_at_fpr_0.001" in failed
    assert not out.exists() and not out.parent.exists()

    monkeypatch.setattr(safety, "default_loader", loader_for(data))
    res = CliRunner().invoke(
        app, ["release", str(leak), "--policy", str(DEFAULT), "--out", str(out)]
    )
    assert res.exit_code == 3, res.output
    assert "game.nearest[init].auc" in res.output and "no bundle written" in res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_override_is_recorded(tmp_path, data):
    leak = fake_run(tmp_path / "leak", data=data, leak=True)
    other = private_data(seed=9)  # the safety check sees data the release does not copy
    other.fingerprint = FINGERPRINT
    out = tmp_path / "b"
    result = release(
        leak, DEFAULT, out, load_private=loader_for(other), override="  internal   test release "
    )
    assert not result.decision.passed and result.override == "internal test release"
    verdict = json.loads((out / "policy/verdict.json").read_text())
    assert verdict["verdict"] == "overridden" and verdict["override"] == {
        "reason": "internal test release"
    }
    assert "game.nearest[init].auc" in verdict["failed"]
    card = (out / "README.md").read_text()
    assert "released with an override" in card and "internal test release" in card
    html = (out / "report/report.html").read_text()
    assert "Policy failed, released with an override" in html and "internal test release" in html
    assert verify_bundle(out) == []


def test_safety_check_is_never_overridden(tmp_path, data):
    run = fake_run(tmp_path / "run", data=data)  # the audit sees no copies ...
    with np.load(run / "distilled.npz") as z:
        released = z["images"]
    # ... but the private training split does contain two released images (an audit that missed them)
    x = data.x_train.copy()
    x[10], x[20] = released[1], np.clip(released[4] + 0.01, 0, 1)
    leaky = private_data()
    leaky.x_train = x
    for override in (None, "I know what I am doing"):
        with pytest.raises(
            ReleaseRefused, match="memorisation check: 2 of 6 released image.* flagged"
        ) as e:
            release(run, DEFAULT, tmp_path / "b", load_private=loader_for(leaky), override=override)
        assert e.value.safety.flagged == 2 and e.value.safety.exact_copies == 1
        assert [im.index for im in e.value.safety.memorisation.images if im.flagged] == [1, 4]
        assert not (tmp_path / "b").exists()
    # a policy allowing near copies in the bundle no longer switches the check off
    allow = tmp_path / "allow.toml"
    allow.write_text(
        DEFAULT.read_text().replace(
            "allow_near_copies_in_bundle = false", "allow_near_copies_in_bundle = true"
        )
    )
    with pytest.raises(ReleaseRefused, match="memorisation check"):
        release(
            run, allow, tmp_path / "b", load_private=loader_for(leaky), override="allowed anyway"
        )
    assert not (tmp_path / "b").exists()


def test_private_data_fingerprint_and_data_option(tmp_path, clean_run, data):
    wrong = private_data()
    wrong.fingerprint = "sha256:" + "cd" * 32
    with pytest.raises(InputError, match="fingerprint differs"):
        release(clean_run, DEFAULT, tmp_path / "b", load_private=loader_for(wrong))
    load = loader_for(data)
    release(clean_run, DEFAULT, tmp_path / "b", load_private=load, data="digits")
    assert load.calls == [("digits", 7)]
    run_json = json.loads((clean_run / "run.json").read_text())
    run_json["data"]["split_seed"] = None  # a source with its own split records no seed
    (clean_run / "run.json").write_text(json.dumps(run_json))
    load = loader_for(data)
    with pytest.raises(InputError, match="already exists"):
        release(clean_run, DEFAULT, tmp_path / "b", load_private=load)
    from rcig_release.release.safety import load_private_train

    load_private_train(run_json, loader=load)
    assert load.calls == [(run_json["data"]["source"], 0)]
    small = private_data(shape=(4, 4, 1))
    small.fingerprint = FINGERPRINT
    rebind_audit(clean_run)
    with pytest.raises(InputError, match="not the data this run was distilled from"):
        release(clean_run, DEFAULT, tmp_path / "c", load_private=loader_for(small))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda run: (run / "audit/audit.json").unlink(), "audit.json not found"),
        (lambda run: (run / "eval.json").unlink(), "eval.json not found"),
        (
            lambda run: _edit_audit(run, run_sha256="1" * 64),
            "distilled.npz changed since the audit",
        ),
        (lambda run: _edit_audit(run, run_json_sha256=None), "run_json_sha256 missing"),
        (lambda run: _edit_audit(run, run_sha256=None), "run_sha256 missing"),
        (lambda run: _edit_audit(run, attacks=None), "attacks missing"),
        (lambda run: _edit_audit(run, copy_check=None), "copy_check missing"),
        (lambda run: _edit_audit(run, copy_check={"near_copies": 0}), "copy_check.threshold"),
        (lambda run: (run / "audit/audit.json").write_text("{"), "not valid JSON"),
        (lambda run: (run / "distilled.npz").write_bytes(b"nope"), "not a readable npz"),
    ],
)
def test_bad_inputs_are_input_errors(tmp_path, clean_run, data, mutate, message):
    mutate(clean_run)
    with pytest.raises(InputError, match=message):
        release(clean_run, DEFAULT, tmp_path / "b", load_private=loader_for(data))
    assert not (tmp_path / "b").exists()


def _edit_audit(run: Path, **changes):
    audit = json.loads((run / "audit/audit.json").read_text())
    for k, v in changes.items():
        if v is None:
            audit.pop(k)
        else:
            audit[k] = v
    (run / "audit/audit.json").write_text(json.dumps(audit))


def test_existing_output_and_symlinks_refused(tmp_path, clean_run, data):
    out = tmp_path / "b"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match="already exists"):
        release(clean_run, DEFAULT, out, load_private=loader_for(data))
    assert (out / "mine.txt").read_text() == "keep" and files_of(out) == {"mine.txt"}

    secret = tmp_path / "elsewhere.png"
    secret.write_bytes(b"not for the bundle")
    (clean_run / "audit/roc.png").symlink_to(secret)
    with pytest.raises(InputError, match="roc.png is a symlink"):
        release(clean_run, DEFAULT, tmp_path / "c", load_private=loader_for(data))
    assert not (tmp_path / "c").exists()


def test_cli_pass_and_verify(tmp_path, clean_run, data, monkeypatch):
    monkeypatch.setattr(safety, "default_loader", loader_for(data))
    out = tmp_path / "b"
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "release",
            str(clean_run),
            "--policy",
            str(DEFAULT),
            "--out",
            str(out),
            "--license",
            "MIT",
            "--override",
            "belt and braces",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "passed" in res.output and out.is_dir()
    verdict = json.loads((out / "policy/verdict.json").read_text())
    assert verdict["verdict"] == "pass" and verdict["override"] == {"reason": "belt and braces"}
    assert "override was given but not needed" in (out / "README.md").read_text()
    res = runner.invoke(app, ["verify", str(out)])
    assert res.exit_code == 0 and "bundle intact" in res.output
    res = runner.invoke(app, ["verify", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(
        app,
        [
            "release",
            str(clean_run),
            "--policy",
            str(tmp_path / "x.toml"),
            "--out",
            str(tmp_path / "c"),
        ],
    )
    assert res.exit_code == 2 and "no shipped policy of that name and no such file" in res.output


def test_runner_layout_audit_is_released_and_rendered(tmp_path, data):
    run = fake_run(tmp_path / "run", data=data, runner_layout=True, with_scores=True)
    out = tmp_path / "b"
    result = release(run, DEFAULT, out, load_private=loader_for(data))
    assert result.decision.passed and verify_bundle(out) == []
    html = (out / "report/report.html").read_text()
    assert "nearest held-out distance" in html and html.count("<tr>") > 6 + 1
    assert "naive release (same number of random real images) (audit target networks)" in html
    card = (out / "README.md").read_text()
    assert "| loss | 0.510 | 0.010 | 0.506 | 0.149 | 0.00 " in card  # this release, then the game
