"""Load and validate `config.toml` plus environment overrides into frozen dataclasses.

Every section and key is optional; missing keys take the defaults below (also shipped, commented,
in the top-level `config.toml` and documented key by key in README.md). Anything wrong raises
`ConfigError`, whose message is one line naming the key, the bad value and what was expected, e.g.
`config.toml: backfill.days = 0: expected an integer >= 1`. URLs in messages are masked and the
ClickHouse password is never shown.
"""

from __future__ import annotations

import datetime
import math
import os
import re
import tomllib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from engine.masking import MASK, mask_url

CONFIG_FILENAME = "config.toml"

# Polymarket contracts on Polygon (checksummed here for readability; stored lowercased).
USDC_E = "0x2791Bca1f2de4661ED88A30C99A7a9449Aa84174"
PUSD = "0xC011a7E12a19f7B1f670d46F03B03f3342E82DFB"
CONDITIONAL_TOKENS = "0x4D97DCd97eC945f40cF65F87097ACe5EA0476045"
CTF_EXCHANGE = "0x4bFb41d5B3570DeFd03C39a9A4D8dE6Bd8B8982E"
NEGRISK_CTF_EXCHANGE = "0xC5d563A36AE78145C45a50134d48A1215220f80a"
NEGRISK_ADAPTER = "0xd91E80cF2E7be2e162c6513ceD06f1dD0dA35296"
CTF_EXCHANGE_V2 = "0xE111180000d2663C0091e4f400237545B87B996B"
NEGRISK_CTF_EXCHANGE_V2 = "0xe2222d279d744050d28e00520010520000310F59"

DEFAULT_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "scale_up": "plus",
        "scale_down": "minus",
        "set_shards": "s",
        "restart_worker": "r",
        "restart_stalled": "R",
        "optimize": "o",
        "pause": "p",
        "abort": "a",
        "open_log": "l",
        "filter_errors": "slash",
        "help": "question_mark",
        "quit": "q",
        "details": "d",
    }
)
# Taken by tmux (prefix), screen (prefix), terminals (XOFF) or unavailable without extended keys.
REFUSED_KEYS = ("ctrl+b", "ctrl+a", "ctrl+s", "ctrl+enter")
MAX_SHARDS = 256

ENV_RPC_URLS = "ETHEREUM_RPC_URLS"
ENV_CLICKHOUSE_URL = "CLICKHOUSE_URL"
ENV_CLICKHOUSE_PASSWORD = "CLICKHOUSE_PASSWORD"
ENV_SHARDS = "SHARDS"


class ConfigError(Exception):
    """A bad config value; `str(e)` is one line naming the key, the value and what was expected."""

    def __init__(
        self,
        key: str,
        value: object,
        expected: str,
        *,
        source: str | None = None,
        show_value: bool = True,
    ) -> None:
        self.key = key
        self.value = value  # already masked when it is a URL or a password
        self.expected = expected
        self.source = source
        prefix = f"{source}: " if source else ""
        if show_value:
            message = f"{prefix}{key} = {_show(value)}: {expected}"
        else:
            message = f"{prefix}{key}: {expected}"
        super().__init__(message.replace("\r", " ").replace("\n", " "))  # always one line


