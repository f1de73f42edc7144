"""Unit tests for engine.config.load_config: defaults, env overrides, paths, every bad case."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest

from engine.config import (
    DEFAULT_KEYS,
    Config,
    ConfigError,
    default_config_path,
    load_config,
)

REPO = Path(__file__).resolve().parent.parent
USDC_E = "0x2791bca1f2de4661ed88a30c99a7a9449aa84174"
CTF = "0x4d97dcd97ec945f40cf65f87097ace5ea0476045"


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    message = str(info.value)
    assert "\n" not in message
    return info.value


# --- defaults ---------------------------------------------------------------------------------


def check_defaults(cfg: Config, base: Path) -> None:
    assert cfg.base_dir == base
    assert cfg.rpc.urls == ()
    assert cfg.uses_devchain
    assert cfg.rpc.requests_per_second == 25.0
    assert cfg.rpc.timeout_s == 30.0
    assert cfg.rpc.max_block_range == 2000
    assert cfg.rpc.give_up_after_s == 600.0
    assert cfg.clickhouse.url == ""
    assert cfg.clickhouse.path == base / "data/clickhouse"
    assert cfg.clickhouse.database == "polymarket"
    assert cfg.clickhouse.user == "default"
    assert cfg.clickhouse.password == ""
    assert cfg.backfill.start_date == datetime.date(2022, 12, 18)
    assert cfg.backfill.days == 1048
    assert cfg.backfill.shards == 8
    assert cfg.backfill.confirmations == 64
    assert cfg.backfill.failed_day_retry_s == 30.0
    assert cfg.backfill.data_dir == base / "data/backfill"
    assert cfg.log_dir == cfg.backfill.data_dir
    assert cfg.contracts.erc20_tokens == (USDC_E, "0xc011a7e12a19f7b1f670d46f03b03f3342e82dfb")
    assert len(cfg.contracts.erc20_counterparties) == 6
    assert cfg.contracts.erc20_counterparties[0] == CTF
    assert cfg.contracts.erc1155 == (CTF,)
    assert cfg.contracts.exchanges == (
        "0x4bfb41d5b3570defd03c39a9a4d8de6bd8b8982e",
        "0xc5d563a36ae78145c45a50134d48a1215220f80a",
        "0xe111180000d2663c0091e4f400237545b87b996b",
        "0xe2222d279d744050d28e00520010520000310f59",
    )
    assert cfg.contracts.collateral == USDC_E
    m = cfg.monitor
    assert (m.stall_after_s, m.check_interval_s, m.grace_s) == (300, 30, 10)
    assert (m.max_restarts, m.restart_window_s, m.backoff_initial_s, m.backoff_max_s) == (
        5,
        600,
        2,
        60,
    )
    g = cfg.gates
    assert g.interval_s == 1800
    assert (g.high_conf_share_relaxed, g.high_conf_share_strict) == (0.60, 0.95)
    assert g.conservation_tolerance == 0.02
    assert (g.conservation_share_relaxed, g.conservation_share_strict) == (0.80, 0.95)
    assert (g.conservation_worst_strict, g.cash_neutrality_strict) == (0.05, 0.02)
    assert (g.unattributed_cash_relaxed, g.unattributed_cash_strict) == (0.01, 0.001)
    assert (g.win_rate_min, g.win_rate_max) == (0.40, 0.50)
    d = cfg.devchain
    assert (d.seed, d.blocks_per_day, d.wallets, d.transfers_per_day) == (7, 144, 40, 100)
    assert d.markets_per_day == 0.5
    assert d.state_dir == base / "data/devchain"
    assert cfg.console.refresh_s == 2.0
    assert dict(cfg.console.keys) == dict(DEFAULT_KEYS)
    assert cfg.console.keys["help"] == "question_mark"


def test_builtin_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_config_path() == tmp_path / "config.toml"
    cfg = load_config(env={})
    assert not cfg.from_file
    assert cfg.path == tmp_path.resolve() / "config.toml"
    check_defaults(cfg, tmp_path.resolve())


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), env={})
    assert cfg.from_file
    check_defaults(cfg, tmp_path.resolve())


def test_shipped_config_toml_equals_the_defaults(tmp_path: Path) -> None:
    """The operator file at the top level lists every key with its default value."""
    shipped = REPO / "config.toml"
    copy = write(tmp_path, shipped.read_text())
    check_defaults(load_config(copy, env={}), tmp_path.resolve())
    text = shipped.read_text()
    from engine.config import _SECTIONS

    for section, keys in _SECTIONS.items():
        assert f"[{section}]" in text
        for key in keys:
            assert f"\n{key} = " in text, f"{section}.{key} missing from config.toml"


def test_dot_config_toml_is_used_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "[backfill]\ndays = 3\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(env={})
    assert cfg.from_file and cfg.backfill.days == 3
    assert cfg.path == (tmp_path / "config.toml").resolve()


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDS", "5")
    assert load_config(write(tmp_path, "")).backfill.shards == 5


def test_values_from_file(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            """
[rpc]
urls = ["https://a.example/v2/key", "http://127.0.0.1:8545"]
requests_per_second = 10   # int accepted for a float
[clickhouse]
url = "http://ch.example:8123/"
[backfill]
start_date = 2023-01-05    # TOML date value
days = 6
shards = 3
confirmations = 0
[contracts]
erc20_tokens = ["0x2791BCA1F2DE4661ED88A30C99A7A9449AA84174"]
erc20_counterparties = []
[keys]
help = "?"
pause = "space"
[console]
refresh_s = 0.1
""",
        ),
        env={},
    )
    assert cfg.rpc.urls == ("https://a.example/v2/key", "http://127.0.0.1:8545")
    assert not cfg.uses_devchain
    assert cfg.rpc.requests_per_second == 10.0 and isinstance(cfg.rpc.requests_per_second, float)
    assert cfg.clickhouse.url == "http://ch.example:8123"
    assert cfg.backfill.start_date == datetime.date(2023, 1, 5)
    assert (cfg.backfill.days, cfg.backfill.shards, cfg.backfill.confirmations) == (6, 3, 0)
    assert cfg.contracts.erc20_tokens == (USDC_E,)
    assert cfg.contracts.erc20_counterparties == ()
    assert cfg.console.keys["help"] == "question_mark"
    assert cfg.console.keys["pause"] == "space"
    assert cfg.console.refresh_s == 0.1


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), env={})
    with pytest.raises(AttributeError):
        cfg.backfill.days = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.console.keys["quit"] = "x"  # type: ignore[index]


# --- env overrides ----------------------------------------------------------------------------


def test_env_rpc_urls_override(tmp_path: Path) -> None:
    path = write(tmp_path, '[rpc]\nurls = ["https://file.example"]\n')
    env = {"ETHEREUM_RPC_URLS": " https://a.example/x , http://b.example:8545,"}
    cfg = load_config(path, env=env)
    assert cfg.rpc.urls == ("https://a.example/x", "http://b.example:8545")
    # blank counts as unset: the file's value stays
    assert load_config(path, env={"ETHEREUM_RPC_URLS": " "}).rpc.urls == ("https://file.example",)


def test_env_clickhouse_url_override(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), env={"CLICKHOUSE_URL": "https://ch.example:8443"})
    assert cfg.clickhouse.url == "https://ch.example:8443"


def test_env_clickhouse_password_override(tmp_path: Path) -> None:
    path = write(tmp_path, '[clickhouse]\npassword = "from-file"\n')
    assert load_config(path, env={}).clickhouse.password == "from-file"
    cfg = load_config(path, env={"CLICKHOUSE_PASSWORD": "from-env"})
    assert cfg.clickhouse.password == "from-env"
    assert "from-env" not in repr(cfg)


def test_env_shards_override(tmp_path: Path) -> None:
    path = write(tmp_path, "[backfill]\nshards = 2\n")
    assert load_config(path, env={"SHARDS": "12"}).backfill.shards == 12


# --- paths ------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc" / "bf"
    conf_dir.mkdir(parents=True)
    write(
        conf_dir,
        """
