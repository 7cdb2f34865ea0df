"""A hostile corpus for the release: strings a user (or a crafted run) may feed to the card, the
report, the CSV, the YAML front matter and the terminal.

Payloads that would *run* in a browser set a marker the tests look for: the page title becomes
``PWNED`` or ``<body data-pwned="yes">`` appears.
"""

import getpass
import socket

MARK = "document.body.setAttribute('data-pwned','yes')"

HTML_JS = (
    f'<img src=x onerror="{MARK}">',
    f'<svg onload="{MARK}">',
    "<script>document.title='PWNED'</script>",
    f'<a href="javascript:{MARK}">click</a>',
    f'<iframe srcdoc="<script>parent.{MARK}</script>"></iframe>',
)
MARKDOWN_YAML = (
    "---",
    "license: mit",
    "key: value: more",
    "# heading",
    "a | b",
    "`code` and ``double``",
    f"[x](javascript:{MARK})",
    "![img](x.png)",
    "*emph* _und_ **bold**",
    "- list item",
    "1. item",
    "> quote",
    "&lt;entity&gt; &amp;",
    "{{ template }} [[wiki]]",
    "'single' \"double\"",
    "back\\slash",
    "&",
    "!important",
    "~/notes",  # a home-relative path would be refused; not used as a class (see LEAKY)
    # GFM: strikethrough and the extended autolinks (issue 22)
    "~~struck~~",
    "see http://evil.example/x",
    "www.evil.example",
    "me@evil.example",
    # YAML 1.2 readers resolve these plain scalars to numbers, booleans or null (issue 22)
    "1e3",
    "no",
    "0x10",
)
CSV_FORMULA = ("=1+1", "+SUM(A1)", "-2", "@cmd", "'quoted", '=HYPERLINK("http://x")')
UNICODE = ("猫", "🐶 dog", "T-shirt/top", "ＣＡＴ", "Ä", "a/b", "a_b", "Cat", "cat", "..", ".")
LONG = ("a" * 70 + "1", "a" * 70 + "2")
COLUMNS = ("index", "file", "class", "label")  # equal to labels.csv / metadata.jsonl column names

try:
    USER = getpass.getuser()
except Exception:  # noqa: BLE001
    USER = "nobody"
HOST = socket.gethostname().split(".")[0] or "localhost"


def class_names() -> tuple[str, ...]:
    """Every hostile class name, in a deliberately unsorted order, plus the user and host names."""
    names = [
        *HTML_JS,
        *(n for n in MARKDOWN_YAML if n != "~/notes"),
        *CSV_FORMULA,
        *UNICODE,
        *LONG,
        *COLUMNS,
    ]
    for extra in (USER, HOST, "root", "vm"):
        if extra not in names:
            names.append(extra)
    names.insert(0, "zebra")  # not alphabetical: class ids must not follow the folder order
    return tuple(names)


DATASET_NAME = f"<script>document.title='PWNED'</script> --- license: mit # {HOST}"
OVERRIDE = f'<svg onload="{MARK}"> [x](javascript:alert(1)) | =1+1 approved by {USER}'

# Refused with exit 2: each holds a control character (a separator or a bidi override included).
CONTROL = (
    "line\nbreak",
    "tab\there",
    "esc\x1b[31mred",
    "nu\x00l",
    "bell\x07",
    "cr\rreturn",
    "rtl\u202eevil",
    "sep\u2028line",
    "del\x7f",
    "c1\x85",
)