def _show(value: object) -> str:
    """Render a value as the operator wrote it (TOML-ish: strings quoted, booleans lowercase)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.date):
        return value.isoformat()
    return repr(value)


@dataclass(frozen=True)
class RpcConfig:
    urls: tuple[str, ...] = ()
    requests_per_second: float = 25.0
    timeout_s: float = 30.0
    max_block_range: int = 2000
    #: Every URL failing (no answer but errors) this long: the run is STALLED (headless exits 1).
    give_up_after_s: float = 600.0


@dataclass(frozen=True)
class ClickhouseConfig:
    url: str
    path: Path
    database: str = "polymarket"
    user: str = "default"
    password: str = field(default="", repr=False)
    port: int = 0
    #: Where the password came from, for errors: "env CLICKHOUSE_PASSWORD",
    #: "clickhouse.password", or "" (none given).
    password_from: str = ""


@dataclass(frozen=True)
class BackfillConfig:
    start_date: datetime.date
    days: int
    shards: int
    confirmations: int
    data_dir: Path
    failed_day_retry_s: float = 30.0


@dataclass(frozen=True)
class ContractsConfig:
    erc20_tokens: tuple[str, ...]
    erc20_counterparties: tuple[str, ...]
    erc1155: tuple[str, ...]
    exchanges: tuple[str, ...]
    collateral: str


@dataclass(frozen=True)
class MonitorConfig:
    stall_after_s: float = 300.0
    check_interval_s: float = 30.0
    grace_s: float = 10.0
    max_restarts: int = 5
    restart_window_s: float = 600.0
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 60.0


@dataclass(frozen=True)
class GatesConfig:
    interval_s: float = 1800.0
    high_conf_share_relaxed: float = 0.60
    high_conf_share_strict: float = 0.95
    conservation_tolerance: float = 0.02
    conservation_share_relaxed: float = 0.80
    conservation_share_strict: float = 0.95
    conservation_worst_strict: float = 0.05
    cash_neutrality_strict: float = 0.02
    unattributed_cash_relaxed: float = 0.01
    unattributed_cash_strict: float = 0.001
    win_rate_min: float = 0.40
    win_rate_max: float = 0.50
    # Memory budget of every rebuild / gate query in GiB (ClickHouse max_memory_usage; grouping,
    # sorting and joins spill to disk past a share of it). Default: default_max_memory_gib().
    max_memory_gib: float = 3.0


@dataclass(frozen=True)
class DevchainConfig:
    seed: int
    blocks_per_day: int
    wallets: int
    transfers_per_day: int
    markets_per_day: float
    state_dir: Path


@dataclass(frozen=True)
class ConsoleConfig:
    refresh_s: float = 2.0
    # action id -> Textual key name; read-only
    keys: Mapping[str, str] = field(default_factory=lambda: DEFAULT_KEYS, hash=False)


@dataclass(frozen=True)
class Config:
    path: (
        Path  # the config file, resolved (base_dir / config.toml when running on built-in defaults)
    )
    base_dir: Path  # relative paths in the file resolve against this folder
    rpc: RpcConfig
    clickhouse: ClickhouseConfig
    backfill: BackfillConfig
    contracts: ContractsConfig
    monitor: MonitorConfig
    gates: GatesConfig
    devchain: DevchainConfig
    console: ConsoleConfig
    from_file: bool = True  # False when no config file was found and the defaults are in use

    @property
    def uses_devchain(self) -> bool:
        """True when no RPC URL is configured: the product runs and backfills the devchain."""
        return not self.rpc.urls

    @property
    def log_dir(self) -> Path:
        """Where worker-K.log, monitor.log, gates.log, on-complete.log live."""
        return self.backfill.data_dir


def default_config_path() -> Path:
    """`./config.toml` in the current directory (used when no --config is given)."""
    return Path.cwd() / CONFIG_FILENAME


# --------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and return the config.

    `path` None means `./config.toml` when it exists, else the built-in defaults with base_dir =
    the current directory. `env` defaults to `os.environ` (overrides: README, Configuration).
    """
    env = os.environ if env is None else env
    if path is None:
        candidate = default_config_path()
        if candidate.is_file():
            return _load_file(candidate, CONFIG_FILENAME, env)
        base_dir = Path.cwd().resolve()
        return _build({}, base_dir / CONFIG_FILENAME, base_dir, None, env, from_file=False)
    given = Path(path).expanduser()
    return _load_file(given, str(path), env)


