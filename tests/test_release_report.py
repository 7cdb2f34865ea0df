"""The HTML report: self-contained, verdict first, and every image loads in headless Chromium."""

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from rcig_release.release.bundle import release
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


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.external, self.headings = [], [], []
        self._in_h = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for key in ("src", "href"):
            if key in a and not a[key].startswith(("data:", "#")):
                self.external.append((tag, key))
        if tag == "link" or (tag == "script" and "src" in a):
            self.external.append((tag, "resource"))
        if tag in ("h1", "h2", "h3") or (tag == "div" and "verdict" in a.get("class", "")):
            self._in_h = tag
            self.headings.append("")

    def handle_endtag(self, tag):
        if tag == self._in_h:
            self._in_h = False

    def handle_data(self, data):
        if self._in_h:
            self.headings[-1] += data


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    data = private_data()
    run = fake_run(tmp / "run", data=data, with_scores=True)
    release(run, DEFAULT, tmp / "bundle", load_private=loader_for(data))
    return tmp / "bundle" / "report" / "report.html"


def test_report_is_self_contained_and_verdict_first(report):
    parser = _Refs()
    text = report.read_text()
    parser.feed(text)
    assert parser.external == []
    assert len(parser.imgs) == 4 and all(
        s.startswith("data:image/png;base64,") for s in parser.imgs
    )
    order = [h for h in parser.headings if h]
    assert order[0].endswith("release report") and order[1].startswith("Policy passed")
    wanted = [
        "Membership-inference ROC",
        "The released images",
        "Copy check",
        "Utility",
        "Baselines",
    ]
    positions = [next(i for i, h in enumerate(order) if h.startswith(w)) for w in wanted]
    assert positions == sorted(positions), order


def test_report_opens_in_headless_chromium_with_every_image_loaded(report, tmp_path):
    if CHROMIUM is None:
        pytest.skip(
            "no Chromium at /usr/bin/chromium (CI installs it with apt-get where it can; "
            "this machine has no browser and no way to install one)"
        )
    probe = tmp_path / "probe.html"
    script = (
        "<script>window.addEventListener('load', function () {"
        "var imgs = Array.from(document.images);"
        "var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;"
        "document.body.setAttribute('data-probe', 'images ' + ok + '/' + imgs.length);"
        "});</script></body>"
    )
    probe.write_text(report.read_text().replace("</body>", script))
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r'data-probe="images (\d+)/(\d+)"', proc.stdout)
    assert m, "the page's load handler did not run:\n" + proc.stdout[:500]
    loaded, total = int(m.group(1)), int(m.group(2))
    assert total == 4 and loaded == total
