"""Human rendering helpers shared by command results (Rich tables, bars, numbers).

Tables are laid out for the terminal they print on: short columns (ids, numbers, times) never
wrap, long text folds into the width that is left, and when even the short columns do not fit
(an 80-column terminal), short columns are left out from the right and the caption names them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

# Cells up to this long are kept on one line; longer ones (descriptions) fold.
SHORT = 30
# Rich draws a border and one space of padding either side of each cell.
CELL_OVERHEAD = 3


def fmt(value: Any, name: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if "yield" in name or "share" in name or name.endswith("rate"):
            return f"{100 * value:.2f}%"
        return f"{value:,.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def number(v: Any, digits: int = 3) -> str:
    """Numbers for people (pages and reports): thousands separators, a few significant digits, no
    16-digit floats."""
    if v is None or (isinstance(v, float) and v != v):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}g}"
    return str(v)


def rows_table(rows: Sequence[dict[str, Any]], title: str | None = None, limit: int = 50,
               width: int | None = None, headers: dict[str, str] | None = None) -> Table:
    """`rows` as a table fitted to `width` columns of terminal; `headers` renames columns."""
    headers = headers or {}
    shown = rows[:limit]
    cells = {c: [fmt(r.get(c), c) for r in shown] for c in (list(rows[0]) if rows else [])}
    # A column with nothing in it (a note no row needs) only takes room from the others.
    columns = [c for c, v in cells.items() if any(v)] or list(cells)[:1]
    head = {c: headers.get(c, c.replace("_", " ")) for c in columns}
    longest = {c: max([len(head[c]), *map(len, cells[c])]) for c in columns}
    short = {c for c in columns if longest[c] <= SHORT}
    hidden: list[str] = []
    if width:
        # Room a column needs: its whole width when short, at least a readable 16 when it folds.
        def need(cols: list[str]) -> int:
            return sum(min(longest[c], 16) if c not in short else longest[c] for c in cols) + \
                CELL_OVERHEAD * len(cols) + 1

        # Leave out short columns from the right first: the text that folds is usually what the row says.
        while len(columns) > 1 and need(columns) > width:
            droppable = [c for c in columns[1:] if c in short] or columns[1:]
            drop = droppable[-1]
            columns.remove(drop)
            hidden.insert(0, drop)
    table = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        numeric = bool(rows) and isinstance(rows[0][c], int | float) and not isinstance(rows[0][c], bool)
        if c in short:
            # Never cut or wrap an id, a number or a time: "0.9…" reads as another value.
            table.add_column(head[c], justify="right" if numeric else "left", no_wrap=True, overflow="fold")
        else:
            table.add_column(head[c], justify="left", overflow="fold", ratio=1, min_width=12)
    for i in range(len(shown)):
        table.add_row(*(cells[c][i] for c in columns))
    notes = []
    if len(rows) > limit:
        notes.append(f"{len(rows) - limit:,} more rows (use --json for all)")
    if hidden:
        notes.append(f"not shown at this width: {', '.join(head[c] for c in hidden)} (wider terminal or --json)")
    if notes:
        table.caption = "; ".join(notes)
    return table


def print_rows(console: Console, rows: Sequence[dict[str, Any]], title: str, limit: int = 50,
               headers: dict[str, str] | None = None) -> None:
    if not rows:
        console.print(f"[dim]{title}: none[/dim]")
        return
    console.print(rows_table(rows, title, limit, width=console.width, headers=headers))


def bar(share: float, width: int = 30) -> str:
    n = max(0, min(width, round(share * width)))
    return "█" * n + "·" * (width - n)


def setting(v: float | None, step: float | None = None) -> str:
    """A setting to the precision its step makes meaningful (4 significant digits without one)."""
    if v is None:
        return "—"
    if step:
        decimals = max(0, math.ceil(-math.log10(step) - 1e-9))
        return f"{v:,.{decimals}f}"
    return f"{v:.4g}"


def recipe_rows(start: dict[str, float], adopted: dict[str, float] | None,
                settings: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """A recipe before and after, one row per setting, rounded to its step, with its bounds and unit.

    `settings` are the profile's recipe settings by name (station, unit, low, high, default, step)."""
    adopted = adopted or {}
    rows = []
    for name in dict.fromkeys([*settings, *start, *adopted]):
        s = settings.get(name, {})
        step = s.get("step")
        before = start.get(name, s.get("default"))
        after = adopted.get(name, before)
        if after is None or before is None:
            change = "—"
        elif abs(after - before) < (step or 1e-9) / 2:
            change = "unchanged"
        else:
            change = "+" * (after > before) + setting(after - before, step)
        unit = f" {s['unit']}" if s.get("unit") else ""
        bounds = f"{setting(s.get('low'), step)} … {setting(s.get('high'), step)}{unit}" if s else "—"
        # the station last: on a narrow terminal it is the column left out, never the bounds
        rows.append({"setting": name, "before": setting(before, step), "after": setting(after, step),
                     "change": change, "bounds": bounds, "station": s.get("station") or "—"})
    return rows


def recipe_moves(recipe: dict[str, float], start: dict[str, float], settings: dict[str, dict[str, Any]]) -> str:
    """The settings a trial moved from the start, each rounded to its step: `speed 43, pressure 6.9`."""
    moved = [f"{k} {setting(v, settings.get(k, {}).get('step'))}" for k, v in recipe.items()
             if k not in start or abs(v - start[k]) > 1e-9]
    return ", ".join(moved) or "the starting recipe"


def recipe_text(recipe: dict[str, Any] | None, settings: dict[str, dict[str, Any]] | None = None) -> str:
    """`{'speed': 36.435474}` as a person writes it: `speed 36.44` (to the setting's step when known)."""
    if not recipe:
        return "—"
    settings = settings or {}
    return ", ".join(f"{k} {setting(v, settings.get(k, {}).get('step'))}" if isinstance(v, int | float)
                     and not isinstance(v, bool) else f"{k} {v}" for k, v in recipe.items())
