"""rcig package."""