[clickhouse]
path = "store"
[backfill]
data_dir = "../logs"
[devchain]
state_dir = "/abs/devchain"
""",
        name="prod.toml",
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("..") / "etc" / "bf" / "prod.toml", env={})
    base = conf_dir.resolve()
    assert cfg.path == base / "prod.toml"
    assert cfg.base_dir == base
    assert cfg.clickhouse.path == base / "store"
    assert cfg.backfill.data_dir == base.parent / "logs"
    assert cfg.log_dir == base.parent / "logs"
    assert cfg.devchain.state_dir == Path("/abs/devchain")


# --- bad config: one test per case, exact message -------------------------------------------


def test_unknown_key(tmp_path: Path) -> None:
    e = error_of(tmp_path, "[rpc]\nurl_list = []\n")
    assert str(e) == (
        f"{tmp_path / 'config.toml'}: rpc.url_list: unknown key; "
        "expected one of urls, requests_per_second, timeout_s, max_block_range, give_up_after_s"
    )
    assert e.key == "rpc.url_list"


def test_unknown_section(tmp_path: Path) -> None:
    e = error_of(tmp_path, "[rcp]\nurls = []\n")
    assert str(e).endswith(
        "config.toml: rcp: unknown section; expected one of rpc, clickhouse, backfill, "
        "contracts, monitor, gates, devchain, console, keys"
    )


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    assert str(error_of(tmp_path, "rpc = 3\n")).endswith("rpc = 3: expected a table [rpc]")


def test_wrong_type_string_for_number(tmp_path: Path) -> None:
    e = error_of(tmp_path, '[rpc]\ntimeout_s = "30"\n')
    assert str(e).endswith("config.toml: rpc.timeout_s = '30': expected a number > 0")
    assert (e.key, e.value, e.expected) == ("rpc.timeout_s", "30", "expected a number > 0")


def test_wrong_type_bool_is_not_an_int(tmp_path: Path) -> None:
    e = error_of(tmp_path, "[backfill]\nshards = true\n")
    assert str(e).endswith("backfill.shards = true: expected an integer >= 1 and <= 256")


def test_wrong_type_float_for_int(tmp_path: Path) -> None:
    e = error_of(tmp_path, "[backfill]\ndays = 2.5\n")
    assert str(e).endswith("backfill.days = 2.5: expected an integer >= 1")


def test_wrong_type_list_expected(tmp_path: Path) -> None:
    e = error_of(tmp_path, '[contracts]\nerc1155 = "0x4D97DCd97eC945f40cF65F87097ACe5EA0476045"\n')
    assert "contracts.erc1155 = '0x4D97DCd97eC945f40cF65F87097ACe5EA0476045'" in str(e)
    assert "expected a list of addresses" in str(e)


def test_bad_address(tmp_path: Path) -> None:
    e = error_of(
        tmp_path, '[contracts]\nerc20_tokens = ["0x2791Bca1f2de4661ED88A30C99A7a9449Aa8417"]\n'
    )
    assert str(e).endswith(
        "contracts.erc20_tokens[0] = '0x2791Bca1f2de4661ED88A30C99A7a9449Aa8417': "
        "expected an address: 0x followed by 40 hex digits"
    )


def test_bad_collateral_address(tmp_path: Path) -> None:
    e = error_of(tmp_path, '[contracts]\ncollateral = "USDC"\n')
    assert str(e).endswith(
        "contracts.collateral = 'USDC': expected an address: 0x followed by 40 hex digits"
    )


def test_empty_required_address_list(tmp_path: Path) -> None:
    e = error_of(tmp_path, "[contracts]\nerc1155 = []\n")
    assert str(e).endswith("contracts.erc1155 = []: expected at least one address")


def test_duplicate_address(tmp_path: Path) -> None:
    e = error_of(
        tmp_path, f'[contracts]\nerc1155 = ["{CTF}", "{CTF.upper().replace("0X", "0x")}"]\n'
    )
    assert "contracts.erc1155[1]" in str(e) and "expected each address once" in str(e)


def test_bad_date(tmp_path: Path) -> None:
    e = error_of(tmp_path, '[backfill]\nstart_date = "2022-13-01"\n')
    assert str(e).endswith("backfill.start_date = '2022-13-01': expected a date YYYY-MM-DD (UTC)")


def test_bad_date_shape_and_datetime(tmp_path: Path) -> None:
    e = error_of(tmp_path, '[backfill]\nstart_date = "20221218"\n')
    assert "backfill.start_date = '20221218': expected a date YYYY-MM-DD" in str(e)
    e = error_of(tmp_path, "[backfill]\nstart_date = 2022-12-18T00:00:00\n")
    assert "backfill.start_date = 2022-12-18T00:00:00: expected a date YYYY-MM-DD" in str(e)


def test_days_below_one(tmp_path: Path) -> None:
    e = error_of(tmp_path, "[backfill]\ndays = 0\n")
    assert str(e) == f"{tmp_path / 'config.toml'}: backfill.days = 0: expected an integer >= 1"
    assert (e.key, e.value, e.expected) == ("backfill.days", 0, "expected an integer >= 1")


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    assert str(info.value) == (
        f"{missing}: cannot read config file (No such file or directory); "
        "expected a readable TOML file"
    )
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path, env={})  # a directory
    if os.geteuid() != 0:  # root reads anything
        locked = write(tmp_path, "", name="locked.toml")
        locked.chmod(0)
        with pytest.raises(ConfigError, match="Permission denied"):
            load_config(locked, env={})


def test_malformed_toml(tmp_path: Path) -> None:
    e = error_of(tmp_path, "[rpc]\nurls = [\n\n[backfill]\ndays = \n")
    assert "config.toml: malformed TOML at line " in str(e)
    e = error_of(tmp_path, "[backfill]\ndays = \n")
    assert str(e) == (
        f"{tmp_path / 'config.toml'}: malformed TOML at line 2, column 8: "
        "Invalid value; expected valid TOML"
    )


def test_bad_shards_env(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    for bad in ("x", "0", "257", "2.0"):
        with pytest.raises(ConfigError) as info:
            load_config(path, env={"SHARDS": bad})
        assert str(info.value) == f"env SHARDS = '{bad}': expected an integer >= 1 and <= 256"
        assert info.value.key == "env SHARDS"


def test_shards_above_limit_in_file(tmp_path: Path) -> None:
    e = error_of(tmp_path, "[backfill]\nshards = 257\n")
    assert str(e).endswith("backfill.shards = 257: expected an integer >= 1 and <= 256")


def test_bad_keys_binding_refused_key(tmp_path: Path) -> None:
    e = error_of(tmp_path, '[keys]\npause = "ctrl+b"\n')
    assert str(e).endswith(
        "keys.pause = 'ctrl+b': expected a key other than ctrl+b, ctrl+a, ctrl+s, ctrl+enter "
        "(taken by tmux/screen/terminals)"
    )


def test_bad_keys_binding_duplicate(tmp_path: Path) -> None:
    e = error_of(tmp_path, '[keys]\npause = "q"\n')
    assert str(e).endswith("keys.pause = 'q': expected a key not already bound to quit")
    # "?" is the same key as "question_mark"
    e = error_of(tmp_path, '[keys]\nopen_log = "?"\n')
    assert str(e).endswith("keys.open_log = '?': expected a key not already bound to help")


def test_bad_keys_binding_unknown_id_and_empty(tmp_path: Path) -> None:
    e = error_of(tmp_path, '[keys]\nzoom = "z"\n')
    assert "config.toml: keys.zoom: unknown key; expected one of scale_up, scale_down" in str(e)
    e = error_of(tmp_path, '[keys]\nhelp = ""\n')
    assert "keys.help = '': expected a key name" in str(e)
    e = error_of(tmp_path, "[keys]\nhelp = 1\n")
    assert "keys.help = 1: expected a key name" in str(e)


def test_bad_rpc_url_is_masked(tmp_path: Path) -> None:
    e = error_of(
        tmp_path, '[rpc]\nurls = ["ftp://polygon.example/v2/AbCdEf0123456789AbCdEf0123"]\n'
    )
    assert str(e).endswith(
        "rpc.urls[0] = 'ftp://polygon.example/v2/***': expected an http(s):// URL"
    )
    assert "AbCdEf" not in str(e) and "AbCdEf" not in repr(e.value)


def test_bad_env_rpc_url_is_masked(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"ETHEREUM_RPC_URLS": "https://ok.example,wss://u:pw@h/?key=abc"})
    assert str(info.value) == (
        "env ETHEREUM_RPC_URLS = 'wss://***@h/?***': expected comma-separated http(s):// URLs"
    )


def test_bad_clickhouse_url(tmp_path: Path) -> None:
    e = error_of(tmp_path, '[clickhouse]\nurl = "https://admin:hunter22@ch.example:8443/x"\n')
    assert str(e).endswith(
        "clickhouse.url = 'https://***@ch.example:8443/x': "
        "expected empty (the local store server) or http(s)://host[:port] without a user or "
        "password in it: put them in clickhouse.user and clickhouse.password (or env "
        "CLICKHOUSE_PASSWORD)"
    )
    assert "hunter22" not in str(e)
    path = write(tmp_path, "")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"CLICKHOUSE_URL": "ch.example:8123"})
    assert str(info.value).startswith("env CLICKHOUSE_URL = 'ch.example:8123': expected empty")


def test_password_never_in_message(tmp_path: Path) -> None:
    e = error_of(tmp_path, "[clickhouse]\npassword = 12345678\n")
    assert str(e).endswith("clickhouse.password = '***': expected a string")
    assert "12345678" not in str(e)


def test_bad_database_identifier(tmp_path: Path) -> None:
    e = error_of(tmp_path, '[clickhouse]\ndatabase = "poly-market"\n')
    assert "clickhouse.database = 'poly-market': expected an identifier" in str(e)


@pytest.mark.parametrize(
    ("text", "tail"),
    [
        ("[rpc]\nrequests_per_second = 0\n", "rpc.requests_per_second = 0: expected a number > 0"),
        ("[rpc]\nmax_block_range = 0\n", "rpc.max_block_range = 0: expected an integer >= 1"),
        ("[rpc]\ntimeout_s = nan\n", "rpc.timeout_s = nan: expected a number > 0"),
        ("[rpc]\ngive_up_after_s = 0\n", "rpc.give_up_after_s = 0: expected a number > 0"),
        (
            "[backfill]\nconfirmations = -1\n",
            "backfill.confirmations = -1: expected an integer >= 0",
        ),
        (
            "[backfill]\nfailed_day_retry_s = 0\n",
            "backfill.failed_day_retry_s = 0: expected a number of seconds > 0",
        ),
        ("[monitor]\nmax_restarts = 0\n", "monitor.max_restarts = 0: expected an integer >= 1"),
        ("[monitor]\ngrace_s = -1\n", "monitor.grace_s = -1: expected a number > 0"),
        (
            "[monitor]\nbackoff_max_s = 1\n",
            "monitor.backoff_max_s = 1: expected a number >= monitor.backoff_initial_s (2)",
        ),
        (
            "[gates]\nhigh_conf_share_strict = 1.5\n",
            "gates.high_conf_share_strict = 1.5: expected a number between 0 and 1",
        ),
        (
            "[gates]\nwin_rate_min = 0.6\n",
            "gates.win_rate_min = 0.6: "
            "expected gates.win_rate_min (0.6) <= gates.win_rate_max (0.5)",
        ),
        ("[console]\nrefresh_s = 0.05\n", "console.refresh_s = 0.05: expected a number >= 0.1"),
        ("[devchain]\nwallets = 1\n", "devchain.wallets = 1: expected an integer >= 2"),
        ('[backfill]\ndata_dir = ""\n', "backfill.data_dir = '': expected a path"),
    ],
)
def test_range_checks(tmp_path: Path, text: str, tail: str) -> None:
    assert str(error_of(tmp_path, text)).endswith(tail)
