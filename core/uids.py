"""DICOM UIDs: the validation gate between network input and file-system paths, and the one
place radpair makes new UIDs (under the site's organisation root, ``[dicom] uid_root``)."""

from __future__ import annotations

import re
from collections.abc import Iterable

# PS3.5 §9.1: components of digits without a leading zero (a lone 0 is allowed), one dot between.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
MAX_LENGTH = 64
# A root must leave this many digits for the generated part (about 53 bits), so results stay unique.
MIN_SUFFIX_DIGITS = 16
MAX_ROOT_LENGTH = MAX_LENGTH - 1 - MIN_SUFFIX_DIGITS
# pydicom's root, for a site that has not registered its own.
DEFAULT_ROOT = "1.2.826.0.1.3680043.8.498"

_root = DEFAULT_ROOT


class InvalidUID(ValueError):
    """A UID that is not a syntactically valid DICOM UID (PS3.5 §9.1)."""


def validate_uid(value: object, what: str = "UID") -> str:
    """Return ``value`` as a clean UID string, or raise InvalidUID saying why.

    The rules of the standard (and of ``pydicom.uid.UID.is_valid``): at most 64 characters, digits
    and single dots only, no empty component, no component with a leading zero. A UID that passes
    can be used as a path component without any escaping.
    """
    uid = str(value).strip().rstrip("\x00") if value is not None else ""
    if not uid:
        raise InvalidUID(f"{what} is missing")
    if len(uid) > MAX_LENGTH:
        raise InvalidUID(f"{what} {uid[:70]!r} is longer than {MAX_LENGTH} characters")
    if not _UID.match(uid):
        raise InvalidUID(f"{what} {uid[:70]!r} is not numbers without leading zeros separated by single dots")
    return uid


def validate_root(root: str) -> str:
    """An organisation root for new UIDs: a valid UID short enough to leave the generated part
    ``MIN_SUFFIX_DIGITS`` digits within 64 characters."""
    root = validate_uid(root, "UID root")
    if len(root) > MAX_ROOT_LENGTH:
        raise InvalidUID(f"UID root {root!r} has {len(root)} characters; at most {MAX_ROOT_LENGTH} leave "
                         f"{MIN_SUFFIX_DIGITS} digits for the generated part within {MAX_LENGTH}")
    return root


def set_uid_root(root: str) -> None:
    """Make ``root`` the root of every UID :func:`new_uid` makes in this process (set at start from
    the ``dicom.uid_root`` setting)."""
    global _root
    _root = validate_root(root)


def uid_root() -> str:
    return _root


def new_uid(entropy: Iterable[str] | None = None) -> str:
    """A new UID under the configured root: random, or derived from ``entropy`` (the same sources
    give the same UID, so a re-run of the same job writes the same objects)."""
    from pydicom.uid import generate_uid

    sources = list(entropy) if entropy is not None else None
    return str(generate_uid(prefix=_root + ".", entropy_srcs=sources))
