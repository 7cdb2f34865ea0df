"""The release against hostile strings (tests/hostile.py): nothing executes, nothing breaks the YAML,
Markdown or CSV, control characters are refused, class folders stay distinct, the bundle loads
with the right labels in Hugging Face `datasets` and `mlcroissant`, and the leak scan refuses only
what identifies the machine."""

import base64
import csv
import io
import json
import logging
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import hostile
from rcig_release.cli.main import app
from rcig_release.errors import InputError
from rcig_release.release import redact, safety
from rcig_release.release.bundle import release
from rcig_release.release.derived import class_dir_names
from rcig_release.release.documents import fmt
from rcig_release.release.escape import csv_cell, csv_uncell, md
from rcig_release.release.figures import _label_font, drawable_name, grid_png, label_lines
from rcig_release.release.verify import verify_bundle
from release_fixtures import fake_run, loader_for, private_data

DEFAULT = Path(__file__).resolve().parents[1] / "policies" / "default.toml"
CHROMIUM = next(
    (
        p
        for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", shutil.which("chromium"))
        if p and Path(p).exists()
    ),
    None,
)
CLASSES = hostile.class_names()


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """One release of a run whose class names, --name and --override are all hostile (1 ipc)."""
    tmp = tmp_path_factory.mktemp("hostile")
    # the memorisation check resolves 0.05 / 25 images; one label per class of the run
    data = private_data(n=1200, n_test=300, n_classes=len(CLASSES))
    run = fake_run(tmp / "run", data=data, ipc=1, classes=CLASSES)
    out = tmp / "bundle"
    release(
        run,
        DEFAULT,
        out,
        load_private=loader_for(data),
        name=hostile.DATASET_NAME,
        override=hostile.OVERRIDE,
        license_spdx="MIT",
    )
    with np.load(out / "data/distilled.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return out, arrays


def split_card(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


# --- the card: YAML front matter and Markdown body -------------------------------------------------


def test_front_matter_round_trips_every_hostile_string(bundle):
    out, arrays = bundle
    meta, body = split_card((out / "README.md").read_text("utf-8"))
    assert meta["pretty_name"] == hostile.DATASET_NAME
    assert meta["license"] == "mit"  # from --license, not from a class called "license: mit"
    assert set(meta) == {
        "license",
        "pretty_name",
        "task_categories",
        "task_ids",
        "size_categories",
        "annotations_creators",
        "tags",
        "dataset_info",
        "configs",
    }
    label = next(f for f in meta["dataset_info"]["features"] if f["name"] == "label")
    names = label["dtype"]["class_label"]["names"]
    assert [names[str(i)] for i in range(len(names))] == list(CLASSES) == list(arrays["classes"])
    assert meta["configs"][0]["features"] == meta["dataset_info"]["features"]
    # the body starts after the one closing fence: no class name opened a second document
    assert body.lstrip().startswith("# ")


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]

    def handle_data(self, data):
        self.text.append(data)


def test_card_body_renders_every_string_literally(bundle):
    markdown = pytest.importorskip("markdown")
    out, _ = bundle
    _, body = split_card((out / "README.md").read_text("utf-8"))
    rendered = markdown.markdown(body, extensions=["tables"])
    p = _Tags()
    p.feed(rendered)
    assert set(p.tags) <= {
        "h1",
        "h2",
        "h3",
        "p",
        "ul",
        "ol",
        "li",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "strong",
        "em",
        "code",
    }, set(p.tags)
    assert p.attrs == [] or all(k == "style" and tag in ("th", "td") for tag, k, _ in p.attrs), (
        p.attrs
    )
    text = "".join(p.text)
    for c in CLASSES:  # each name shows up as its own literal text (in the class table)
        assert c in text, c
    assert hostile.DATASET_NAME in text and hostile.OVERRIDE in text


def test_md_escape_renders_the_literal_string():
    markdown = pytest.importorskip("markdown")
    for s in (*hostile.HTML_JS, *hostile.MARKDOWN_YAML, *hostile.CSV_FORMULA):
        html = markdown.markdown("x " + md(s) + " y")
        p = _Tags()
        p.feed(html)
        assert p.tags == ["p"] and "".join(p.text) == f"x {s} y", (s, html)


# --- Chromium: nothing executes -------------------------------------------------------------------

_PROBE = (
    "<script>window.addEventListener('load', function () {"
    "document.body.setAttribute('data-title', document.title);"
    "document.body.setAttribute('data-probe', 'ran');});</script>"
)


def _chromium_dom(page: Path, tmp: Path) -> str:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'data-probe="ran"' in proc.stdout, "the probe script did not run:\n" + proc.stdout[:500]
    return proc.stdout


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium at /usr/bin/chromium (.ci/run installs it with "
    "apt-get where it can; `apt-get install -y chromium` here)",
)
def test_nothing_executes_in_chromium(bundle, tmp_path):
    markdown = pytest.importorskip("markdown")
    out, _ = bundle
    _, body = split_card((out / "README.md").read_text("utf-8"))
    card = tmp_path / "card.html"
    card.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>card</title></head><body>"
        + markdown.markdown(body, extensions=["tables"])
        + _PROBE
        + "</body></html>",
        "utf-8",
    )
    dom = _chromium_dom(card, tmp_path)
    assert 'data-title="card"' in dom and 'data-pwned="yes"' not in dom
    assert "<img" not in dom and "<svg" not in dom and "<iframe" not in dom

    report = tmp_path / "report.html"
    report.write_text(
        (out / "report/report.html").read_text("utf-8").replace("</body>", _PROBE + "</body>"),
        "utf-8",
    )
    dom = _chromium_dom(report, tmp_path)
    assert 'data-pwned="yes"' not in dom
    title = re.search(r'data-title="([^"]*)"', dom).group(1)
    assert title != "PWNED" and title.endswith(": release report") and "document.title=" in title, (
        title
    )
    assert len(re.findall(r"<img ", dom)) == 4  # the four figures, nothing injected


