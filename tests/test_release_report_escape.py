"""The HTML report escapes by construction: ``report_html`` renders a Jinja2 template with
autoescape on from plain data, so a hostile class name, ``--name``, ``--override``, policy name or
audit-configuration key reaches the page only as text. The check below parses the real report
into its expected structure; the same check run on the same template rendered with autoescape
off must fail (the broken variant), so it tests the mechanism, not the payloads' luck.

The licence is not among the strings: ``release`` accepts only an SPDX id (``license_id``) and the
report does not show it (the card does: tests/test_release_hostile.py)."""

import dataclasses
import json
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import pytest
from jinja2 import nodes

import rcig_release.release.bundle as bundle_mod
from rcig_release.release.bundle import release
from rcig_release.release.documents import (
    REPORT_TEMPLATE,
    Summary,
    fmt,
    report_context,
    report_environment,
    report_html,
)
from release_fixtures import fake_run, loader_for, private_data

DEFAULT = Path(__file__).resolve().parents[1] / "policies" / "default.toml"

# what a string must not do in an HTML page: open an element, close a cell, row, table or the
# title early, leave an attribute, or pass for a Jinja2 expression (values are never templates)
CLASSES = (
    "<script>alert(1)</script>",
    '" onmouseover="alert(2)',
    "</td></tr></table><img src=x onerror=alert(3)>",
    "&lt;entity&gt; & {{ 7 * 7 }}",
)
NAME = "</title><script>alert(4)</script>"
OVERRIDE = "'><svg onload=alert(5)></p>"
POLICY = "<b>bold</b> </code><script>alert(6)</script>"
CONFIG_KEY = '<iframe srcdoc="<script>alert(7)</script>"></iframe>'
CONFIG_VALUE = "</td><td>forged</td></tr><tr><td>x"

# every element and attribute the template writes; nothing else may appear
TAGS = {
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "h1",
    "h2",
    "h3",
    "div",
    "p",
    "b",
    "code",
    "ul",
    "li",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "img",
    "details",
    "summary",
}
ATTRS = {"lang", "charset", "name", "content", "class", "alt", "src"}


class _Page(HTMLParser):
    """Elements, attributes, each table's rows (cell texts) and the text under each element."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs = [], []
        self.tables: list[list[list[str]]] = []
        self.text: dict[str, list[str]] = {}
        self._open: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables and self.tables[-1]:
            self.tables[-1][-1].append("")
        if tag not in ("meta", "img"):  # void elements
            self._open.append(tag)

    def handle_endtag(self, tag):
        if tag in self._open:
            while self._open.pop() != tag:
                pass

    def handle_data(self, data):
        if self._open:
            self.text.setdefault(self._open[-1], []).append(data)
        if self._open and self._open[-1] in ("td", "th") and self.tables and self.tables[-1]:
            self.tables[-1][-1][-1] += data


def check_report(page: str, s: Summary) -> None:
    """Asserts ``page`` holds no markup from ``s``'s strings: no script, only the template's
    elements and attributes, four figures, every table row as wide as its header, and each
    string from an input as the literal text of the element it belongs in."""
    assert "<script" not in page.lower()
    p = _Page()
    p.feed(page)
    p.close()
    assert set(p.tags) <= TAGS, set(p.tags) - TAGS
    assert {k for _, k, _ in p.attrs} <= ATTRS, p.attrs
    imgs = [v for tag, k, v in p.attrs if tag == "img" and k == "src"]
    assert len(imgs) == 4 and all(v.startswith("data:image/png;base64,") for v in imgs)
    assert {v for _, k, v in p.attrs if k == "class"} <= {f"verdict {s.verdict}", "bad"}
    for rows in p.tables:
        assert rows and all(len(r) == len(rows[0]) for r in rows), rows
    assert p.text["title"] == [f"{s.name}: release report"]
    assert p.text["h1"] == [f"{s.name}: release report"]
    assert s.decision is not None and s.decision.policy_name in p.text["code"]
    if s.override:
        assert f" {s.override}" in p.text["p"]  # after <b>Override reason:</b>
    cells = {c for rows in p.tables for r in rows for c in r}
    config = s.audit.get("config") or {}
    assert set(s.classes) <= cells, set(s.classes) - cells
    assert set(config) | {fmt(v) for v in config.values()} <= cells


def render_without_autoescape(s: Summary, figures: dict) -> str:
    """The broken variant: the same template and context in an environment with autoescape off
    (what f-strings without ``html.escape`` amount to)."""
    good = report_environment()
    broken = jinja2.Environment(
        loader=good.loader,
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return broken.get_template(REPORT_TEMPLATE).render(report_context(s, **figures))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The ``Summary`` and figures ``release`` rendered its report from, for a run whose class
    names, ``--name``, ``--override`` and policy name are hostile, and the page it wrote."""
    tmp = tmp_path_factory.mktemp("escape")
    policy = tmp / "hostile.toml"
    policy.write_text(
        DEFAULT.read_text("utf-8").replace('name = "default"', f"name = {json.dumps(POLICY)}", 1),
        "utf-8",
    )
    data = private_data(n_classes=len(CLASSES))
    run = fake_run(tmp / "run", data=data, classes=CLASSES)
    seen = []

    def spy(s, **figures):
        seen.append((s, figures))
        return report_html(s, **figures)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bundle_mod, "report_html", spy)
        release(
            run,
            policy,
            tmp / "bundle",
            load_private=loader_for(data),
            name=NAME,
            override=OVERRIDE,
            license_spdx="MIT",
        )
    ((s, figures),) = seen
    return s, figures, (tmp / "bundle/report/report.html").read_text("utf-8")


