"""reelhouse: self-hosted video operations on one core (archive, encode, vault)."""

__version__ = "0.1.0"
