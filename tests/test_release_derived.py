"""`verify` rebuilds every derived file a user or a library loads and compares bytes (issue 22).

A careful forger edits a derived file of an unsigned bundle and reseals it: croissant.json's
checksums and sizes are updated in place (so croissant.json itself is what the writer would have
made of the edited files) and the manifest is rewritten. ``data/metadata.jsonl`` (what
``datasets`` and the imagefolder loader serve) and ``croissant.json`` (what mlcroissant serves)
must be named, as ``labels.csv``, the card and the report are. A file outside the known layout is
named even when the manifest lists it.
"""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rcig_release.cli.main import app
from rcig_release.release.bundle import release
from rcig_release.release.verify import verify_bundle
from release_fixtures import fake_run, loader_for, private_data
from resealing import reseal

DEFAULT = Path(__file__).resolve().parents[1] / "policies" / "default.toml"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("derived")
    data = private_data()
    out = tmp / "bundle"
    release(
        fake_run(tmp / "run", data=data),
        DEFAULT,
        out,
        load_private=loader_for(data),
        license_spdx="MIT",
    )
    return out


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _write_lines(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _meta_label(b: Path) -> None:
    rows = _lines(b / "data/metadata.jsonl")
    rows[0]["label"] = (rows[0]["label"] + 1) % 3
    _write_lines(b / "data/metadata.jsonl", rows)


def _meta_soft(b: Path) -> None:
    rows = _lines(b / "data/metadata.jsonl")
    rows[1]["soft_label"][0] += 0.25
    _write_lines(b / "data/metadata.jsonl", rows)


def _meta_swap(b: Path) -> None:
    rows = _lines(b / "data/metadata.jsonl")
    rows[0]["file_name"], rows[1]["file_name"] = rows[1]["file_name"], rows[0]["file_name"]
    _write_lines(b / "data/metadata.jsonl", rows)


def _meta_cut(b: Path) -> None:
    _write_lines(b / "data/metadata.jsonl", _lines(b / "data/metadata.jsonl")[:1])


def _meta_spaces(b: Path) -> None:  # same JSON values, other bytes
    rows = _lines(b / "data/metadata.jsonl")
    (b / "data/metadata.jsonl").write_text(
        "".join(json.dumps(r, indent=1).replace("\n", " ") + "\n" for r in rows)
    )


def _croissant(edit):
    def apply(b: Path) -> None:
        meta = json.loads((b / "croissant.json").read_text())
        edit(meta)
        (b / "croissant.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")

    return apply


def _class_name(meta: dict) -> None:
    rs = next(r for r in meta["recordSet"] if r["@id"] == "classes")
    rs["data"][0]["classes/name"] = "forged"


def _soft_label_field(meta: dict) -> None:
    rs = next(r for r in meta["recordSet"] if r["@id"] == "images")
    rs["field"][-1]["source"]["extract"]["column"] = "label"


def _labels_csv_quoting(b: Path) -> None:  # same cells, every cell quoted
    import csv
    import io

    rows = list(csv.reader(io.StringIO((b / "data/labels.csv").read_text())))
    buf = io.StringIO()
    csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    (b / "data/labels.csv").write_text(buf.getvalue())


EDITS = {
    "metadata: a label": (_meta_label, "data/metadata.jsonl"),
    "metadata: a soft label": (_meta_soft, "data/metadata.jsonl"),
    "metadata: two file names swapped": (_meta_swap, "data/metadata.jsonl"),
    "metadata: cut to one row": (_meta_cut, "data/metadata.jsonl"),
    "metadata: same values, other bytes": (_meta_spaces, "data/metadata.jsonl"),
    "croissant: a class name": (_croissant(_class_name), "croissant.json"),
    "croissant: the name": (_croissant(lambda m: m.update(name="forged")), "croissant.json"),
    "croissant: the licence": (_croissant(lambda m: m.update(license="CC0-1.0")), "croissant.json"),
    "croissant: the description": (
        _croissant(lambda m: m.update(description="audited, no risk")),
        "croissant.json",
    ),
    "croissant: a field's column": (_croissant(_soft_label_field), "croissant.json"),
    "croissant: the RAI note": (
        _croissant(lambda m: m.update({"rai:personalSensitiveInformation": "none"})),
        "croissant.json",
    ),
    "labels.csv: every cell quoted": (_labels_csv_quoting, "data/labels.csv"),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_a_resealed_edit_of_a_derived_file_is_named(made, tmp_path, case):
    edit, path = EDITS[case]
    b = tmp_path / "b"
    shutil.copytree(made, b)
    assert verify_bundle(b) == []
    edit(b)
    reseal(b, croissant=path != "croissant.json")
    problems = verify_bundle(b)
    assert any(p.startswith(f"{path}: differs from the file rebuilt") for p in problems), problems
    assert not any(p.startswith(("changed:", "extra:", "missing:")) for p in problems), problems
    r = CliRunner().invoke(app, ["verify", str(b)])
    assert r.exit_code == 1 and path in r.output


def test_the_reseal_alone_changes_nothing(made, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(made, b)
    reseal(b)
    assert verify_bundle(b) == []


@pytest.mark.parametrize("extra", ["data/extra.txt", "report/notes.json", "README.txt"])
def test_a_file_outside_the_layout_is_named_even_when_listed(made, tmp_path, extra):
    b = tmp_path / "b"
    shutil.copytree(made, b)
    (b / extra).write_text("{}\n")
    reseal(b)
    problems = verify_bundle(b)
    assert any(p.startswith(f"unexpected: {extra}") for p in problems), problems


def test_a_missing_metadata_file_is_named(made, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(made, b)
    (b / "data/metadata.jsonl").unlink()
    reseal(b)
    assert "missing: data/metadata.jsonl" in verify_bundle(b)
