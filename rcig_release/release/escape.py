"""Making user-controlled strings safe for each place a bundle puts them.

User-controlled: class names (from ``distilled.npz``), ``--name``, ``--override`` and anything read
from the run's JSON files. Each sink has its own function:

- ``check_text``: refuses control characters (C0/C1, line and paragraph separators, bidirectional
  overrides) with an ``InputError`` that names the field and the code point, never the text.
- ``md``: Markdown inline text that renders as the literal string and can carry no HTML
  (``<>&"'`` become entities, Markdown punctuation is backslash-escaped).
- ``csv_cell``: a spreadsheet cell that cannot start a formula (``= + - @`` and ``'`` itself get a
  ``'`` prefix, so ``csv_uncell`` is its exact inverse).
- YAML is never written by hand: the card's front matter is emitted by PyYAML (``documents.py``).
- HTML uses ``html.escape``; terminal output goes through ``rich.text.Text`` (no markup parsed).
"""

from __future__ import annotations

import unicodedata

from rcig_release.errors import InputError

# Line/paragraph separators and the bidirectional embeddings, overrides and isolates.
_REFUSED_EXTRA = {0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
# What python-markdown and CommonMark both treat as escapable and that can start markup inline.
_MD_BACKSLASH = set("\\`*_{}[]()#!")
# ``|`` as an entity: a table cell is split on it before backslash escapes are read (GFM), and
# python-markdown honours ``\|`` only with its tables extension.
_MD_ENTITY = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;", "|": "&#124;"}
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def control_char(s: str) -> str | None:
    """The first refused character of ``s`` as ``U+XXXX``, or None."""
    for ch in s:
        cp = ord(ch)
        if unicodedata.category(ch) == "Cc" or cp in _REFUSED_EXTRA:
            return f"U+{cp:04X}"
    return None


def check_text(s: str, what: str) -> str:
    """``s`` unchanged, or an ``InputError`` naming ``what`` and the first control character."""
    bad = control_char(s)
    if bad is not None:
        raise InputError(f"{what} contains a control character ({bad}); remove it and try again")
    return s


def md(s: object) -> str:
    """``s`` as Markdown inline text: renders literally, never as HTML, a link or emphasis."""
    out = []
    for ch in str(s):
        if ch in _MD_ENTITY:
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
