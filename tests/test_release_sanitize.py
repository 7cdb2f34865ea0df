"""The one sanitising function per sink, the name rules, the folder names, the parsing caps and the
size checks of issue 22, each shown failing in the variant it replaces."""

import io
import json
import re
import time

import numpy as np
import pytest
import yaml
from markdown_it import MarkdownIt
from rich.console import Console
from rich.text import Text

from rcig_release import limits, safeio
from rcig_release.config import check_image_side, min_image_side
from rcig_release.data.preprocess import check_zca_size, fit_preprocessor, zca_bytes
from rcig_release.errors import InputError
from rcig_release.release.derived import class_dir_names
from rcig_release.release.documents import front_matter
from rcig_release.release.escape import (
    SINKS,
    check_class_names,
    control_char,
    md,
    sanitize,
    terminal,
)

# --- terminal ----------------------------------------------------------------------------------

RAW = {
    "esc": "\x1b[32mbundle intact\x1b[0m",
    "csi": "\x9b31m",
    "nel": "a\x85b",
    "rlo": "a\u202eb",
    "isolate": "a\u2066b",
    "rlm": "a\u200fb",
    "bom": "\ufeffa",
    "tag": "a\U000e0041",
    "bell": "a\x07",
    "cr": "a\rb",
    "del": "a\x7f",
}


def _printed(text: str) -> str:
    buf = io.StringIO()
    Console(file=buf, force_terminal=False, color_system=None, soft_wrap=True).print(Text(text))
    return buf.getvalue()


@pytest.mark.parametrize("name", list(RAW))
def test_terminal_escapes_every_control_and_the_unsanitised_path_does_not(name):
    raw = RAW[name]
    out = _printed(sanitize(raw, "terminal"))
    assert control_char(out.rstrip("\n")) is None, repr(out)
    assert terminal("plain text: ok [x] 猫") == "plain text: ok [x] 猫"
    # the broken variant, rich's Text alone, lets the worst of them through raw
    if name in ("esc", "rlo", "rlm", "bom", "tag", "csi", "nel"):
        assert control_char(_printed(raw).rstrip("\n")) is not None


def test_terminal_escape_is_unambiguous():
    assert terminal("\\x1b") != terminal("\x1b")


# --- markdown ------------------------------------------------------------------------------------

GFM = MarkdownIt("commonmark").enable("strikethrough").enable("table")


@pytest.mark.parametrize(
    "s",
    ["~~gone~~", "a ~~b~~ c", "see http://evil.example/x", "www.evil.example", "me@evil.example"],
)
def test_markdown_has_no_strikethrough_or_autolink(s):
    html = GFM.render(md(s))
    assert "<s>" not in html and "<del>" not in html and "<a " not in html
    # GFM's extended autolinks start at "://", "www." and "@": none survives as text the
    # autolinker reads (it sees entities, not the characters)
    assert "://" not in md(s) and "www." not in md(s).lower() and "@" not in md(s)
    if "~~" in s:  # the broken variant: backslash-free text renders a strikethrough
        assert "<s>" in GFM.render(s)
    # python-markdown renders the literal text
    import markdown

    text = re.sub(r"<[^>]+>", "", markdown.markdown(md(s)))
    import html as htmlmod

    assert htmlmod.unescape(text).strip() == s


# --- yaml ------------------------------------------------------------------------------------------

YAML12_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
YAML12_BOOL_NULL = {"true", "false", "null", "~", "True", "False", "Null", "NULL", "TRUE", "FALSE"}


@pytest.mark.parametrize("name", ["1e3", "1E-5", "no", "null", "0x10", "0o17", "true", ".inf", "~"])
def test_yaml_front_matter_quotes_every_string(name):
    text = front_matter({"class_names": [name], "pretty_name": name})
    assert f'- "{name}"' in text and f'pretty_name: "{name}"' in text
    assert yaml.safe_load(text.strip("-\n")) == {"class_names": [name], "pretty_name": name}
    assert sanitize(name, "yaml") == f'"{name}"'


def test_unquoted_yaml_reads_1e3_as_a_number_in_yaml_1_2():
    """The broken variant: PyYAML (YAML 1.1) writes 1e3 plain, which a YAML 1.2 reader (the
    Hub's) resolves as the float 1000."""
    plain = yaml.safe_dump({"class_names": ["1e3"]})
    scalar = plain.split("- ")[1].strip()
    assert YAML12_FLOAT.match(scalar)


def test_every_sink_is_one_function():
    s = '=1+1 <b>"x"</b> ~~y~~ \x1b'
    out = {sink: sanitize(s, sink) for sink in SINKS}
    assert out["csv"].startswith("'=")
    assert "<b>" not in out["html"] and "&lt;b&gt;" in out["html"]
    assert "\x1b" not in out["terminal"] and "\x1b" not in out["yaml"]
    assert "~~" not in out["markdown"]
    with pytest.raises(ValueError):
        sanitize(s, "latex")


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["a\u200f", "\ufeffa", "a\U000e0041", "a\u200b", "a\u2060", "a\u00ad", "a\x1b", "a\ud800"],
)
def test_invisible_format_characters_are_refused(bad):
    with pytest.raises(InputError, match=r"U\+"):
        check_class_names(["ok", bad], "data")


