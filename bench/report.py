"""Plain-text and Markdown tables for benchmark results."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

__all__ = ["format_number", "format_ratio", "markdown_table", "text_table"]


def format_number(value: float, unit: str) -> str:
    """Rates as whole numbers with thousands separators; times with about three digits."""
    if unit.endswith("/s") or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    if value == 0:
        return "0"
    # Three significant digits below 1: 0.487, 0.0431, 0.00512.
    return f"{value:.{2 - math.floor(math.log10(abs(value)))}f}"


def format_ratio(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}x"
    if value >= 10:
        return f"{value:.1f}x"
    return f"{value:.2f}x"


def _is_numeric(cell: str) -> bool:
    return bool(cell) and (cell[0].isdigit() or cell[0] in "-.")


def _numeric_columns(
    header: Sequence[str], rows: Sequence[Sequence[str]], text: Collection[int]
) -> list[bool]:
    return [
        i not in text and all(_is_numeric(row[i]) or row[i] == "" for row in rows)
        for i in range(len(header))
    ]


def text_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], text: Collection[int] = ()
) -> str:
    """Aligned columns: numbers right-aligned, text left-aligned, a rule under the header.
    ``text``: indexes of columns left-aligned even when every cell looks like a number."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    numeric = _numeric_columns(header, rows, text)

    def line(cells: Sequence[str]) -> str:
        parts = []
        for cell, width, right in zip(cells, widths, numeric, strict=True):
            parts.append(cell.rjust(width) if right else cell.ljust(width))
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], text: Collection[int] = ()
) -> str:
    """A GitHub-flavoured Markdown table; numeric columns are right-aligned (not ``text``)."""
    numeric = _numeric_columns(header, rows, text)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    align = "|" + "|".join("---:" if right else "---" for right in numeric) + "|"
    return "\n".join([line(header), align, *(line(row) for row in rows)])
