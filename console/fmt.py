"""Small text formatters shared by the console's panels (numbers, bytes, durations, ages)."""

from __future__ import annotations

import math

_SUFFIXES = ("", "k", "M", "G", "T", "P")


def num(n: int | float | None) -> str:
    """12345678 -> '12,345,678'; None -> '-'."""
    if n is None:
        return "-"
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.1f}"
    return f"{int(n):,}"


def short(n: int | float | None) -> str:
    """Compact count for narrow columns: 999 -> '999', 12345 -> '12.3k', 12_345_678 -> '12.3M'."""
    if n is None:
        return "-"
    v = float(n)
    if abs(v) < 1000:
        return f"{int(v)}" if v.is_integer() else f"{v:.1f}"
    exp = min(int(math.log10(abs(v)) // 3), len(_SUFFIXES) - 1)
    scaled = v / 1000**exp
    text = f"{scaled:.1f}" if scaled < 100 else f"{scaled:.0f}"
    return f"{text}{_SUFFIXES[exp]}"


def size(n: int | None) -> str:
    """Bytes in binary units: 1536 -> '1.5 KiB'."""
    if n is None:
        return "-"
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{int(v)} B" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TiB"  # pragma: no cover


def duration(s: float | None) -> str:
    """Seconds -> 'H:MM:SS' ('3d 04:05:06' past a day); None -> '-'."""
    if s is None:
        return "-"
    total = max(0, int(s))
    days, rest = divmod(total, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    if days:
        return f"{days}d {h:02d}:{m:02d}:{sec:02d}"
    return f"{h}:{m:02d}:{sec:02d}"


def age(s: float | None) -> str:
    """Seconds -> '42s', '7m', '3h', '2d'; None -> '-'."""
    if s is None:
        return "-"
    s = max(0.0, s)
    if s < 60:
        return f"{int(s)}s"
    if s < 3600:
        return f"{int(s // 60)}m"
    if s < 86400:
        return f"{int(s // 3600)}h"
    return f"{int(s // 86400)}d"


def clip(text: str, width: int) -> str:
    """One line of at most `width` characters, with an ellipsis when cut."""
    line = " ".join(text.split())
    if width <= 0:
        return ""
    return line if len(line) <= width else line[: max(0, width - 1)] + "…"


_SHORT_TABLES = {"condition_resolutions": "resolutions", "token_registrations": "registrations"}


def table_name(table: str) -> str:
    """'erc20_transfers_staging' -> 'erc20', 'condition_resolutions' -> 'resolutions'."""
    return _SHORT_TABLES.get(table, table.removesuffix("_transfers_staging"))


def ranges(ids: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    out: list[str] = []
    s = sorted(set(ids))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        out.append(str(s[i]) if i == j else f"{s[i]}-{s[j]}")
        i = j + 1
    return ",".join(out)


def elide_path(text: str, width: int) -> str:
    """Shorten a path-like text from the left to `width` ('…/data/clickhouse'), keeping its end."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return "…" + text[len(text) - width + 1 :]
