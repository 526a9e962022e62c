"""Markdown tables, as the report, the model card and the experiments page write them."""

from __future__ import annotations

from typing import Any, Iterable, Sequence


def cell(value: Any) -> str:
    """A value as one table cell: a `|` (a class folder may hold one) would end the cell, and a
    line break the row, so the one is escaped and the other becomes a space."""
    return " ".join(str(value).splitlines()).replace("|", "\\|")


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A GitHub-flavoured table's lines, and a blank line after it."""
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows] + [""]
