"""Alembic revisions of the vault domain (branch label `vault`), registered through the
`reelhouse.migrations` entry point."""
