"""Alembic revisions of the live domain (branch label `live`), registered through the
`reelhouse.migrations` entry point."""
