"""The instance store: DICOM files on disk, written so that an acknowledged file survives a crash.

Layout: ``<root>/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``. Every path component is a UID
that passed :func:`core.uids.validate_uid`, so nothing a peer sends can steer a path.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from radpair.core.uids import validate_uid


def fsync_dir(path: Path) -> None:
    """Persist a directory entry (a rename or a new file) itself, not just the file's data."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, chunks: list[bytes] | tuple[bytes, ...]) -> None:
    """Write ``chunks`` to ``path`` via a temporary file, fsync it, rename it, fsync the folder.

    Readers see either the old file or the complete new one, never a torn write, and after this
    returns the file is on stable storage. Raises OSError (e.g. ENOSPC) with nothing left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class InstanceStore:
    """Files of archived instances under one root folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def relative_path(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
        parts = (
            validate_uid(study_uid, "StudyInstanceUID"),
            validate_uid(series_uid, "SeriesInstanceUID"),
            validate_uid(sop_instance_uid, "SOPInstanceUID") + ".dcm",
        )
        return "/".join(parts)

    def absolute(self, relative: str) -> Path:
        return self.root / relative

    def write(self, relative: str, chunks: list[bytes] | tuple[bytes, ...]) -> Path:
        path = self.absolute(relative)
        atomic_write(path, chunks)
        return path
