"""The instance store: DICOM files on disk, written so that an acknowledged file survives a crash.

Layout: ``<root>/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``. Every path component is a UID
that passed :func:`core.uids.validate_uid`, so nothing a peer sends can steer a path.

A file is written in two steps so that many can share the costly part: :func:`stage` writes and
fsyncs a temporary file next to its final name (in the caller's thread, in parallel),
:meth:`StagedFile.publish` renames it into place, and one :func:`fsync_dir` per folder then makes
every rename of a batch durable at once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from radpair.core.uids import validate_uid


def fsync_dir(path: Path) -> None:
    """Persist a directory entry (a rename or a new file) itself, not just the file's data."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedFile:
    """A complete, fsync'd temporary file waiting to be renamed to ``path``."""

    def __init__(self, path: Path, tmp: Path) -> None:
        self.path = path
        self.tmp = tmp
        self.published = False

    def publish(self) -> None:
        """Rename into place (idempotent). Durable once the folder is fsync'd."""
        if not self.published:
            os.replace(self.tmp, self.path)
            self.published = True

    def unpublish(self) -> None:
        """Move a published file back to its temporary name (its row was not committed), so that
        it can be published again or discarded."""
        if self.published:
            os.replace(self.path, self.tmp)
            self.published = False

    def discard(self) -> None:
        """Remove the temporary file if it was not published (a duplicate, a failure)."""
        if not self.published:
            self.tmp.unlink(missing_ok=True)


def stage(path: Path, chunks: Iterable[bytes]) -> StagedFile:
    """Write ``chunks`` to a temporary file in ``path``'s folder and fsync it. Raises OSError
    (e.g. ENOSPC) with nothing left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return StagedFile(path, Path(tmp))


def atomic_write(path: Path, chunks: Iterable[bytes],
                 sync_folder: Callable[[Path], None] = fsync_dir) -> None:
    """Write ``chunks`` to ``path`` via a temporary file, fsync it, rename it, fsync the folder.

    Readers see either the old file or the complete new one, never a torn write, and after this
    returns the file is on stable storage. Raises OSError (e.g. ENOSPC) with nothing left behind.
    """
    staged = stage(path, chunks)
    try:
        staged.publish()
    finally:
        staged.discard()
    sync_folder(path.parent)


class InstanceStore:
    """Files of archived instances under one root folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # Series folders whose own entries (in the study folder, and it in the root) are known
        # durable: a new folder's parents are fsync'd once, not at every file.
        self._durable: set[Path] = set()

    def relative_path(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
        parts = (
            validate_uid(study_uid, "StudyInstanceUID"),
            validate_uid(series_uid, "SeriesInstanceUID"),
            validate_uid(sop_instance_uid, "SOPInstanceUID") + ".dcm",
        )
        return "/".join(parts)

    def absolute(self, relative: str) -> Path:
        return self.root / relative

    def write(self, relative: str, chunks: Iterable[bytes]) -> Path:
        path = self.absolute(relative)
        atomic_write(path, chunks, lambda folder: self.sync_folders([folder]))
        return path

    def stage(self, relative: str, chunks: Iterable[bytes]) -> StagedFile:
        return stage(self.absolute(relative), chunks)

    def sync_folders(self, folders: Iterable[Path]) -> None:
        """fsync each folder once (the renames into it become durable), and the parents of a
        series folder not yet known durable (a folder created since the start)."""
        for folder in set(folders):
            if folder not in self._durable:
                for parent in (folder.parent, folder.parent.parent):
                    fsync_dir(parent)
            fsync_dir(folder)
            self._durable.add(folder)