@pytest.mark.parametrize("ok", ["👨\u200d👩\u200d👧", "می\u200cخواهم", "猫", "T-shirt/top"])
def test_joiners_scripts_and_emoji_pass(ok):
    assert check_class_names(["x", ok], "data") == ("x", ok)


@pytest.mark.parametrize(
    "names, match",
    [
        (["only"], "at least 2"),
        (["a", "a"], "distinct"),
        (["a", " "], "empty"),
        (["a", "b" * 1001], "characters"),
    ],
)
def test_class_name_rules(names, match):
    with pytest.raises(InputError, match=match):
        check_class_names(names, "data")


# --- class folders -------------------------------------------------------------------------------


def _old_class_dir_names(classes):
    """The version before issue 22 (a third pass with the class id, then nothing)."""
    import hashlib
    import unicodedata

    def digest(c):
        return hashlib.sha256(c.encode()).hexdigest()[:8]

    names = []
    for i, c in enumerate(classes):
        s = re.sub(r"[^\w.-]+", "_", unicodedata.normalize("NFKC", c)).strip("._-") or f"class_{i}"
        names.append(f"{s[:48]}-{digest(c)}" if len(s) > 48 else s)
    folded = [n.casefold() for n in names]
    names = [
        f"{n}-{digest(c)}" if folded.count(f) > 1 else n
        for n, f, c in zip(names, folded, classes, strict=True)
    ]
    folded = [n.casefold() for n in names]
    return tuple(
        f"{n}-{i}" if folded.count(f) > 1 else n
        for i, (n, f) in enumerate(zip(names, folded, strict=True))
    )


def _colliding() -> tuple[str, ...]:
    """Four names built so that the old naming gives two classes one folder."""
    import hashlib

    def digest(c):
        return hashlib.sha256(c.encode()).hexdigest()[:8]

    a, b = "Cat", "cat"
    c = f"cat-{digest(b)}"  # equals b's suffixed folder
    # b and c now both get "-<id>": b at id 1 → "cat-<d>-1"; a name equal to that collides again
    d = f"cat-{digest(b)}-1"
    return (a, b, c, d)


def test_class_folders_are_unique_by_construction():
    names = _colliding()
    old = _old_class_dir_names(names)
    assert len({n.casefold() for n in old}) < len(names)  # the old naming merged two classes
    new = class_dir_names(names)
    assert len({n.casefold() for n in new}) == len(names), new
    rng = np.random.default_rng(0)
    for _ in range(50):  # random small alphabets: many collisions, never a shared folder
        pool = ["a", "A", "a-1", "a_1", "a 1", "con", "CON", "nul.txt", ".", "..", "a-2"]
        names = tuple(dict.fromkeys(rng.choice(pool, size=8)))
        assert len({n.casefold() for n in class_dir_names(names)}) == len(names)


def test_class_folder_naming_is_linear():
    names = tuple(f"c{i % 5000}" if i < 5000 else f"C{i - 5000}" for i in range(100_000))
    t0 = time.perf_counter()
    dirs = class_dir_names(names)
    assert time.perf_counter() - t0 < 10
    assert len({d.casefold() for d in dirs}) == len(names)


# --- parsing caps --------------------------------------------------------------------------------


def test_json_depth_is_counted_outside_strings():
    assert safeio.json_depth('{"a": "[[[[[[", "b": [[1]]}') == 3
    assert safeio.json_depth('"\\"[[["') == 0


@pytest.mark.parametrize(
    "text, match",
    [
        ("[" * 65 + "]" * 65, "nested"),
        ("[" * 100_000 + "]" * 100_000, "nested"),
        ('{"n": ' + "9" * 101 + "}", "digits"),
        ('{"n": NaN}', "NaN"),
        ('{"n": 1', "not valid JSON"),
    ],
)
def test_loads_json_refuses_with_one_input_error(text, match):
    with pytest.raises(InputError, match=match):
        safeio.loads_json(text, "x.json")


def test_loads_json_accepts_the_limits():
    assert safeio.loads_json("[" * 64 + "]" * 64, "x") is not None
    assert safeio.loads_json('{"n": ' + "9" * 100 + "}", "x")["n"] == int("9" * 100)