def _load_file(path: Path, shown: str, env: Mapping[str, str]) -> Config:
    try:
        raw = path.read_bytes()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(
            shown,
            None,
            f"cannot read config file ({reason}); expected a readable TOML file",
            show_value=False,
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            shown,
            None,
            f"not UTF-8 text (byte {e.start}); expected a UTF-8 TOML file",
            show_value=False,
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r"\(at line (\d+), column (\d+)\)\s*$", msg)
        if m:
            detail = msg[: m.start()].strip()
            where = f"line {m.group(1)}, column {m.group(2)}"
        else:
            detail, where = msg, "unknown position"
        raise ConfigError(
            shown,
            None,
            f"malformed TOML at {where}: {detail}; expected valid TOML",
            show_value=False,
        ) from None
    resolved = path.resolve()
    return _build(data, resolved, resolved.parent, shown, env, from_file=True)


class _Section:
    """Reads one [section] of the parsed TOML, checking each key once and rejecting unknown ones."""

    def __init__(self, name: str, data: dict[str, Any], source: str | None, keys: tuple[str, ...]):
        self.name = name
        self.data = data
        self.source = source
        for key in data:
            if key not in keys:
                raise ConfigError(
                    f"{name}.{key}",
                    None,
                    f"unknown key; expected one of {', '.join(keys)}",
                    source=source,
                    show_value=False,
                )

    def error(self, key: str, value: object, expected: str) -> ConfigError:
        return ConfigError(f"{self.name}.{key}", value, expected, source=self.source)

    def get(self, key: str, default: Any, check: Callable[[Any], Any], expected: str) -> Any:
        """Return check(value) for the key (default when absent); check raises ValueError if bad."""
        if key not in self.data:
            return default
        value = self.data[key]
        try:
            return check(value)
        except ValueError:
            raise self.error(key, value, expected) from None


# --- value checks: each returns the normalised value or raises ValueError --------------------


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError
        return v

    return check


