"""DICOM UID validation: the only gate between network input and file-system paths."""

from __future__ import annotations

import re

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class InvalidUID(ValueError):
    """A UID that is not a syntactically valid DICOM UID (PS3.5 §9.1)."""


def validate_uid(value: object, what: str = "UID") -> str:
    """Return ``value`` as a clean UID string, or raise InvalidUID saying why.

    Accepts only digits and dots, at most 64 characters, no empty component and no leading or
    trailing dot, so a UID can be used as a path component without any escaping.
    """
    uid = str(value).strip().rstrip("\x00") if value is not None else ""
    if not uid:
        raise InvalidUID(f"{what} is missing")
    if len(uid) > 64:
        raise InvalidUID(f"{what} {uid[:70]!r} is longer than 64 characters")
    if not _UID.match(uid):
        raise InvalidUID(f"{what} {uid[:70]!r} is not digits separated by single dots")
    return uid
