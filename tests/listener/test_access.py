"""Safe defaults: accepting any calling AE is allowed only on loopback, and an empty allow-list
with accept-any off is refused, both at start with a message naming the setting."""

from __future__ import annotations

import pytest

from radpair.core.config import ConfigError
from radpair.core.db import make_engine, session_factory
from radpair.core.settings import load_settings
from radpair.listener.access import AccessPolicy
from radpair.listener.audit import AuditTrail

AUDIT = AuditTrail(session_factory(make_engine("sqlite://")), "RADPAIR")


def test_accept_any_is_refused_off_loopback() -> None:
    settings = load_settings(environ={}, overrides={"listener.host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="listener.accept_any_calling_ae"):
        AccessPolicy(settings.listener, AUDIT)


def test_nobody_allowed_is_refused() -> None:
    settings = load_settings(environ={}, overrides={"listener.accept_any_calling_ae": False})
    with pytest.raises(ConfigError, match="listener.allowed_peers"):
        AccessPolicy(settings.listener, AUDIT)


def test_allow_list_off_loopback_is_fine() -> None:
    settings = load_settings(environ={}, overrides={"listener.host": "0.0.0.0",
                                                    "listener.allowed_peers": [{"ae_title": "PACS", "host": "10.0.0.5"}]})
    policy = AccessPolicy(settings.listener, AUDIT)
    assert policy.allows("PACS", "10.0.0.5") and not policy.allows("PACS", "10.0.0.6")
    assert not policy.allows("OTHER", "10.0.0.5")

