"""The package imports under its one namespace and the CLI answers --help."""

import subprocess
import sys


def test_namespace_imports():
    import rcig_release
    import rcig_release.audits
    import rcig_release.cli.main

    assert rcig_release.__version__


def test_cli_help():
    out = subprocess.run(
        [sys.executable, "-m", "rcig_release.cli.main", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "distill" in out.stdout or "Usage" in out.stdout