def _int_text(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """Integer from an env string."""

    def check(text: str) -> int:
        t = text.strip()
        if not re.fullmatch(r"[+-]?\d+", t):
            raise ValueError
        return _int(lo, hi)(int(t))

    return check


def _num(
    lo: float | None = None, hi: float | None = None, lo_open: bool = False
) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError
        f = float(v)
        if not math.isfinite(f):
            raise ValueError
        if lo is not None and (f <= lo if lo_open else f < lo):
            raise ValueError
        if hi is not None and f > hi:
            raise ValueError
        return f

    return check


def _str(nonempty: bool = False) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if not isinstance(v, str) or (nonempty and not v):
            raise ValueError
        return v

    return check


def _str_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError
    return tuple(v)


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _identifier(v: Any) -> str:
    if not isinstance(v, str) or not _IDENT.fullmatch(v):
        raise ValueError
    return v


def _address(v: Any) -> str:
    if not isinstance(v, str) or not _ADDRESS.fullmatch(v):
        raise ValueError
    return v.lower()


def _date(v: Any) -> datetime.date:
    if isinstance(v, datetime.datetime) or isinstance(v, datetime.time):
        raise ValueError
    if isinstance(v, datetime.date):
        return v
    if not isinstance(v, str) or not _DATE.fullmatch(v.strip()):
        raise ValueError
    return datetime.date.fromisoformat(v.strip())  # ValueError on 2022-13-45


def _is_http_url(url: str, host_port_only: bool = False) -> bool:
    if not url or any(c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if host_port_only:
        no_userinfo = "@" not in parts.netloc
        return no_userinfo and parts.path in ("", "/") and not parts.query and not parts.fragment
    return True


def _path(base_dir: Path) -> Callable[[Any], Path]:
    def check(v: Any) -> Path:
        if not isinstance(v, str) or not v.strip() or "\x00" in v:
            raise ValueError
        p = Path(v).expanduser()
        return (p if p.is_absolute() else base_dir / p).resolve()

    return check


# Key names as Textual spells them, so "?" and "question_mark" count as the same key.
_KEY_NAME_REPLACEMENTS = {
    "solidus": "slash",
    "reverse_solidus": "backslash",
    "commercial_at": "at",
    "hyphen_minus": "minus",
    "plus_sign": "plus",
    "low_line": "underscore",
}


def _key_name(v: Any) -> str:
    if not isinstance(v, str) or not v or any(c.isspace() for c in v) or "," in v:
        raise ValueError
    if len(v) == 1 and not v.isalnum():
        try:
            name = unicodedata.name(v).lower().replace("-", "_").replace(" ", "_")
        except ValueError:
            return v
        return _KEY_NAME_REPLACEMENTS.get(name, name)
    return v


# --------------------------------------------------------------------------------------------
# Building the Config

_SECTIONS: dict[str, tuple[str, ...]] = {
    "rpc": ("urls", "requests_per_second", "timeout_s", "max_block_range", "give_up_after_s"),
    "clickhouse": ("url", "path", "port", "database", "user", "password"),
    "backfill": (
        "start_date",
        "days",
        "shards",
        "confirmations",
        "data_dir",
        "failed_day_retry_s",
    ),
    "contracts": ("erc20_tokens", "erc20_counterparties", "erc1155", "exchanges", "collateral"),
    "monitor": (
        "stall_after_s",
        "check_interval_s",
        "grace_s",
        "max_restarts",
        "restart_window_s",
        "backoff_initial_s",
        "backoff_max_s",
    ),
    "gates": (
        "interval_s",
        "high_conf_share_relaxed",
        "high_conf_share_strict",
        "conservation_tolerance",
        "conservation_share_relaxed",
        "conservation_share_strict",
        "conservation_worst_strict",
        "cash_neutrality_strict",
        "unattributed_cash_relaxed",
        "unattributed_cash_strict",
        "win_rate_min",
        "win_rate_max",
        "max_memory_gib",
    ),
    "devchain": (
        "seed",
        "blocks_per_day",
        "wallets",
        "transfers_per_day",
        "markets_per_day",
        "state_dir",
    ),
    "console": ("refresh_s",),
    "keys": tuple(DEFAULT_KEYS),
}

_GT0 = "expected a number > 0"
_SHARE = "expected a number between 0 and 1"
_ADDRESS_EXPECTED = "expected an address: 0x followed by 40 hex digits"


def _env(env: Mapping[str, str], name: str) -> str | None:
    """An env override, or None when unset or blank (blank counts as unset)."""
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value


def _build(
    data: dict[str, Any],
    path: Path,
    base_dir: Path,
    source: str | None,
    env: Mapping[str, str],
    *,
    from_file: bool,
) -> Config:
    for name, value in data.items():
        if name not in _SECTIONS:
            raise ConfigError(
                name,
                None,
                f"unknown section; expected one of {', '.join(_SECTIONS)}",
                source=source,
                show_value=False,
            )
        if not isinstance(value, dict):
            raise ConfigError(name, value, f"expected a table [{name}]", source=source)

    def section(name: str) -> _Section:
        return _Section(name, data.get(name, {}), source, _SECTIONS[name])

    return Config(
        path=path,
        base_dir=base_dir,
        rpc=_rpc(section("rpc"), env),
        clickhouse=_clickhouse(section("clickhouse"), base_dir, env),
        backfill=_backfill(section("backfill"), base_dir, env),
        contracts=_contracts(section("contracts")),
        monitor=_monitor(section("monitor")),
        gates=_gates(section("gates")),
        devchain=_devchain(section("devchain"), base_dir),
        console=_console(section("console"), section("keys")),
        from_file=from_file,
    )


def _rpc(s: _Section, env: Mapping[str, str]) -> RpcConfig:
    url_expected = "expected an http(s):// URL"
    urls: tuple[str, ...] = ()
    if "urls" in s.data:
        raw = s.data["urls"]
        if not isinstance(raw, list):
            raise s.error("urls", _mask_value(raw), "expected a list of http(s):// URLs")
        for i, url in enumerate(raw):
            if not isinstance(url, str) or not _is_http_url(url.strip()):
                raise ConfigError(f"rpc.urls[{i}]", _mask_value(url), url_expected, source=s.source)
        urls = tuple(u.strip() for u in raw)
    env_urls = _env(env, ENV_RPC_URLS)
    if env_urls is not None:
        items = [u.strip() for u in env_urls.split(",") if u.strip()]
        for url in items:
            if not _is_http_url(url):
                raise ConfigError(
                    f"env {ENV_RPC_URLS}",
                    mask_url(url),
                    "expected comma-separated http(s):// URLs",
                )
        urls = tuple(items)
    return RpcConfig(
        urls=urls,
        requests_per_second=s.get("requests_per_second", 25.0, _num(0, lo_open=True), _GT0),
        timeout_s=s.get("timeout_s", 30.0, _num(0, lo_open=True), _GT0),
        max_block_range=s.get("max_block_range", 2000, _int(1), "expected an integer >= 1"),
        give_up_after_s=s.get("give_up_after_s", 600.0, _num(0, lo_open=True), _GT0),
    )


def _mask_value(value: object) -> object:
    """Mask URL-looking strings (and strings inside lists) before they reach a message."""
    if isinstance(value, str):
        return mask_url(value) if "://" in value or "@" in value or "?" in value else value
    if isinstance(value, list):
        return [_mask_value(v) for v in value]
    return value


def _store_url_expected(raw: object) -> str:
    """What clickhouse.url must look like; a URL carrying a user or password is told where
    they go instead."""
    expected = "expected empty (the local store server) or http(s)://host[:port]"
    try:
        userinfo = isinstance(raw, str) and "@" in urlsplit(raw.strip()).netloc
    except ValueError:
        userinfo = False
    if userinfo:
        expected += (
            " without a user or password in it: put them in clickhouse.user and "
            f"clickhouse.password (or env {ENV_CLICKHOUSE_PASSWORD})"
        )
    return expected


def _clickhouse(s: _Section, base_dir: Path, env: Mapping[str, str]) -> ClickhouseConfig:
    url = ""
    if "url" in s.data:
        raw = s.data["url"]
        if not isinstance(raw, str) or (raw.strip() and not _is_http_url(raw.strip(), True)):
            raise s.error("url", _mask_value(raw), _store_url_expected(raw))
        url = raw.strip()
    env_url = _env(env, ENV_CLICKHOUSE_URL)
    if env_url is not None:
        if not _is_http_url(env_url.strip(), True):
            raise ConfigError(
                f"env {ENV_CLICKHOUSE_URL}", mask_url(env_url.strip()), _store_url_expected(env_url)
            )
        url = env_url.strip()
    password = ""
    password_from = ""
    if "password" in s.data:
        if not isinstance(s.data["password"], str):
            raise s.error("password", MASK, "expected a string")
        password = s.data["password"]
        password_from = "clickhouse.password" if password else ""
    env_password = env.get(ENV_CLICKHOUSE_PASSWORD)
    if env_password:
        password = env_password
        password_from = f"env {ENV_CLICKHOUSE_PASSWORD}"
    return ClickhouseConfig(
        url=url.rstrip("/"),
        path=s.get("path", _path(base_dir)("data/clickhouse"), _path(base_dir), "expected a path"),
        database=s.get(
            "database",
            "polymarket",
            _identifier,
            "expected an identifier: letters, digits and _, not starting with a digit",
        ),
        user=s.get("user", "default", _str(nonempty=True), "expected a non-empty string"),
        password=password,
        port=s.get("port", 0, _int(0, 65535), "expected an integer 0..65535 (0: a free port)"),
        password_from=password_from,
    )


def _backfill(s: _Section, base_dir: Path, env: Mapping[str, str]) -> BackfillConfig:
    shards_expected = f"expected an integer >= 1 and <= {MAX_SHARDS}"
    shards = s.get("shards", 8, _int(1, MAX_SHARDS), shards_expected)
    env_shards = _env(env, ENV_SHARDS)
    if env_shards is not None:
        try:
            shards = _int_text(1, MAX_SHARDS)(env_shards)
        except ValueError:
            raise ConfigError(f"env {ENV_SHARDS}", env_shards, shards_expected) from None
    return BackfillConfig(
        start_date=s.get(
            "start_date",
            datetime.date(2022, 12, 18),
            _date,
            "expected a date YYYY-MM-DD (UTC)",
        ),
        days=s.get("days", 1048, _int(1), "expected an integer >= 1"),
        shards=shards,
        confirmations=s.get("confirmations", 64, _int(0), "expected an integer >= 0"),
        data_dir=s.get(
            "data_dir", _path(base_dir)("data/backfill"), _path(base_dir), "expected a path"
        ),
        failed_day_retry_s=s.get(
            "failed_day_retry_s", 30.0, _num(0, lo_open=True), "expected a number of seconds > 0"
        ),
    )


def _address_list(
    s: _Section, key: str, default: tuple[str, ...], nonempty: bool
) -> tuple[str, ...]:
    if key not in s.data:
        return tuple(a.lower() for a in default)
    raw = s.data[key]
    if not isinstance(raw, list):
        raise s.error(key, raw, "expected a list of addresses (0x followed by 40 hex digits)")
    if nonempty and not raw:
        raise s.error(key, raw, "expected at least one address")
    out: list[str] = []
    for i, item in enumerate(raw):
        try:
            addr = _address(item)
        except ValueError:
            raise ConfigError(
                f"{s.name}.{key}[{i}]", item, _ADDRESS_EXPECTED, source=s.source
            ) from None
        if addr in out:
            raise ConfigError(
                f"{s.name}.{key}[{i}]",
                item,
                "expected each address once (duplicate)",
                source=s.source,
            )
        out.append(addr)
    return tuple(out)


def _contracts(s: _Section) -> ContractsConfig:
    return ContractsConfig(
        erc20_tokens=_address_list(s, "erc20_tokens", (USDC_E, PUSD), nonempty=True),
        erc20_counterparties=_address_list(
            s,
            "erc20_counterparties",
            (
                CONDITIONAL_TOKENS,
                CTF_EXCHANGE,
                NEGRISK_CTF_EXCHANGE,
                NEGRISK_ADAPTER,
                CTF_EXCHANGE_V2,
                NEGRISK_CTF_EXCHANGE_V2,
            ),
            nonempty=False,
        ),
        erc1155=_address_list(s, "erc1155", (CONDITIONAL_TOKENS,), nonempty=True),
        exchanges=_address_list(
            s,
            "exchanges",
            (CTF_EXCHANGE, NEGRISK_CTF_EXCHANGE, CTF_EXCHANGE_V2, NEGRISK_CTF_EXCHANGE_V2),
            nonempty=False,
        ),
        collateral=s.get("collateral", USDC_E.lower(), _address, _ADDRESS_EXPECTED),
    )


def _monitor(s: _Section) -> MonitorConfig:
    gt0 = _num(0, lo_open=True)
    m = MonitorConfig(
        stall_after_s=s.get("stall_after_s", 300.0, gt0, _GT0),
        check_interval_s=s.get("check_interval_s", 30.0, gt0, _GT0),
        grace_s=s.get("grace_s", 10.0, gt0, _GT0),
        max_restarts=s.get("max_restarts", 5, _int(1), "expected an integer >= 1"),
        restart_window_s=s.get("restart_window_s", 600.0, gt0, _GT0),
        backoff_initial_s=s.get("backoff_initial_s", 2.0, gt0, _GT0),
        backoff_max_s=s.get("backoff_max_s", 60.0, gt0, _GT0),
    )
    if m.backoff_max_s < m.backoff_initial_s:
        raise s.error(
            "backoff_max_s",
            s.data.get("backoff_max_s", m.backoff_max_s),
            f"expected a number >= monitor.backoff_initial_s ({m.backoff_initial_s:g})",
        )
    return m


MIN_MEMORY_GIB = 0.25
MAX_MEMORY_GIB = 4096.0


def default_max_memory_gib(total_bytes: int | None = None) -> float:
    """A quarter of this machine's memory, at most 3 GiB and at least 0.5 GiB (0.1 GiB steps).

    3 GiB per query keeps the store's whole RSS (caches included) under 4 GiB at any volume.
    """
    if total_bytes is None:
        import psutil

        total_bytes = int(psutil.virtual_memory().total)
    return round(min(3.0, max(0.5, total_bytes / 4 / 2**30)), 1)


def _memory_gib(v: Any) -> float:
    if v == "auto":
        return default_max_memory_gib()
    return _num(MIN_MEMORY_GIB, MAX_MEMORY_GIB)(v)


def _gates(s: _Section) -> GatesConfig:
    share = _num(0.0, 1.0)
    defaults = GatesConfig()
    values: dict[str, float] = {
        "interval_s": s.get("interval_s", defaults.interval_s, _num(0, lo_open=True), _GT0)
    }
    for key in _SECTIONS["gates"][1:]:
        if key == "max_memory_gib":
            values[key] = s.get(
                key,
                default_max_memory_gib(),
                _memory_gib,
                f'expected "auto" or a number of GiB between {MIN_MEMORY_GIB:g} and '
                f"{MAX_MEMORY_GIB:g}",
            )
            continue
        values[key] = s.get(key, getattr(defaults, key), share, _SHARE)
    g = GatesConfig(**values)
    if g.win_rate_min > g.win_rate_max:
        key = "win_rate_max" if "win_rate_max" in s.data else "win_rate_min"
        raise s.error(
            key,
            getattr(g, key),
            f"expected gates.win_rate_min ({g.win_rate_min:g}) <= "
            f"gates.win_rate_max ({g.win_rate_max:g})",
        )
    return g


def _devchain(s: _Section, base_dir: Path) -> DevchainConfig:
    return DevchainConfig(
        seed=s.get("seed", 7, _int(0), "expected an integer >= 0"),
        blocks_per_day=s.get("blocks_per_day", 144, _int(1), "expected an integer >= 1"),
        wallets=s.get("wallets", 40, _int(2), "expected an integer >= 2"),
        transfers_per_day=s.get("transfers_per_day", 100, _int(0), "expected an integer >= 0"),
        markets_per_day=s.get("markets_per_day", 0.5, _num(0.0), "expected a number >= 0"),
        state_dir=s.get(
            "state_dir", _path(base_dir)("data/devchain"), _path(base_dir), "expected a path"
        ),
    )


def _console(s: _Section, keys: _Section) -> ConsoleConfig:
    bindings = dict(DEFAULT_KEYS)
    for action in DEFAULT_KEYS:
        if action not in keys.data:
            continue
        raw = keys.data[action]
        try:
            name = _key_name(raw)
        except ValueError:
            raise keys.error(
                action, raw, "expected a key name such as 'x', 'R', 'f5' or 'ctrl+x' (no spaces)"
            ) from None
        if name.lower() in REFUSED_KEYS:
            raise keys.error(
                action,
                raw,
                f"expected a key other than {', '.join(REFUSED_KEYS)} "
                "(taken by tmux/screen/terminals)",
            )
        bindings[action] = name
    owners: dict[str, str] = {}
    for action, name in bindings.items():
        if name in owners:
            # Name the id the operator changed (prefer one set in the file).
            first, second = owners[name], action
            culprit, other = (first, second) if first in keys.data else (second, first)
            raise keys.error(
                culprit,
                keys.data.get(culprit, name),
                f"expected a key not already bound to {other}",
            )
        owners[name] = action
    return ConsoleConfig(
        refresh_s=s.get("refresh_s", 2.0, _num(0.1), "expected a number >= 0.1"),
        keys=MappingProxyType(bindings),
    )
