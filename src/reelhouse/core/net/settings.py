"""Settings of outbound fetches of user-given URLs (read with `settings.section(OutboundSettings)`)."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator

from reelhouse.config import CommaList, SettingsSection, from_env


class OutboundSettings(SettingsSection):
    outbound_allow_private: bool = Field(False, validation_alias=from_env("OUTBOUND_ALLOW_PRIVATE"))
    """Allow loopback, private, link-local and metadata addresses (tests with local servers)."""
    outbound_allowed_networks: CommaList = Field(
        default_factory=list, validation_alias=from_env("OUTBOUND_ALLOWED_NETWORKS")
    )
    """CIDR ranges fetched from although not public (an internal media server, say)."""

    @field_validator("outbound_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item.strip(), strict=False)  # ValueError names the bad range
        return value

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(item.strip(), strict=False) for item in self.outbound_allowed_networks]
