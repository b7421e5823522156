"""What each layer contributes to ``radpair status``: titled tables of plain values.

The listener, the pipeline and retraining each read their own tables (``status_tables``); the
command line renders them all the same way, so none of them imports the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StatusTable:
    title: str
    headers: tuple[str, ...]
    rows: list[tuple[object, ...]]


def short(text: str, width: int = 90) -> str:
    """One line of at most ``width`` characters (an error message in a table cell)."""
    line = " ".join((text or "").split())
    return line if len(line) <= width else line[: width - 1] + "…"
