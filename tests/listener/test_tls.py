"""DICOM over TLS with DCMTK's echoscu/storescu: server-only TLS, and mutual TLS where a client
without a certificate from the configured CA is refused. Certificates come from `openssl`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.dcmtk import DCMTK_ENV, require
from tests.support.listener import RunningListener
from tests.support.dicom import make_series


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", f"/CN={name}"], check=True, capture_output=True)
    return key, cert


def _tls(tool: str, listener: RunningListener, key: Path, cert: Path, ca: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    # +cf: trust this CA certificate for the server; -ic would skip the check, we do not.
    return subprocess.run([require(tool), "+tls", str(key), str(cert), "+cf", str(ca), "-aec", "RADPAIR",
                           "127.0.0.1", str(listener.port), *map(str, files)], env=DCMTK_ENV, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("processes", [False, True], ids=["in-process", "worker-processes"])
def test_tls_echo_and_store(start_listener, tmp_path: Path, processes: bool) -> None:  # noqa: ANN001
    server_key, server_cert = _self_signed(tmp_path, "server")
    client_key, client_cert = _self_signed(tmp_path, "client")
    listener = start_listener(processes=processes, **{"listener.tls_cert": str(server_cert),
                                                      "listener.tls_key": str(server_key), "listener.workers": 2})
    assert _tls("echoscu", listener, client_key, client_cert, server_cert).returncode == 0
    stored = _tls("storescu", listener, client_key, client_cert, server_cert, *make_series(tmp_path / "in", 2))
    assert stored.returncode == 0, stored.stderr
    assert len(list(listener.settings.store_dir.rglob("*.dcm"))) == 2
    assert listener.echoscu().returncode != 0  # plain TCP is not spoken on a TLS port


def test_mutual_tls_refuses_unknown_client_certificate(start_listener, tmp_path: Path) -> None:  # noqa: ANN001
    server_key, server_cert = _self_signed(tmp_path, "server")
    client_key, client_cert = _self_signed(tmp_path, "client")
    stranger_key, stranger_cert = _self_signed(tmp_path, "stranger")
    listener = start_listener(**{"listener.tls_cert": str(server_cert), "listener.tls_key": str(server_key),
                                 "listener.tls_ca": str(client_cert), "listener.tls_require_client_cert": True})
    assert _tls("echoscu", listener, client_key, client_cert, server_cert).returncode == 0
    assert _tls("echoscu", listener, stranger_key, stranger_cert, server_cert).returncode != 0
