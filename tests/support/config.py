"""The one builder of the tests' config.toml: a small run with every path inside one folder.

`write_config` starts from the small-run defaults below, applies the named arguments, then each
section override (a key set to None is left out), and writes `folder/config.toml`. `set_rps`
changes the request budget of a written config (a console re-reads it on restart).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

MONITOR = {
    "stall_after_s": 60,
    "check_interval_s": 1,
    "grace_s": 3,
    "max_restarts": 5,
    "restart_window_s": 600,
    "backoff_initial_s": 0.5,
    "backoff_max_s": 2,
}
DEVCHAIN = {"blocks_per_day": 48, "wallets": 12, "transfers_per_day": 40}

Section = dict[str, Any]


def toml_value(v: Any) -> str:
    """`v` as a TOML value (bool, int, float, str, Path or a list of them)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | Path):
        return json.dumps(str(v))
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {v!r} ({type(v).__name__})")


def render(sections: dict[str, Section]) -> str:
    """TOML text of `sections` ({name: {key: value}}); keys whose value is None are left out."""
    out: list[str] = []
    for name, keys in sections.items():
        out.append(f"[{name}]")
        out += [f"{k} = {toml_value(v)}" for k, v in keys.items() if v is not None]
        out.append("")
    return "\n".join(out)


def write_config(
    folder: Path,
    *,
    days: int,
    devchain_state: Path | None = None,
    shards: int = 2,
    seed: int = 7,
    rpc_urls: list[str] | None = None,
    rps: float = 1000.0,
    timeout_s: float = 5.0,
    start_date: str = "2022-12-18",
    max_block_range: int = 2000,
    data_dir: str = "backfill",
    monitor: Section | None = None,
    devchain: Section | None = None,
    backfill: Section | None = None,
    clickhouse: Section | None = None,
    gates: Section | None = None,
) -> Path:
    """Write `folder/config.toml` for a small run and return its path.

    `clickhouse` replaces the default `path = "clickhouse"` section (e.g. {"url": ...});
    `monitor`, `devchain` and `backfill` are merged over the defaults; `gates` adds a section.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sections: dict[str, Section] = {
        "rpc": {
            "urls": list(rpc_urls or []),
            "requests_per_second": float(rps),
            "timeout_s": float(timeout_s),
            "max_block_range": max_block_range,
        },
        "clickhouse": dict(clickhouse) if clickhouse is not None else {"path": "clickhouse"},
        "backfill": {
            "start_date": start_date,
            "days": days,
            "shards": shards,
            "confirmations": 2,
            "data_dir": data_dir,
            **(backfill or {}),
        },
        "monitor": {**MONITOR, **(monitor or {})},
        "devchain": {
            "state_dir": devchain_state or (folder / "devchain"),
            "seed": seed,
            **DEVCHAIN,
            **(devchain or {}),
        },
    }
    if gates is not None:
        sections["gates"] = dict(gates)
    path = folder / "config.toml"
    path.write_text(render(sections))
    return path


def set_rps(config: Path, rps: float) -> None:
    """Set `rpc.requests_per_second` of a config written by `write_config`."""
    text, n = re.subn(
        r"^requests_per_second = .*$",
        f"requests_per_second = {float(rps)!r}",
        config.read_text(),
        flags=re.M,
    )
    assert n == 1, f"no requests_per_second line in {config}"
    config.write_text(text)
