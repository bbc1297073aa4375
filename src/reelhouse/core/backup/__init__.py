"""Backups: `reelhouse backup create|restore|verify` and the periodic restore test."""
