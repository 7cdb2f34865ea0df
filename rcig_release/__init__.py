"""rcig-release: distil a private image set with RCIG, audit it, release it behind a policy."""

__version__ = "0.1.0"
