"""The command line as an operator types it: flags anywhere, --version, ctl finding the console.

Pure argument handling is table-driven; `ctl` talks to a real ControlServer on a real unix socket
(its handler answers like a console), run as the real CLI in a subprocess from another folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import cli_flags, locate
from engine.cli import SUBCOMMANDS, ctl_parser, main
from engine.control import ControlServer, socket_path_for

REPO = Path(__file__).resolve().parent.parent
VERBS = list(SUBCOMMANDS)


@pytest.mark.parametrize(
    ("argv", "verb", "rest"),
    [
        (["ctl", "status"], "ctl", ["status"]),
        (["--config", "c.toml", "ctl", "status"], "ctl", ["--config", "c.toml", "status"]),
        (["--config=c.toml", "ctl", "status"], "ctl", ["--config=c.toml", "status"]),
        (
            ["--json", "--config", "c", "ctl", "status"],
            "ctl",
            ["--json", "--config", "c", "status"],
        ),
        (["ctl", "status", "--config", "c"], "ctl", ["status", "--config", "c"]),
        (["--config", "ctl", "rebuild"], "rebuild", ["--config", "ctl"]),  # a value, not a verb
        (["--shard-ids", "0-3", "--no-ui"], None, ["--shard-ids", "0-3", "--no-ui"]),
        (["--no-ui", "--config", "c"], None, ["--no-ui", "--config", "c"]),
        (
            ["--no-ui", "hard-gate"],
            "hard-gate",
            ["--no-ui"],
        ),  # not shared: stays, argparse names it
        (
            ["--config", "c", "plan", "--max-requests", "20"],
            "plan",
            ["--config", "c", "--max-requests", "20"],
        ),
        (["--", "ctl"], None, ["--", "ctl"]),
        ([], None, []),
    ],
)
def test_hoist_moves_shared_options_after_the_verb(
    argv: list[str], verb: str | None, rest: list[str]
) -> None:
    assert cli_flags.hoist(argv, VERBS) == (verb, rest)


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "X", "--json", "status"],
        ["--config", "X", "status", "--json"],
        ["status", "--config", "X", "--json"],
        ["--json", "status", "--config=X"],
    ],
)
def test_ctl_accepts_config_and_json_on_either_side_of_the_verb(argv: list[str]) -> None:
    args = ctl_parser().parse_args(argv)
    assert (args.cmd, args.config, args.json) == ("status", "X", True)


def test_ctl_config_after_a_verb_with_an_argument() -> None:
    args = ctl_parser().parse_args(["scale", "4", "--config", "X"])
    assert (args.cmd, args.shards, args.config, args.json) == ("scale", 4, "X", False)


def test_help_of_every_ctl_verb_shows_config() -> None:
    p = ctl_parser()
    sub = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, parser in sub.choices.items():
        text = parser.format_help()
        assert "--config FILE" in text, name
        assert ("--json" in text) == (name == "status"), name


# ---- against a real socket ---------------------------------------------------------------------

STATUS = {
    "state": "running",
    "shards": 2,
    "days_complete": 3,
    "days_total": 8,
    "workers": [{"shard": 0, "pid": 123, "state": "RUNNING", "day": 4, "rows": 10}],
}


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="cli-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _handler(req: dict) -> dict:
    if req["cmd"] == "status":
        return {"status": STATUS}
    return {"message": f"did {req['cmd']} {req.get('shards', '')}".strip()}


def _run(args: list[str], cwd: Path, runtime: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SHARDS", "ETHEREUM_RPC_URLS")}
    env["BACKFILL_CONSOLE_RUNTIME_DIR"] = str(runtime)
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def console(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """(config file, runtime dir) of a console stand-in serving the config's socket."""
    data = short_dir / "data"
    config = short_dir / "c.toml"
    config.write_text(f'[backfill]\ndata_dir = "{data}"\n')
    runtime = short_dir / "run"
    monkeypatch.setenv("BACKFILL_CONSOLE_RUNTIME_DIR", str(runtime))
    server = ControlServer(socket_path_for(data), _handler, pointer=str(config))
    server.start()
    try:
        yield config, runtime
    finally:
        server.stop()


@pytest.mark.slow  # runs the real CLI in a subprocess
@pytest.mark.parametrize(
    "order",
    [
        ["ctl", "status", "--json", "--config", "{c}"],
        ["ctl", "--config", "{c}", "status", "--json"],
        ["--config", "{c}", "ctl", "--json", "status"],
        ["--json", "ctl", "status", "--config={c}"],
    ],
)
def test_ctl_status_with_flags_anywhere(
    console: tuple[Path, Path], short_dir: Path, order: list[str]
) -> None:
    config, runtime = console
    elsewhere = short_dir / "elsewhere"
    elsewhere.mkdir()
    out = _run([a.format(c=config) for a in order], elsewhere, short_dir / "no-pointers")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == STATUS


@pytest.mark.slow  # runs the real CLI in a subprocess
def test_ctl_scale_with_config_after_the_argument(
    console: tuple[Path, Path], short_dir: Path
) -> None:
    config, _ = console
    out = _run(["ctl", "scale", "4", "--config", str(config)], short_dir, short_dir / "none")
    assert (out.returncode, out.stdout.strip()) == (0, "did scale 4")


