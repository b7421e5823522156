#!/usr/bin/env bash
# Installs the Debian packages the test suite talks to (real DCMTK, Orthanc, dicom3tools,
# PostgreSQL; openssl makes the TLS tests' certificates; chromium and npm for the real-viewer test,
# which fetches OHIF with npm and drives chromium with Playwright) when any of them is missing. Needs root or sudo; does nothing if all are present.
set -euo pipefail
need=()
command -v storescu >/dev/null || need+=(dcmtk)
command -v Orthanc >/dev/null || need+=(orthanc orthanc-dicomweb)
command -v dciodvfy >/dev/null || need+=(dicom3tools)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v openssl >/dev/null || need+=(openssl)
command -v chromium >/dev/null || need+=(chromium)
command -v npm >/dev/null || need+=(npm)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing system packages: ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
