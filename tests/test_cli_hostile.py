"""Hostile input at the command line (issue #15, items 4 and 6): size claims checked before
allocation, --out inside the data, symlinks, rich markup in names; and what a user sees
(--version, every default in --help, progress, the README's commands).

Every refusal: its exit code, exactly one line on stderr, no traceback, nothing written."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from rich.console import Console
from rich.text import Text
from typer.testing import CliRunner

from rcig_release import __version__
from rcig_release.cli.main import app

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers


def npy_header(shape, descr="|u1") -> bytes:
    """A version 1.0 .npy header written by hand: magic, length, padded dict (no data after)."""
    d = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    d += " " * (63 - (10 + len(d)) % 64) + "\n"
    assert (10 + len(d)) % 64 == 0
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d.encode("latin1")


def claiming_npz(path: Path, **members: tuple) -> Path:
    """A tiny .npz whose array headers claim ``members[name] = shape`` (uint8), with no data."""
    with zipfile.ZipFile(path, "w") as z:
        for name, shape in members.items():
            z.writestr(f"{name}.npy", npy_header(shape))
    return path


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR says ``width`` × ``height`` (1-bit grey) over a few bytes of IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 8))
        + chunk(b"IEND", b"")
    )


def image_folder(root: Path, classes=("a", "b"), n=4) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((6, 6), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    return root


def tiny_npz(path: Path, classes=None) -> Path:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (24, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(3), 8)
    extra = {} if classes is None else {"classes": np.array(classes)}
    np.savez(path, x=x, y=y, **extra)
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root (symlinks not followed) with a digest of its bytes."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + str(p.readlink())
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def invoke(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def assert_refused(r, code: int, *expect: str) -> str:
    """Exit ``code``, exactly one line on stderr starting with ``error:``, no traceback (after
    the command's device line, when it got as far as loading JAX: at most one, and first)."""
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = r.stderr.splitlines()
    if lines and lines[0].startswith("device: JAX "):
        lines = lines[1:]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in r.output
    for e in expect:
        assert e in lines[0], (e, lines[0])
    return lines[0]


DISTILL = ("distill", "--preset", "cpu", "--steps", "0", "--quiet")


# --------------------------------------------------------------------------- sizes before allocation


def test_npz_claiming_1e12_images_is_refused_by_distill(tmp_path):
    big = claiming_npz(tmp_path / "big.npz", x=(10**12, 28, 28), y=(10**12,))
    assert big.stat().st_size < 1000
    before = snapshot(tmp_path)
    r = invoke(*DISTILL, "--data", big, "--out", tmp_path / "out")
    line = assert_refused(
        r,
        2,
        "big.npz is too large",
        "cap of 4.0 GiB",
        "RCIG_RELEASE_MAX_BYTES",
        "1000000000000×28×28",
    )
    assert "MemoryError" not in line
    assert snapshot(tmp_path) == before  # --out not created, nothing else written


def test_byte_cap_is_adjustable_by_environment(tmp_path):
    data = tiny_npz(tmp_path / "d.npz")
    r = invoke(
        *DISTILL, "--data", data, "--out", tmp_path / "out", env={"RCIG_RELEASE_MAX_BYTES": "1000"}
    )
    assert_refused(r, 2, "d.npz is too large", "cap of 1000 bytes", "RCIG_RELEASE_MAX_BYTES")
    assert not (tmp_path / "out").exists()
    r = invoke(
        *DISTILL,
        "--data",
        data,
        "--out",
        tmp_path / "out",
        env={"RCIG_RELEASE_MAX_BYTES": "nonsense"},
    )
    assert_refused(r, 2, "RCIG_RELEASE_MAX_BYTES must be a positive integer")


def test_verify_refuses_a_bundle_whose_npz_claims_1e12_images(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "data").mkdir(parents=True)
    claiming_npz(bundle / "data" / "distilled.npz", images=(10**12, 8, 8, 1), labels=(10**12, 10))
    before = snapshot(tmp_path)
    r = invoke("verify", bundle)
    assert_refused(r, 2, "data/distilled.npz is too large", "RCIG_RELEASE_MAX_BYTES")
    assert snapshot(tmp_path) == before


def test_run_npz_claiming_1e12_images_is_refused_by_release_inputs(tmp_path):
    from rcig_release.errors import InputError
    from rcig_release.release.inputs import load_npz
    from rcig_release.rundir import load_run

    data = claiming_npz(tmp_path / "distilled.npz", images=(10**12, 8, 8, 1)).read_bytes()
    with pytest.raises(InputError, match="too large"):
        load_npz(data, "RUN/distilled.npz")
    run = tmp_path / "run"
    run.mkdir()
    (run / "distilled.npz").write_bytes(data)
    (run / "run.json").write_text('{"config": {}}')
    with pytest.raises(InputError, match="too large"):
        load_run(run)


@pytest.mark.parametrize("size", [(20000, 20000), (2**31 - 1, 2**31 - 1)])
def test_oversized_png_is_too_large_not_corrupt(tmp_path, size):
    root = image_folder(tmp_path / "imgs")
    (root / "b" / "huge.png").write_bytes(png_claiming(*size))
    before = snapshot(tmp_path)
    r = invoke(*DISTILL, "--data", root, "--out", tmp_path / "out")
    line = assert_refused(
        r,
        2,
        "image b/huge.png is too large",
        f"{size[0]}x{size[1]}",
        "cap of 16,777,216 pixels",
        "RCIG_RELEASE_MAX_PIXELS",
    )
    assert "corrupt" not in line
    assert snapshot(tmp_path) == before


def test_pixel_cap_is_adjustable_by_environment(tmp_path):
    root = image_folder(tmp_path / "imgs")
    r = invoke(
        *DISTILL, "--data", root, "--out", tmp_path / "out", env={"RCIG_RELEASE_MAX_PIXELS": "35"}
    )  # the images are 6x6 = 36 pixels
    assert_refused(r, 2, "is too large: 6x6 = 36 pixels", "cap of 35 pixels")
    (root / "b" / "huge.png").write_bytes(png_claiming(20000, 20000))
    r = invoke(
        *DISTILL,
        "--data",
        root,
        "--out",
        tmp_path / "out",
        env={"RCIG_RELEASE_MAX_PIXELS": str(10**9)},
    )  # past the pixel cap: the next check
    assert_refused(r, 2, "images of different sizes")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- --out and symlinks


@pytest.mark.parametrize("where", ["inside", "same", "class", "parent_of_npz", "npz_itself"])
def test_out_inside_or_around_the_data_is_refused(tmp_path, where):
    root = image_folder(tmp_path / "imgs")
    data, out = root, root / "runs" / "r"
    if where == "same":
        out = root
    elif where == "class":
        out = root / "a" / ".." / "c"  # would become a third class
    elif where in ("parent_of_npz", "npz_itself"):
        (tmp_path / "sub").mkdir()
        data = tiny_npz(tmp_path / "sub" / "d.npz")
        out = tmp_path / "sub" if where == "parent_of_npz" else data
    before = snapshot(tmp_path)
    r = invoke(*DISTILL, "--data", data, "--out", out, "--force")  # --force would move it aside
    line = assert_refused(r, 2, f"--out {out} ")
    assert any(
        s in line
        for s in (
            "inside the data folder",
            "is the data file itself",
            "is the data folder itself",
            "contains the data",
        )
    )
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["file_outside", "file_inside", "class_dir", "train_dir"])
def test_symlinks_in_an_image_folder_are_refused(tmp_path, kind):
    root = image_folder(tmp_path / "imgs")
    secret = tmp_path / "secret"
    image_folder(secret, classes=("z",))
    if kind == "file_outside":
        (root / "a" / "x.png").symlink_to(secret / "z" / "0.png")
        rel = "a/x.png"
    elif kind == "file_inside":
        (root / "a" / "x.png").symlink_to(root / "b" / "0.png")
        rel = "a/x.png"
    elif kind == "class_dir":
        (root / "c").symlink_to(secret / "z")
        rel = "c"
    else:
        split = tmp_path / "split"
        image_folder(split / "test")
        (split / "train").symlink_to(secret)
        root, rel = split, "train"
    before = snapshot(tmp_path)
    r = invoke(*DISTILL, "--data", root, "--out", tmp_path / "out")
    assert_refused(r, 2, f"symlink in the image folder: {rel}")
    assert snapshot(tmp_path) == before


