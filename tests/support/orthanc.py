"""A real Orthanc on loopback for tests, configured from deploy/orthanc (free ports, own storage)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.ports import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "orthanc"
ORTHANC = shutil.which("Orthanc")
# Debian's orthanc-dicomweb: QIDO-RS / WADO-RS at /dicom-web/, what a web viewer reads.
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class Orthanc:
    """``start()`` / ``stop()`` keep the ports and the storage, so a restart finds its data again."""

    def __init__(self, folder: Path, radpair_port: int | None = None, stable_age: int = 1, aet: str = "ORTHANC",
                 dicom_port: int | None = None, dicomweb: bool = False) -> None:
        self.folder = folder
        self.http_port = free_port()
        self.dicom_port = dicom_port or free_port()
        self.aet = aet
        config = json.loads((DEPLOY / "orthanc.json").read_text())
        config.update({
            "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": aet, "StableAge": stable_age,
            "LuaScripts": [str(DEPLOY / "autoroute.lua")] if radpair_port else [],
            "DicomModalities": {"radpair": ["RADPAIR", "127.0.0.1", radpair_port]} if radpair_port else {},
            "Plugins": [DICOMWEB_PLUGIN] if dicomweb else [],
        })
        folder.mkdir(parents=True, exist_ok=True)
        self.config_path = folder / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.process: subprocess.Popen | None = None

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, attempts: int = 5) -> "Orthanc":
        """Start and wait for the REST API; a just-stopped Orthanc's port may linger: retry."""
        for attempt in range(attempts):
            log = open(self.folder / "orthanc.log", "ab")
            self.process = subprocess.Popen([ORTHANC, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "TCP_NODELAY": "1"})
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    self.get("/system")
                    return self
                except (urllib.error.URLError, ConnectionError, OSError):
                    time.sleep(0.2)
            self.stop()
            time.sleep(1 + attempt)
        raise RuntimeError(f"Orthanc did not start; see {self.folder / 'orthanc.log'}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def post(self, path: str, data: bytes) -> Any:
        request = urllib.request.Request(self.url + path, data=data, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def instances_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        """Every instance of the study with its tags (SOPClassUID, Modality, SOPInstanceUID...)."""
        found = self.post("/tools/find", json.dumps({"Level": "Instance", "Expand": True,
                                                     "Query": {"StudyInstanceUID": study_uid}}).encode())
        out = []
        for instance in found:
            tags = self.get(f"/instances/{instance['ID']}/simplified-tags")
            out.append({"id": instance["ID"], **tags})
        return out

    def download(self, orthanc_id: str, path: Path) -> Path:
        path.write_bytes(self.get(f"/instances/{orthanc_id}/file"))
        return path
