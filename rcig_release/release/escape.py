"""Making user-controlled strings safe for each place they go: one function, ``sanitize(s, sink)``.

User-controlled: class names (from the data and ``distilled.npz``), ``--name``, ``--override``,
file names (an image folder's, a bundle's) and anything read from the run's JSON files.
``sanitize(s, sink)`` is the one entry point; each sink's rule is its own small function:

- ``"terminal"`` (``terminal``): every C0/C1 control, DEL, line/paragraph separator, bidi control
  and invisible format character is written as a visible ``\\xNN`` / ``\\uNNNN`` escape (and a
  backslash as ``\\\\``), so an ESC sequence in a file name never reaches the terminal raw.
- ``"markdown"`` (``md``): inline text that renders as the literal string and can carry no HTML
  (``<>&"'|`` become entities, Markdown punctuation is backslash-escaped; ``~``, ``:``, ``@``
  and the ``.`` of ``www.`` become entities, so no GFM strikethrough or autolink is formed).
- ``"yaml"``: a double-quoted YAML scalar (the card's front matter quotes every string, so
  ``1e3``, ``no`` or ``null`` stay strings for YAML 1.1 and 1.2 readers alike; ``documents.py``).
- ``"csv"`` (``csv_cell``): a spreadsheet cell that cannot start a formula (``= + - @`` and ``'``
  itself get a ``'`` prefix, so ``csv_uncell`` is its exact inverse).
- ``"html"``: ``html.escape`` (text and attribute values).

Names are refused, not escaped, where they become data: ``check_text`` refuses control
characters, bidi controls and invisible format characters (U+200B, U+200E/F, U+2060–U+2064,
U+FEFF, tag characters U+E0000–U+E007F, …; the joiners U+200C/U+200D of scripts and emoji stay)
with an ``InputError`` that names the field and the code point, never the text;
``check_class_names`` applies every rule ``release`` applies to class names and is called by
``distill`` on the data, so a name is refused before hours of work rather than at release.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence

from rcig_release.errors import InputError

# Line/paragraph separators and the bidirectional embeddings, overrides and isolates.
_REFUSED_EXTRA = {0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
# Format characters (Cf) a script or an emoji needs: zero-width non-joiner and joiner.
_FORMAT_KEPT = {0x200C, 0x200D}
MAX_NAME_CHARS = 1000
# What python-markdown and CommonMark both treat as escapable and that can start markup inline.
_MD_BACKSLASH = set("\\`*_{}[]()#!")
# ``|`` as an entity: a table cell is split on it before backslash escapes are read (GFM), and
# python-markdown honours ``\|`` only with its tables extension.
# ``~`` (GFM strikethrough), ``:`` and ``@`` (GFM extended autolinks: ``http://``, ``a@b.c``) as
# entities: an entity is literal text in CommonMark, never a delimiter or part of a link.
_MD_ENTITY = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&#39;",
    "|": "&#124;",
    "~": "&#126;",
    ":": "&#58;",
    "@": "&#64;",
}
_WWW = re.compile(r"www\.", re.IGNORECASE)  # GFM autolinks ``www.`` without a scheme
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _refused(ch: str) -> bool:
    cp = ord(ch)
    cat = unicodedata.category(ch)
    return (
        cat in ("Cc", "Cs", "Zl", "Zp")
        or cp in _REFUSED_EXTRA
        or (cat == "Cf" and cp not in _FORMAT_KEPT)
    )


def control_char(s: str) -> str | None:
    """The first refused character of ``s`` as ``U+XXXX``, or None: a control character (C0, C1,
    DEL), a line or paragraph separator, a bidi control, an invisible format character (Cf but
    the joiners U+200C/U+200D) or a lone surrogate."""
    for ch in s:
        if _refused(ch):
            return f"U+{ord(ch):04X}"
    return None


def check_text(s: str, what: str) -> str:
    """``s`` unchanged, or an ``InputError`` naming ``what`` and the first refused character."""
    bad = control_char(s)
    if bad is not None:
        cp = int(bad[2:], 16)  # bidi controls are named control characters, as the docs do
        kind = (
            "an invisible format character"
            if unicodedata.category(chr(cp)) == "Cf" and cp not in _REFUSED_EXTRA
            else "a control character"
        )
        raise InputError(f"{what} contains {kind} ({bad}); remove it and try again")
    return s


def check_class_names(classes: Sequence[str], what: str) -> tuple[str, ...]:
    """Every rule ``release`` applies to class names, applied once where the names enter
    (``distill``'s data, ``release``'s arrays): at least 2 classes; each name non-empty after
    trimming, at most ``MAX_NAME_CHARS`` characters, with no refused character (``check_text``);
    all distinct. Returns the names."""
    names = tuple(str(c) for c in classes)
    if len(names) < 2:
        raise InputError(
            f"{what}: {len(names)} class(es); a classifier and its audit need at least 2 classes"
        )
    for i, c in enumerate(names):
        where = f"class name {i} in {what}"
        check_text(c, where)
        if not c.strip():
            raise InputError(f"{where} is empty")
        if len(c) > MAX_NAME_CHARS:
            raise InputError(f"{where} has {len(c):,} characters (at most {MAX_NAME_CHARS})")
    if len(set(names)) != len(names):
        raise InputError(f"{what}: class names must be distinct")
    return names


def check_dataset(ds, what: str) -> None:
    """``distill``'s check of a loaded ``Dataset`` (class names and count, as ``release``)."""
    check_class_names(ds.classes, what)


