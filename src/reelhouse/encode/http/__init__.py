"""Encode's HTTP routes, one module per resource (jobs, assets, profiles); response models in
schemas.py. Routes get the domain's objects through `component(EncodeServices)`."""

from __future__ import annotations

from fastapi import APIRouter

from reelhouse.encode.http import assets, jobs, plugins, profiles, system, webhooks


def routers() -> list[APIRouter]:
    return [jobs.router, assets.router, profiles.router, webhooks.router, system.router, plugins.router]