# --- CSV, folders, verify --------------------------------------------------------------------------


def test_labels_csv_cells_cannot_start_formulas(bundle):
    out, arrays = bundle
    rows = list(csv.reader(io.StringIO((out / "data/labels.csv").read_text("utf-8"))))
    header, body = rows[0], rows[1:]
    assert [csv_uncell(h) for h in header[3:]] == list(CLASSES)
    for row in [header, *body]:
        for cell in row[:3] + (row[3:] if row is header else []):
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    assert [csv_uncell(r[2]) for r in body] == [CLASSES[i] for i in arrays["labels"].argmax(1)]
    np.testing.assert_array_equal(
        np.array([r[3:] for r in body], dtype=np.float32), arrays["labels"]
    )
    assert (
        csv_cell("-2") == "'-2" and csv_cell("'x") == "''x" and csv_uncell(csv_cell("'=x")) == "'=x"
    )


def test_class_folders_are_distinct_and_recorded(bundle):
    out, arrays = bundle
    dirs = sorted(p.name for p in (out / "data/images").iterdir())
    assert len(dirs) == len(CLASSES) == len({d.casefold() for d in dirs})
    assert all(
        re.fullmatch(r"[\w.-]+", d) and not d.startswith(".") and len(d) <= 64 for d in dirs
    ), dirs
    card = (out / "README.md").read_text("utf-8")
    for d in dirs:
        assert f"data/images/{md(d)}/" in card
    meta = [
        json.loads(line) for line in (out / "data/metadata.jsonl").read_text("utf-8").splitlines()
    ]
    assert [m["index"] for m in meta] == list(range(len(CLASSES)))
    assert {m["file_name"].split("/")[1] for m in meta} == set(dirs)


def test_class_dir_names_never_collide():
    names = class_dir_names(
        ("a" * 70 + "1", "a" * 70 + "2", "Cat", "cat", "a/b", "a_b", ".", "..", "", "x")
    )
    assert len({n.casefold() for n in names}) == len(names)
    assert names[-1] == "x" and names[6] == "class_6" and all(len(n) <= 64 for n in names)
    assert class_dir_names(("zero", "one")) == ("zero", "one")  # plain names stay as they are
    assert all(n.startswith(("CON-", "nul.txt-")) for n in class_dir_names(("CON", "nul.txt")))


def test_hostile_bundle_verifies_apart_from_the_escaped_csv_header(bundle):
    problems = verify_bundle(bundle[0])
    assert set(problems) <= {"data/labels.csv: soft labels differ from data/distilled.npz"}, (
        problems
    )


def test_hostile_bundle_verifies(bundle):
    assert verify_bundle(bundle[0]) == []


# --- the ecosystem: datasets and mlcroissant -------------------------------------------------------