def _with_config(s: Summary) -> Summary:
    """A crafted run's audit.json: its configuration keys and values become the last table."""
    return dataclasses.replace(s, audit={**s.audit, "config": {CONFIG_KEY: CONFIG_VALUE}})


def test_release_writes_the_hostile_strings_as_text(hostile):
    s, figures, written = hostile
    assert s.decision is not None and s.decision.policy_name == POLICY
    assert s.classes == CLASSES and s.name == NAME and s.override == OVERRIDE
    assert written == report_html(s, **figures)  # what release wrote; deterministic
    check_report(written, s)
    check_report(report_html(_with_config(s), **figures), _with_config(s))


def test_the_check_catches_the_template_rendered_without_autoescape(hostile):
    s, figures, _ = hostile
    s = _with_config(s)
    with pytest.raises(AssertionError):
        check_report(render_without_autoescape(s, figures), s)
    # each hostile string alone breaks the unescaped page: the check leans on no one payload
    assert s.decision is not None
    tame = dataclasses.replace(
        s,
        name="tame",
        override="reviewed",
        classes=tuple(f"class {i}" for i in range(len(CLASSES))),
        decision=dataclasses.replace(s.decision, policy_name="tame policy"),
        audit={**s.audit, "config": {"key": "value"}},
    )
    assert tame.decision is not None
    check_report(render_without_autoescape(tame, figures), tame)
    check_report(report_html(tame, **figures), tame)
    one_class = lambda c: tuple(c if i == 1 else f"class {i}" for i in range(len(CLASSES)))  # noqa: E731
    variants = [
        dataclasses.replace(tame, name=NAME),
        dataclasses.replace(tame, override=OVERRIDE),
        dataclasses.replace(tame, decision=dataclasses.replace(tame.decision, policy_name=POLICY)),
        dataclasses.replace(tame, audit={**tame.audit, "config": {CONFIG_KEY: "value"}}),
        dataclasses.replace(tame, audit={**tame.audit, "config": {"key": CONFIG_VALUE}}),
        # '" onmouseover="alert(2)' (CLASSES[1]) is left out: it is text wherever it goes (no
        # input reaches an attribute), where unescaped quotes are harmless
        *(dataclasses.replace(tame, classes=one_class(c)) for c in (CLASSES[0], *CLASSES[2:])),
    ]
    for v in variants:
        check_report(report_html(v, **figures), v)
        with pytest.raises(AssertionError):
            check_report(render_without_autoescape(v, figures), v)


def test_the_environment_escapes_and_the_template_never_opts_out():
    """autoescape on, undefined names an error, and nothing in the template switches escaping off:
    no filter at all (so no ``|safe``) and no ``{% autoescape %}`` block, read from the parsed
    template (its comment names both)."""
    env = report_environment()
    assert env.autoescape is True and env.undefined is jinja2.StrictUndefined
    assert env.loader is not None
    tree = env.parse(env.loader.get_source(env, REPORT_TEMPLATE)[0])
    assert [f.name for f in tree.find_all(nodes.Filter)] == []
    assert list(tree.find_all(nodes.EvalContextModifier)) == []
    # the check itself sees a |safe and an autoescape block
    bad = env.parse("{% autoescape false %}{{ x }}{% endautoescape %}{{ y|safe }}")
    assert [f.name for f in bad.find_all(nodes.Filter)] == ["safe"]
    assert list(bad.find_all(nodes.EvalContextModifier)) != []


def test_the_template_is_package_data():
    """pyproject ships templates/*.j2 with rcig_release.release, so a built wheel carries it."""
    root = Path(__file__).resolve().parents[1]
    meta = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))
    globs = meta["tool"]["setuptools"]["package-data"]["rcig_release.release"]
    package = root / "rcig_release" / "release"
    assert any(package / "templates" / REPORT_TEMPLATE in package.glob(g) for g in globs)
    assert "jinja2>=3.1" in meta["project"]["dependencies"]
