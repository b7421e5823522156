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



def test_a_host_name_is_resolved_and_a_name_that_does_not_resolve_stops_the_start() -> None:
    settings = load_settings(environ={}, overrides={
        "listener.accept_any_calling_ae": False, "listener.allowed_peers": [{"ae_title": "PACS", "host": "localhost"}]})
    policy = AccessPolicy(settings.listener, AUDIT)
    assert policy.allows("PACS", "127.0.0.1") and not policy.allows("PACS", "10.0.0.6")
    bad = load_settings(environ={}, overrides={
        "listener.accept_any_calling_ae": False,
        "listener.allowed_peers": [{"ae_title": "PACS", "host": "no-such-host.invalid"}]})
    with pytest.raises(ConfigError, match="'no-such-host.invalid', which does not resolve"):
        AccessPolicy(bad.listener, AUDIT)


def _outcomes(listener) -> list[str]:  # noqa: ANN001
    from sqlalchemy import select

    from radpair.core.models import Association

    with listener.sessions() as s:
        return list(s.scalars(select(Association.outcome).order_by(Association.id)))


def test_allowed_peer_by_name_with_a_real_echoscu(start_listener) -> None:  # noqa: ANN001
    listener = start_listener(**{"listener.accept_any_calling_ae": False,
                                 "listener.allowed_peers": [{"ae_title": "ECHOSCU", "host": "localhost"}]})
    assert listener.echoscu().returncode == 0
    assert listener.echoscu(calling="STRANGER").returncode != 0
    assert _outcomes(listener) == ["released", "rejected: calling AE title not recognised"]


def test_wrong_called_ae_title_is_rejected_unless_the_check_is_off(start_listener) -> None:  # noqa: ANN001
    import subprocess

    from tests.support.dcmtk import DCMTK_ENV

    def echo(listener) -> subprocess.CompletedProcess[str]:  # noqa: ANN001
        return subprocess.run(["echoscu", "-v", "-aec", "WRONGAE", "127.0.0.1", str(listener.port)],
                              env=DCMTK_ENV, capture_output=True, text=True, timeout=60)

    checked = start_listener()
    refused = echo(checked)
    assert refused.returncode != 0 and "Called AE Title Not Recognized" in refused.stderr, refused.stderr
    assert _outcomes(checked) == ["rejected: called AE title not recognised"]
    assert checked.echoscu().returncode == 0, "the right called AE title is still accepted"
    assert echo(start_listener(**{"listener.check_called_ae": False})).returncode == 0