def test_datasets_loads_label_ids_and_soft_labels(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # read when datasets is first imported
    datasets = pytest.importorskip("datasets")
    out, arrays = bundle
    want = arrays["labels"].argmax(1)
    ds = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "c1"))
    assert ds.features["label"].names == list(CLASSES)
    assert ds.features["label"].num_classes == len(CLASSES)
    assert ds.num_rows == len(want)
    for row in ds:
        i = row["index"]
        assert row["label"] == want[i]
        np.testing.assert_array_equal(np.array(row["soft_label"], np.float32), arrays["labels"][i])
        np.testing.assert_array_equal(
            np.asarray(row["image"]), np.round(arrays["images"][i, ..., 0] * 255)
        )
    plain = datasets.load_dataset(
        "imagefolder", data_dir=str(out / "data"), split="train", cache_dir=str(tmp_path / "c2")
    )
    assert sorted(zip(plain["index"], plain["label"], strict=True)) == list(
        enumerate(want.tolist())
    )


def test_croissant_validates_without_warnings_and_reads_images_and_soft_labels(bundle, caplog):
    mlc = pytest.importorskip("mlcroissant")
    out, arrays = bundle
    with caplog.at_level(logging.WARNING):
        ds = mlc.Dataset(jsonld=str(out / "croissant.json"))
    assert not ds.metadata.ctx.issues.errors and not ds.metadata.ctx.issues.warnings, (
        ds.metadata.ctx.issues.report()
    )
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    names = {r["classes/id"]: r["classes/name"] for r in ds.records("classes")}
    names = {k: v.decode() if isinstance(v, bytes) else v for k, v in names.items()}
    assert [names[k] for k in range(len(names))] == list(CLASSES)
    seen = []
    for rec in ds.records("images"):
        i = rec["images/index"]
        px = np.asarray(rec["images/image"].convert("L"))
        np.testing.assert_array_equal(px, np.round(arrays["images"][i, ..., 0] * 255))
        np.testing.assert_array_equal(
            np.array(rec["images/soft_label"], np.float32), arrays["labels"][i]
        )
        assert rec["images/label"] == arrays["labels"][i].argmax()
        seen.append(i)
    assert sorted(seen) == list(range(len(CLASSES)))


# --- refused input: control characters -------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    data = private_data()
    monkeypatch.setattr(safety, "default_loader", loader_for(data))
    return tmp_path, data


def _cli(args):
    return CliRunner().invoke(app, ["release", *map(str, args)])


@pytest.mark.parametrize("bad", hostile.CONTROL)
def test_control_character_in_a_class_name_is_refused(cli_env, bad):
    tmp, data = cli_env
    run = fake_run(tmp / "run", data=data, classes=("ok", bad, "fine"))
    before = tree(tmp)
    res = _cli([run, "--policy", DEFAULT, "--out", tmp / "out" / "b"])
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and "Traceback" not in res.output
    assert "class name 1" in res.output and "control character (U+" in res.output
    assert bad not in res.output
    assert tree(tmp) == before  # nothing written, not even the parent of --out


@pytest.mark.parametrize("option", ["--name", "--override"])
@pytest.mark.parametrize("bad", [b for b in hostile.CONTROL if "\x00" not in b])
def test_control_character_in_name_or_override_is_refused(cli_env, option, bad):
    tmp, data = cli_env
    run = fake_run(tmp / "run", data=data)
    before = tree(tmp)
    res = _cli([run, "--policy", DEFAULT, "--out", tmp / "out" / "b", option, bad])
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and option in res.output and bad not in res.output
    assert tree(tmp) == before


def test_nul_in_name_is_refused_by_the_library(cli_env):
    tmp, data = cli_env
    run = fake_run(tmp / "run", data=data)
    with pytest.raises(InputError, match=r"--name contains a control character \(U\+0000\)"):
        release(run, DEFAULT, tmp / "b", load_private=loader_for(data), name="a\x00b")
    assert not (tmp / "b").exists()


def test_error_messages_are_not_rich_markup(cli_env):
    tmp, _ = cli_env
    res = _cli(
        [tmp / "nope", "--policy", DEFAULT, "--out", tmp / "b", "--license", "[red]x[/red] :smile:"]
    )
    assert (
        res.exit_code == 2
        and "'[red]x[/red] :smile:'" in res.output
        and res.output.count("\n") == 1
    )


# --- the leak scan ---------------------------------------------------------------------------------


