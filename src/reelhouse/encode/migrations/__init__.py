"""Alembic revisions of the encode domain (branch label `encode`), registered through the
`reelhouse.migrations` entry point."""
