"""Outbound network access on behalf of users."""
