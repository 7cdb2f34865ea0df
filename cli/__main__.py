"""``python -m rcig_release.cli``: the same as the ``rcig-release`` command."""

from rcig_release.cli.main import main

main()
