"""`verify`: tamper with every kind of bundle file, remove one, add one -> verify names it."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import resealing
from rcig_release.cli.main import app
from rcig_release.errors import InputError
from rcig_release.release.bundle import npz_bytes, release
from rcig_release.release.verify import verify_bundle
from release_fixtures import fake_run, loader_for, private_data

DEFAULT = Path(__file__).resolve().parents[1] / "policies" / "default.toml"

# One file of every kind the bundle holds.
KINDS = [
    "README.md",
    "data/images/one/2.png",
    "data/distilled.npz",
    "data/labels.csv",
    "report/audit.json",
    "report/roc.png",
    "report/report.html",
    "policy/verdict.json",
    "policy/policy.toml",
    "provenance.json",
    "croissant.json",
    "manifest-sha256.txt",
]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verify")
    data = private_data()
    run = fake_run(tmp / "run", data=data)
    out = tmp / "bundle"
    release(run, DEFAULT, out, load_private=loader_for(data))
    assert verify_bundle(out) == []
    return out


@pytest.fixture
def bundle(pristine, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(pristine, copy)
    return copy


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2
    while data[i] >= 0x80 or data[i] in b"\n ":  # stay inside ASCII text, off separators
        i += 1
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("rel", KINDS)
def test_one_changed_byte_is_named(bundle, rel):
    flip_one_byte(bundle / rel)
    problems = verify_bundle(bundle)
    assert problems, rel
    assert any(rel in p for p in problems), problems


@pytest.mark.parametrize("rel", KINDS)
def test_removed_file_is_named(bundle, rel):
    (bundle / rel).unlink()
    problems = verify_bundle(bundle)
    assert f"missing: {rel}" in problems or any(
        p.startswith(f"missing: {rel}") for p in problems
    ), problems


def test_added_file_is_named(bundle):
    (bundle / "data/images/one/99.png").write_bytes((bundle / "data/images/one/2.png").read_bytes())
    (bundle / "notes.txt").write_text("hello")
    problems = verify_bundle(bundle)
    assert "extra: notes.txt (not in manifest-sha256.txt)" in problems
    assert "extra: data/images/one/99.png (not in manifest-sha256.txt)" in problems
    assert "data/images/one/99.png: not an image of the release" in problems


def test_symlink_is_named_not_followed(bundle, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    (bundle / "link.txt").symlink_to(outside)
    (bundle / "linkdir").symlink_to(tmp_path)
    problems = verify_bundle(bundle)
    assert "symlink (not followed): link.txt" in problems
    assert "symlink (not followed): linkdir" in problems
    assert not any("outside" in p for p in problems)


def _rewrite_checksums(bundle: Path) -> None:
    """What a careful forger does: recompute croissant.json and the manifest after an edit."""
    resealing.reseal(bundle)  # in the writer's format: verify rebuilds croissant.json


def test_swapped_data_with_fixed_checksums_breaks_the_binding(bundle):
    with np.load(bundle / "data/distilled.npz") as z:
        images, labels, classes = z["images"], z["labels"], tuple(z["classes"])
    images = images.copy()
    images[0] = 1.0 - images[0]
    (bundle / "data/distilled.npz").write_bytes(npz_bytes(images, labels, classes))
    _rewrite_checksums(bundle)
    problems = verify_bundle(bundle)
    assert "data/distilled.npz: content digest does not match provenance.json" in problems
    assert any(p.startswith("data/images/zero/0.png: pixels differ") for p in problems)
    assert not any(p.startswith(("changed:", "missing:", "extra:")) for p in problems)


def test_audit_of_another_run_is_detected(bundle):
    audit = json.loads((bundle / "report/audit.json").read_text())
    audit["run_sha256"] = "f" * 64
    (bundle / "report/audit.json").write_text(json.dumps(audit))
    _rewrite_checksums(bundle)
    assert verify_bundle(bundle) == [
        "report/audit.json: not the audit of the released data (run_sha256 differs from provenance.json)"
    ]


def test_labels_csv_must_match_the_arrays(bundle):
    text = (bundle / "data/labels.csv").read_text().splitlines()
    cells = text[1].split(",")
    cells[3] = repr(float(cells[3]) + 0.25)
    text[1] = ",".join(cells)
    (bundle / "data/labels.csv").write_text("\n".join(text) + "\n")
    _rewrite_checksums(bundle)
    assert verify_bundle(bundle) == [
        "data/labels.csv: row 1: soft labels of image 0 differ from data/distilled.npz"
    ]


def test_verify_cli_exit_codes(bundle, tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["verify", str(bundle)]).exit_code == 0
    (bundle / "README.md").write_text("replaced")
    res = runner.invoke(app, ["verify", str(bundle)])
    assert res.exit_code == 1
    assert "changed: README.md" in res.output and "bundle not intact" in res.output
    with pytest.raises(InputError):
        verify_bundle(tmp_path / "nope")
    (tmp_path / "alias").symlink_to(bundle)
    with pytest.raises(InputError, match="symlink"):
        verify_bundle(tmp_path / "alias")


def test_npz_with_pickles_is_refused(bundle):
    buf = io.BytesIO()
    np.savez(
        buf,
        images=np.zeros((1, 2, 2, 1), np.float32),
        labels=np.zeros((1, 3), np.float32),
        classes=np.array([object(), 1, "x"], dtype=object),
    )
    (bundle / "data/distilled.npz").write_bytes(buf.getvalue())
    problems = verify_bundle(bundle)
    assert "changed: data/distilled.npz (sha256 differs from manifest-sha256.txt)" in problems
    assert any("pickled" in p for p in problems)
