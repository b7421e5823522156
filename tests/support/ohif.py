"""OHIF 3, the real viewer, served on loopback over a real Orthanc's DICOMweb.

The npm package ``@ohif/app`` ships the built viewer in ``dist/``; :func:`ohif_dist` fetches it with
npm once into a cache folder (a rerun does not refetch) and writes an ``app-config.js`` whose one
data source is ``/dicom-web``. :class:`ViewerServer` serves ``dist/`` (unknown paths fall back to
``index.html``, the viewer's own routes) and proxies ``/dicom-web/`` to Orthanc, so the browser sees
one origin, as behind a site's reverse proxy.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import tarfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

OHIF_PACKAGE = "@ohif/app@3.13.2"
CACHE = Path(os.environ.get("OHIF_CACHE", Path.home() / ".cache" / "radpair" / "ohif-3.13.2"))

APP_CONFIG = """window.config = {
  routerBasename: null, extensions: [], modes: [], showStudyList: true, maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false, showCPUFallbackMessage: false, showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true, defaultDataSourceName: 'orthanc',
  dataSources: [{
    namespace: '@ohif/extension-default.dataSourcesModule.dicomweb', sourceName: 'orthanc',
    configuration: {
      friendlyName: 'Orthanc (radpair test PACS)', name: 'orthanc',
      wadoUriRoot: '/dicom-web', qidoRoot: '/dicom-web', wadoRoot: '/dicom-web',
      qidoSupportsIncludeField: false, supportsReject: false, imageRendering: 'wadors',
      thumbnailRendering: 'wadors', enableStudyLazyLoad: true, supportsFuzzyMatching: false,
      supportsWildcard: true, staticWado: false, singlepart: 'bulkdata,video',
      bulkDataURI: { enabled: true, relativeResolution: 'studies' }, omitQuotationForMultipartRequest: true,
    },
  }],
};
"""


def ohif_dist(cache: Path = CACHE) -> Path:
    """The built viewer's folder, fetched with ``npm pack`` the first time (needs npm and the registry)."""
    dist = cache / "package" / "dist"
    if not (dist / "index.html").exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed to fetch OHIF: deploy/install-system-deps.sh installs it")
        cache.mkdir(parents=True, exist_ok=True)
        name = subprocess.run([npm, "pack", OHIF_PACKAGE, "--silent"], cwd=cache, check=True, capture_output=True,
                              text=True, timeout=900).stdout.strip().splitlines()[-1]
        with tarfile.open(cache / name) as archive:
            archive.extractall(cache, filter="data")
        (cache / name).unlink()
    (dist / "app-config.js").write_text(APP_CONFIG)
    return dist


class ViewerServer:
    """The viewer's static files and a ``/dicom-web/`` proxy to ``dicomweb_url``, on a free loopback port."""

    def __init__(self, dist: Path, dicomweb_url: str) -> None:
        root, upstream = dist, dicomweb_url.rstrip("/")

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args) -> None:  # the test's output stays readable
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/dicom-web/"):
                    return self._proxy()
                if not (root / self.path.split("?")[0].lstrip("/")).is_file():
                    self.path = "/index.html"
                return super().do_GET()

            def _proxy(self) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept", "range")}
                request = urllib.request.Request(upstream + self.path[len("/dicom-web"):], headers=headers)
                try:
                    response = urllib.request.urlopen(request, timeout=60)
                except urllib.error.HTTPError as error:
                    response = error
                body = response.read()
                self.send_response(response.status)
                for key in ("Content-Type",):
                    if response.headers.get(key):
                        self.send_header(key, response.headers[key])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "ViewerServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