def terminal(s: object) -> str:
    """``s`` safe to print on a terminal: every refused character (``control_char``'s set), and
    a backslash, written as a visible escape (``\\x1b``, ``\\u202e``); nothing else changed."""
    out = []
    for ch in str(s):
        if ch == "\\":
            out.append("\\\\")
        elif _refused(ch):
            cp = ord(ch)
            out.append(
                f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"
            )
        else:
            out.append(ch)
    return "".join(out)


_YAML_ESC = {"\\": "\\\\", '"': '\\"'}


def yaml_scalar(s: object) -> str:
    """``s`` as a double-quoted YAML scalar (every control written as an escape)."""
    out = []
    for ch in str(s):
        if ch in _YAML_ESC:
            out.append(_YAML_ESC[ch])
        elif _refused(ch) or ord(ch) < 0x20:
            cp = ord(ch)
            out.append(
                f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}" if cp < 0x10000 else f"\\U{cp:08x}"
            )
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


SINKS = ("terminal", "markdown", "yaml", "csv", "html")


def sanitize(s: object, sink: str) -> str:
    """``s`` made safe for ``sink`` (one of ``SINKS``); the module docstring gives each rule."""
    if sink == "terminal":
        return terminal(s)
    if sink == "markdown":
        return md(s)
    if sink == "yaml":
        return yaml_scalar(s)
    if sink == "csv":
        return csv_cell(str(s))
    if sink == "html":
        return html.escape(str(s), quote=True)
    raise ValueError(f"unknown sink {sink!r} (one of {', '.join(SINKS)})")


def md(s: object) -> str:
    """``s`` as Markdown inline text: renders literally, never as HTML, a link (GFM autolinks
    included), strikethrough or emphasis."""
    text = str(s)
    www_dots = {m.end() - 1 for m in _WWW.finditer(text)}
    out = []
    for i, ch in enumerate(text):
        if i in www_dots:
            out.append("&#46;")
        elif ch in _MD_ENTITY:
            out.append(_MD_ENTITY[ch])
        elif ch in _MD_BACKSLASH:
            out.append("\\" + ch)
        elif ch in "\r\n":
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def csv_cell(s: str) -> str:
    """A CSV text cell a spreadsheet shows as text: a formula-starting cell gets a ``'`` prefix."""
    return "'" + s if s.startswith(_CSV_FORMULA + ("'",)) else s


def csv_uncell(s: str) -> str:
    """Inverse of ``csv_cell`` for cells it wrote."""
    return s[1:] if s.startswith("'") else s