@pytest.fixture
def machine(monkeypatch):
    """Pretend this machine is user ``alice`` on host ``vm`` (fqdn vm.corp.example)."""
    monkeypatch.setattr(
        redact, "_names", lambda: (("alice",), ("vm.corp.example", "vm"), "/home/alice")
    )
    redact._leak_patterns.cache_clear()
    yield
    redact._leak_patterns.cache_clear()


@pytest.mark.parametrize(
    "text",
    [
        "class vm and class alice",  # bare words: a class or dataset name
        "Classes: root, vm, alice.",
        "data/images/vm/0.png and data/images/alice/1.png",
        '<img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgvmAAAvm/home/alice/vm@xx==">',
        "released by the vm team; alice approved",
        "a.vm.b",
    ],
)
def test_leak_scan_ignores_bare_names_and_image_payloads(machine, text):
    assert redact.find_leaks(text) == []


@pytest.mark.parametrize(
    "text, what",
    [
        ("see /home/alice/project", "absolute path"),
        ("cd ~/secret", "absolute path"),
        ("from /root/run", "absolute path"),
        ("home is /home/alice", "home directory"),
        ("mail alice@example.org", "user name"),
        ("ssh bob@vm", "host name"),
        ("copied from //vm/share", "host name"),
        ("rsync vm:/data", "host name"),
        ("hostname: vm", "host name"),
        ('"user": "alice"', "user name"),
        ("node vm.corp.example is up", "host name"),
        ("~alice/x", "user name"),
    ],
)
def test_leak_scan_refuses_what_identifies_the_machine(machine, text, what):
    leaks = redact.find_leaks(text)
    assert leaks and any(what in leak for leak in leaks), leaks


def test_names_equal_to_user_and_host_are_released(tmp_path):
    """The real user and host names as class names and --name are written as given."""
    classes = tuple(dict.fromkeys((hostile.USER, hostile.HOST, "root", "vm")))
    data = private_data(n_classes=len(classes))  # the audit records' labels are among the classes
    run = fake_run(tmp_path / "run", data=data, classes=classes)
    out = tmp_path / "b"
    release(
        run,
        DEFAULT,
        out,
        load_private=loader_for(data),
        name=hostile.HOST,
        override=f"checked by {hostile.USER}",
    )
    meta, body = split_card((out / "README.md").read_text("utf-8"))
    assert meta["pretty_name"] == hostile.HOST and "<redacted>" not in body
    assert json.loads((out / "policy/verdict.json").read_text())["override"] == {
        "reason": f"checked by {hostile.USER}"
    }


def test_a_leak_is_refused_with_file_and_match(cli_env):
    tmp, data = cli_env
    run = fake_run(tmp / "run", data=data)
    home = os.path.expanduser("~")
    res = _cli(
        [run, "--policy", DEFAULT, "--out", tmp / "b", "--override", f"see {home}/notes.txt"]
    )
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "refusing to write README.md" in res.output and f"{home}/notes.txt" in res.output
    assert not (tmp / "b").exists()


# --- figures and numbers ---------------------------------------------------------------------------


def test_small_numbers_are_readable():
    assert (
        fmt(3e-4) == "3.0e-04"
        and fmt(0.0) == "0.000"
        and fmt(0.0123) == "0.012"
        and fmt(-2e-5) == "-2.0e-05"
    )


def test_grid_labels_are_drawable_and_distinct():
    font, covered = _label_font()
    assert drawable_name("猫 🐶 T-shirt", covered) == "\\u732b \\U0001f436 T-shirt"
    labels = []
    for i, name in enumerate(hostile.LONG):
        lines = label_lines(
            f"{i}: {drawable_name(name, covered)}", 142, font.getlength, max_lines=4
        )
        assert all(font.getlength(line) <= 142 for line in lines) and len(lines) <= 4
        labels.append("".join(lines))
    assert labels[0] != labels[1] and labels[0].startswith("0: ") and labels[1].endswith("2")
    png = grid_png(np.zeros((3, 8, 8, 1), np.float32), ("猫", *hostile.LONG), np.arange(3))
    assert Image.open(io.BytesIO(png)).size[1] == 3 * 60 + 4


def test_report_embeds_only_figures(bundle):
    html = (bundle[0] / "report/report.html").read_text("utf-8")
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) == 4 and all(base64.b64decode(u)[:8] == b"\x89PNG\r\n\x1a\n" for u in uris)
