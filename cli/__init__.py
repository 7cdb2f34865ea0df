"""The ``rcig-release`` command line (installed as ``rcig_release.cli``)."""