@pytest.mark.slow  # runs the real CLI in a subprocess
def test_ctl_json_on_a_verb_without_json_output_is_refused(
    console: tuple[Path, Path], short_dir: Path
) -> None:
    config, _ = console
    out = _run(["ctl", "pause", "--json", "--config", str(config)], short_dir, short_dir / "x")
    assert out.returncode == 2
    assert "unrecognized arguments: --json" in out.stderr
    out = _run(["ctl", "--json", "pause", "--config", str(config)], short_dir, short_dir / "x")
    assert out.returncode == 2
    assert "--json applies to status, not pause" in out.stderr


@pytest.mark.slow  # runs the real CLI in a subprocess
def test_ctl_finds_the_running_console_from_another_directory(
    console: tuple[Path, Path], short_dir: Path
) -> None:
    config, runtime = console
    (ptr,) = locate.live_consoles()
    assert (ptr.pid, ptr.config) == (os.getpid(), str(config))
    elsewhere = short_dir / "elsewhere"
    elsewhere.mkdir()
    out = _run(["ctl", "status", "--json"], elsewhere, runtime)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == STATUS


def test_pointer_goes_when_the_console_stops(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKFILL_CONSOLE_RUNTIME_DIR", str(short_dir / "run"))
    server = ControlServer(short_dir / "console.sock", _handler, pointer="c.toml")
    server.start()
    assert [p.socket for p in locate.live_consoles()] == [short_dir / "console.sock"]
    server.stop()
    assert locate.live_consoles() == []
    assert list((short_dir / "run" / "consoles").iterdir()) == []


@pytest.mark.slow  # runs the real CLI in a subprocess
def test_a_pointer_of_a_dead_console_is_dropped(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BACKFILL_CONSOLE_RUNTIME_DIR", str(short_dir / "run"))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    folder = short_dir / "run" / "consoles"
    folder.mkdir(parents=True)
    (short_dir / "console.sock").touch()
    stale = folder / f"{dead.stdout.strip()}-x.json"
    stale.write_text(
        json.dumps({"pid": int(dead.stdout), "socket": str(short_dir / "console.sock")})
    )
    assert locate.live_consoles() == []
    assert not stale.exists()


@pytest.mark.slow  # runs the real CLI in a subprocess
def test_ctl_without_a_console_says_what_it_tried(short_dir: Path) -> None:
    out = _run(["ctl", "status"], short_dir, short_dir / "run")
    assert out.returncode == 1
    err = out.stderr.strip()
    assert err.startswith("backfill-console ctl: no console found: no --config given, no ")
    assert str(short_dir / "config.toml") in err
    assert str(short_dir / "run") in err
    assert str(short_dir / "data/backfill/console.sock") in err
    assert err.endswith("run ctl with --config FILE, the config the console was started with")
    assert not (short_dir / "data").exists()  # asking created nothing


@pytest.mark.slow  # runs the real CLI in a subprocess
def test_ctl_with_a_config_but_no_console_names_the_socket(short_dir: Path) -> None:
    config = short_dir / "c.toml"
    config.write_text('[backfill]\ndata_dir = "d"\n')
    out = _run(["ctl", "status", "--config", str(config)], REPO, short_dir / "run")
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f"backfill-console ctl: no console is running (no socket at {short_dir}/d/console.sock)"
        f" (console looked up from config {config})"
    )


# ---- --version -----------------------------------------------------------------------------------


def test_version_names_the_product_and_what_it_runs_on(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib import metadata

    config = short_dir / "c.toml"
    config.write_text('[clickhouse]\npath = "ch"\n')
    assert main(["--version", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"backfill-console {metadata.version('backfill-console')} (code in ")
    assert lines[1].startswith(f"Python {sys.version.split()[0]} ")
    assert lines[2] == f"Textual {metadata.version('textual')}"
    assert lines[3] == f"clickhouse-connect {metadata.version('clickhouse-connect')}"
    import chdb

    assert lines[4] == (
        f"ClickHouse {chdb.engine_version} (chdb {chdb.__version__}, local store server on "
        f"{short_dir / 'ch'}, not running)"
    )
    assert lines[5].startswith("anvil 1.") and lines[5].endswith(
        "(devchain: no rpc.urls configured)"
    )
    assert not (short_dir / "ch").exists()  # no store server was started


def test_version_with_an_unreachable_store_server_says_so(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.anvil import free_port

    port = free_port()
    config = short_dir / "c.toml"
    config.write_text(
        f'[rpc]\nurls = ["http://127.0.0.1:9"]\n[clickhouse]\nurl = "http://127.0.0.1:{port}"\n'
    )
    assert main(["--version", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[4] == (
        f"ClickHouse unknown (cannot reach ClickHouse at http://127.0.0.1:{port} "
        "(connection refused): check clickhouse.url / CLICKHOUSE_URL)"
    )
    assert len(lines) == 5  # no devchain: no anvil line


def test_every_sub_command_accepts_config_before_and_after_its_verb(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Generic over SUBCOMMANDS: a bad config is reported the same wherever --config is."""
    missing = str(short_dir / "nope.toml")
    needs = {"ctl": ["status"], "sql": ["SELECT 1"]}  # a verb's required words
    for verb in SUBCOMMANDS:
        extra = needs.get(verb, [])
        for argv in ([verb, *extra, "--config", missing], ["--config", missing, verb, *extra]):
            code = main(argv)
            err = capsys.readouterr().err
            assert code == 2, (argv, err)
            assert "nope.toml: cannot read config file" in err, (argv, err)