def test_plain_json_fails_where_loads_json_does_not():
    """The broken variants: json.loads raises RecursionError and ValueError (not JSONDecodeError)."""
    with pytest.raises(RecursionError):
        json.loads("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError) as e:
        json.loads('{"n": ' + "9" * 5000 + "}")
    assert not isinstance(e.value, json.JSONDecodeError)


@pytest.mark.parametrize(
    "text",
    [
        "x = " + "[" * 5000 + "]" * 5000,
        "x = " + "9" * 5000,
        "x = " + "{a = " * 100 + "1" + "}" * 100,
    ],
)
def test_loads_toml_refuses_with_one_input_error(text):
    with pytest.raises(InputError):
        safeio.loads_toml(text, "c.toml")


def test_read_file_checks_lstat_before_reading(tmp_path):
    f = tmp_path / "big"
    with open(f, "wb") as fh:
        fh.truncate(4 * 2**30)  # sparse
    with pytest.raises(InputError, match=limits.MAX_FILE_BYTES_ENV):
        safeio.read_file(f, "big")
    (tmp_path / "link").symlink_to(f)
    with pytest.raises(InputError, match="symlink"):
        safeio.read_file(tmp_path / "link", "link")


# --- ZCA and the network's minimum side -----------------------------------------------------------


def test_zca_size_is_refused_before_allocating():
    assert zca_bytes((128, 128, 3)) > 18 * 2**30
    with pytest.raises(InputError, match=limits.MAX_BYTES_ENV):
        check_zca_size((128, 128, 3))
    check_zca_size((32, 32, 3))  # CIFAR passes
    x = np.zeros((2, 128, 128, 3), np.float32)
    with pytest.raises(InputError, match="--no-zca"):
        fit_preprocessor(x, zca=True)


def test_zca_cap_follows_the_variable(monkeypatch):
    monkeypatch.setenv(limits.MAX_BYTES_ENV, "1M")
    with pytest.raises(InputError):
        check_zca_size((16, 16, 1))


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_minimum_side_is_what_the_convnet_needs(depth):
    """Below 2^depth the ConvNet's feature map is empty; at 2^depth it is not (shapes only)."""
    import jax
    import jax.numpy as jnp

    from rcig_release.models import ConvNet

    need = min_image_side("convnet", depth)
    net = ConvNet(num_classes=2, width=4, depth=depth)

    def features(side):
        x = jax.ShapeDtypeStruct((1, side, side, 1), jnp.float32)
        params = jax.eval_shape(net.init, jax.random.PRNGKey(0), x)
        return jax.eval_shape(net.apply, params, x)[1].shape[-1]

    assert features(need) > 0
    try:
        below = features(need - 1)
    except Exception:  # noqa: BLE001 - a shape error is the failure being shown
        below = 0
    assert below == 0  # an empty feature map: nothing to classify
    check_image_side((need, need, 1), "convnet", depth, "x")
    with pytest.raises(InputError, match=f"at least {need} pixels"):
        check_image_side((need - 1, need, 1), "convnet", depth, "x")


# --- the catch-all at each command's edge ----------------------------------------------------------


@pytest.mark.parametrize(
    "exc, code, text",
    [
        (RecursionError("deep"), 2, "nested too deeply (RecursionError)"),
        (ValueError("Exceeds the limit (4300 digits)"), 2, "cannot be processed"),
        (MemoryError(), 2, "more memory"),
        (KeyError("secret-class-name"), 1, "bundle not intact: it cannot be checked (KeyError)"),
        (ZeroDivisionError(), 1, "it cannot be checked (ZeroDivisionError)"),
    ],
)
def test_verify_edge_turns_any_exception_into_one_line(tmp_path, monkeypatch, exc, code, text):
    from typer.testing import CliRunner

    from rcig_release.cli.main import app
    from rcig_release.release import verify

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(verify, "verify_bundle", boom)
    r = CliRunner().invoke(app, ["verify", str(tmp_path)])
    assert r.exit_code == code and text in r.output, r.output
    assert r.output.count("\n") == 1 and "Traceback" not in r.output
    assert "secret-class-name" not in r.output  # only the type: a message could hold data
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_other_commands_call_an_unexpected_exception_a_bug(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rcig_release import pipeline
    from rcig_release.cli.main import app

    def boom(*a, **k):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(pipeline, "distill_run", boom)
    r = CliRunner().invoke(
        app, ["distill", "--preset", "cpu", "--quiet", "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 1 and "unexpected ZeroDivisionError; this is a bug" in r.output
    assert "Traceback" not in r.output


def test_without_the_catch_all_the_exception_escapes(tmp_path, monkeypatch):
    """The broken variant: the library-error handler alone lets a KeyError through."""
    import functools

    import typer
    from typer.testing import CliRunner

    from rcig_release.errors import RcigReleaseError

    def old_handle_errors(fn):
        @functools.wraps(fn)
        def wrapper(*a, **k):
            try:
                return fn(*a, **k)
            except RcigReleaseError as e:
                raise typer.Exit(e.exit_code) from None

        return wrapper

    def command() -> None:
        raise KeyError("x")

    app = typer.Typer()
    app.command()(old_handle_errors(command))
    r = CliRunner().invoke(app, [])
    assert isinstance(r.exception, KeyError)
