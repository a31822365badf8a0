"""Human rendering helpers shared by command results (Rich tables, bars, numbers)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table


def fmt(value: Any, name: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if "yield" in name or "share" in name or name.endswith("rate"):
            return f"{100 * value:.2f}%"
        return f"{value:,.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def rows_table(rows: Sequence[dict[str, Any]], title: str | None = None, limit: int = 50) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    columns = list(rows[0]) if rows else []
    for c in columns:
        # Fold rather than cut: a number or an id cut to "0.9…" reads as a different value.
        table.add_column(c, justify="right" if rows and isinstance(rows[0][c], int | float) else "left",
                         overflow="fold")
    for row in rows[:limit]:
        table.add_row(*(fmt(row[c], c) for c in columns))
    if len(rows) > limit:
        table.caption = f"{len(rows) - limit:,} more rows (use --json for all)"
    return table


def print_rows(console: Console, rows: Sequence[dict[str, Any]], title: str, limit: int = 50) -> None:
    if not rows:
        console.print(f"[dim]{title}: none[/dim]")
        return
    console.print(rows_table(rows, title, limit))


def bar(share: float, width: int = 30) -> str:
    n = max(0, min(width, round(share * width)))
    return "█" * n + "·" * (width - n)
