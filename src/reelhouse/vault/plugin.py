"""Vault domain registration (the `reelhouse.domains` entry point).

The vault needs secrets: the master key (data keys are wrapped under it), a mail transport and
FROM_EMAIL (releases are delivered by mail), and APP_URL (the links in those mails). With
VAULT_ENABLED=true start-up fails naming what is missing; with the default `auto` the vault
stays off (and says why in the log) until they are configured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from reelhouse.config import ConfigError
from reelhouse.core.notify.email import EmailSettings
from reelhouse.core.notify.templates import MailTemplates
from reelhouse.core.runtime import Runtime
from reelhouse.core.security.crypto import CryptoError, Keyring
from reelhouse.vault import (
    models,  # noqa: F401 - registers the vault tables on the metadata
    tasks,
)
from reelhouse.vault.metrics import refresh_metrics, vault_status
from reelhouse.vault.services import Limits, VaultServices
from reelhouse.vault.settings import VaultSettings
from reelhouse.vault.store import VaultStore

log = logging.getLogger("reelhouse.vault")


@dataclass(frozen=True)
class VaultDomain:
    services: VaultServices


def install_http(runtime: Runtime, *, services: VaultServices) -> None:
    """The vault's API routers and browser pages (only when an app is built)."""
    from reelhouse.vault.http import admin, messages, plans, verifiers, view
    from reelhouse.vault.pages import build_pages

    runtime.routers.extend(module.router for module in (plans, messages, verifiers, view, admin))
    runtime.add_pages(build_pages(services))


def missing_secrets(runtime: Runtime, settings: VaultSettings, email: EmailSettings) -> list[str]:
    missing = []
    if not runtime.settings.security.master_encryption_key.strip():
        missing.append("MASTER_ENCRYPTION_KEY")
    missing += email.missing()
    if not settings.app_url.startswith(("http://", "https://")):
        missing.append("APP_URL (the public base URL for links in mails)")
    return missing


def setup(runtime: Runtime) -> VaultDomain | None:
    settings = runtime.settings.section(VaultSettings)
    email = runtime.settings.section(EmailSettings)
    if settings.vault_enabled == "false":
        return None
    missing = missing_secrets(runtime, settings, email)
    if missing:
        if settings.vault_enabled == "true":
            raise ConfigError("the vault is enabled (VAULT_ENABLED=true) but not configured: set " + ", ".join(missing))
        log.info("vault disabled: set %s to enable it", ", ".join(missing), extra={"component": "vault"})
        return None
    try:
        keyring = Keyring.from_settings(runtime.settings)
    except CryptoError as exc:
        raise ConfigError(f"MASTER_ENCRYPTION_KEY: {exc}") from None
    assert keyring is not None
    services = VaultServices(
        runtime_settings=runtime.settings,
        settings=settings,
        email=email,
        keyring=keyring,
        store=VaultStore(runtime.engine),
        templates=MailTemplates("reelhouse.vault", "mail"),
        limits=Limits.from_settings(settings, runtime.settings.security.rate_limit_enabled),
    )
    tasks.register(runtime.registry, services)
    runtime.periodic.append(tasks.periodic(services))
    runtime.http_installers.append(partial(install_http, services=services))
    runtime.status_providers.append(vault_status)
    runtime.metric_refreshers.append(refresh_metrics)

    runtime.closers.append(services.aclose)
    runtime.provide(services)
    return VaultDomain(services)