def test_the_image_folder_itself_may_be_a_symlink(tmp_path):
    from rcig_release.data import load_dataset

    root = image_folder(tmp_path / "imgs")
    (tmp_path / "link").symlink_to(root)
    assert load_dataset(str(tmp_path / "link")).classes == ("a", "b")


# --------------------------------------------------------------------------- rich markup


def test_markup_in_out_path_prints_literally_after_a_run(tmp_path):
    data = tiny_npz(tmp_path / "d.npz", classes=["$\\frac$", "[/]", "c"])  # mathtext in preview
    out = tmp_path / "runs" / "[/x]" / "[bold]r"
    # 6 training images a class: fewer than the default centroids' 10 records each
    r = invoke(
        "distill",
        "--preset",
        "cpu",
        "--steps",
        "0",
        "--init",
        "noise",
        "--data",
        data,
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    # printed literally, no MarkupError; rich wraps long lines at the terminal width (at a space
    # or inside the path), so compare with all whitespace removed
    assert "".join(f"done: {out} (".split()) in "".join(r.stderr.split())
    assert (out / "distilled.npz").is_file()
    again = invoke(*DISTILL, "--data", data, "--out", out)  # now non-empty: refused, literally
    assert_refused(again, 2, f"--out {out} exists and is not empty")


def test_markup_in_a_class_name_or_data_path_prints_literally(tmp_path):
    data = tiny_npz(tmp_path / "d.npz", classes=["[bold]x[/]", "[/]", "c"])
    r = invoke(*DISTILL, "--data", data, "--ipc", 9, "--out", tmp_path / "out")
    assert_refused(r, 2, "class 0 ('[bold]x[/]') has 6 training image(s), fewer than --ipc 9")
    missing = tmp_path / "[red]d[/]" / "e.npz"
    r = invoke(*DISTILL, "--data", missing, "--out", tmp_path / "out")
    assert_refused(r, 2, f"data file not found: {missing}")
    assert not (tmp_path / "out").exists()


def test_markup_in_release_and_verify_paths_prints_literally(tmp_path):
    run = tmp_path / "[/x]" / "[red]run"
    policy = REPO / "policies" / "default.toml"
    r = invoke("release", run, "--policy", policy, "--out", tmp_path / "[/b]" / "out")
    assert_refused(r, 2, "run directory not found: [red]run")
    assert not (tmp_path / "[/b]").exists()
    bundle = tmp_path / "[red]"
    r = invoke("verify", bundle)
    assert_refused(r, 2, "bundle directory not found: [red]")


# --------------------------------------------------------------------------- what a user sees


def test_version():
    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"rcig-release {__version__}"


def _options():
    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        for p in cmd.params:
            if p.param_type_name == "option" and p.name != "help":
                yield name, p


def test_help_shows_every_default_and_help_text_has_no_live_markup():
    for cmd, p in _options():
        help_text = p.help or ""
        shown = p.default is not None and not (p.is_flag and not p.secondary_opts)
        assert p.required or shown or "default" in help_text, (cmd, p.name)
        # brackets are escaped: rendering the markup drops nothing
        assert Text.from_markup(help_text).plain == help_text.replace("\\[", "["), (cmd, p.name)
    r = invoke("distill", "--help")
    assert r.exit_code == 0
    flat = re.sub(r"[\s│]+", " ", r.stdout)
    for text in (
        "[default: runs/<data>-ipc<ipc>]",
        "[default: digits]",
        "[default: centroids]",
        "[default: 1]",
        "[default: cpu without a GPU, else paper]",
    ):
        assert text in flat, text


def test_audit_progress_bars_name_stage_count_and_eta():
    from rcig_release.cli.progress import stage_progress

    buf = io.StringIO()
    console = Console(file=buf, width=120, force_terminal=False)
    with stage_progress(console) as progress:
        progress("targets", 0, 1)
        for i in range(17):
            progress("release", i, 16)
        progress("naive", 3, 16)
        progress("attacks", 1, 2)
        progress("done", 1, 1)
    text = buf.getvalue()
    for expect in (
        "target networks",
        "1/1",
        "shadow pipelines (release)",
        "16/16",
        "shadow pipelines (naive)",
        "16/16",
        "attacks",
        "2/2",
        "ETA",
    ):
        assert expect in text, (expect, text)
    with stage_progress(console, enabled=False) as progress:
        assert progress is None


def test_audit_command_draws_the_bars(tmp_path, monkeypatch):
    import rcig_release.audits.runner as runner
    from rcig_release.errors import InputError

    calls = []

    def fake_run_audit(run, cfg, *, progress=None, **kw):
        calls.append(progress)
        if progress is not None:
            progress("release", 3, 16)
        raise InputError("stop here")

    monkeypatch.setattr(runner, "run_audit", fake_run_audit)
    for name in ("distilled.npz", "run.json"):  # what the command's path checks look for
        (tmp_path / name).write_bytes(b"")
    r = invoke("audit", tmp_path)
    assert r.exit_code == 2 and callable(calls[-1])
    assert "shadow pipelines (release)" in r.stderr and "3/16" in r.stderr
    for flag in ("--quiet", "--json"):
        assert_refused(invoke("audit", tmp_path, flag), 2, "stop here")
        assert calls[-1] is None


def test_distill_names_its_setup_phases(tmp_path):
    from rcig_release.config import make_distill_config
    from rcig_release.distill import distill

    cfg = make_distill_config(
        "cpu",
        {
            "width": 2,
            "depth": 1,
            "pool_size": 1,
            "pool_max_steps": 1,
            "real_batch": 8,
            "tune_max_trials": 2,
        },
        steps=1,
        ipc=1,
        init="noise",  # 4 images a class: fewer than the default centroids' 10 records each
    )
    x = np.random.default_rng(0).standard_normal((12, 4, 4, 1)).astype(np.float32)
    seen: list[str] = []
    steps: list[int] = []
    distill(
        cfg,
        x,
        np.repeat(np.arange(3), 4),
        3,
        phase=seen.append,
        progress=lambda t, total, last: steps.append(t),
    )
    assert seen == ["setting up the model", "learning-rate search", "compiling the step"]
    assert steps == [1]


def test_distill_command_shows_the_phase_not_0_of_unknown(tmp_path, monkeypatch):
    import rcig_release.pipeline as pipeline
    from rcig_release.errors import InputError

    def fake_distill_run(out, data, cfg, *, phase=None, progress=None, **kw):
        phase("loading data")
        phase("learning-rate search")
        raise InputError("stop here")

    monkeypatch.setattr(pipeline, "distill_run", fake_distill_run)
    r = invoke("distill", "--preset", "cpu", "--out", tmp_path / "out")
    assert r.exit_code == 2
    assert "learning-rate search" in r.stderr and "0/?" not in r.stderr
    assert r.stderr.splitlines()[-1] == "error: stop here"
    # the first line names the device JAX computes on
    import jax

    first = r.stderr.splitlines()[0]
    assert first.startswith(f"device: JAX {jax.default_backend()} backend, ")
    assert jax.devices()[0].device_kind in first


@pytest.mark.parametrize(
    "args,expect",
    [
        (["distill", "--ipc", "abc"], "Invalid value for '--ipc'"),
        (["distill", "--bogus"], "No such option: --bogus"),
        (["verify"], "Missing argument"),
        (["no-such-command"], "No such command"),
    ],
)
def test_usage_errors_are_one_line_exit_2(tmp_path, args, expect):
    before = snapshot(tmp_path)
    assert_refused(invoke(*args), 2, expect, "--help)")
    assert snapshot(tmp_path) == before
