"""`backfill-console` entry point: the console (TUI or --no-ui) and its sub-commands.

    backfill-console [--config FILE] [--no-ui] [--shard-ids 0-3] [--dry-run] [--version]
    backfill-console devchain [--days N] [--seed S] [--port P] [--config FILE]
    backfill-console ctl status [--json] | scale N | restart K|stalled
                         | pause | resume | optimize | abort          [--config FILE]
    backfill-console hard-gate [--config FILE]
    backfill-console rebuild [--config FILE]
    backfill-console plan [--max-requests N] [--config FILE]
    backfill-console sql "SELECT ..." [--format table|TSV|CSV|JSONEachRow|...] [--config FILE]

`--config FILE` (and `--json` for `ctl status`) may come before or after any sub-command and its
verb (engine.cli_flags). `ctl` without --config and without ./config.toml talks to the console
this user started last (engine.locate).

Exit codes: 0 done (every day COMPLETE / command succeeded), 1 runtime failure or a headless run
STALLED (no remaining shard can progress: engine/stall.py), 2 bad config or
usage (nothing was started), 3 aborted by the operator, 130 / 143 stopped by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

from engine import cli_flags
from engine.config import Config, ConfigError, load_config
from engine.status import EngineState, ExitReason, refetched_words

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ABORTED = 3
#: Sub-command verb -> one line of help; each runs from main() with the words after the verb.
SUBCOMMANDS: dict[str, str] = {
    "devchain": "serve the synthetic devchain alone",
    "ctl": "control a running console (status, scale, restart, pause, resume, optimize, abort)",
    "hard-gate": "run the strict gates on the store; exit 0 only if all pass",
    "rebuild": "rebuild analytics, hard gate, swap only if it passes, snapshot",
    "plan": "sample the RPC window with a bounded number of requests; estimate rows, calls, "
    "hours and store size of the run",
    "sql": "run one SQL statement against the store (also while a console runs)",
}
PROGRESS_EVERY_S = 5.0


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help=cli_flags.CONFIG_HELP)


def main_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="backfill-console",
        description=(
            "Operator console for a parallel ERC20/ERC1155 backfill into ClickHouse. "
            "With no RPC URL configured it starts a local devchain (anvil) and backfills it. "
            "Sub-commands (see `backfill-console SUB --help`): "
            + "; ".join(f"{k}: {v}" for k, v in SUBCOMMANDS.items())
            + ". --config FILE (and --json where it applies) may come before or after the "
            "sub-command and its verb."
        ),
        epilog=(
            "exit codes: 0 every day COMPLETE, 1 failure or STALLED (headless), "
            "2 bad config/usage, 3 aborted by operator, "
            "130/143 stopped by SIGINT/SIGTERM (a rerun resumes)"
        ),
    )
    _config_arg(p)
    p.add_argument(
        "--version",
        action="store_true",
        help="print the version of the product and of what it runs on (Python, Textual, "
        "clickhouse-connect, the store's ClickHouse, anvil for the devchain), then exit",
    )
    p.add_argument(
        "--no-ui",
        action="store_true",
        help="run headless: a progress line every few seconds, exit 0 when every day is "
        "COMPLETE, 1 with the reason when the run is STALLED (no remaining shard can progress)",
    )
    p.add_argument(
        "--shard-ids",
        metavar="SPEC",
        help="run only these shards of SHARDS, e.g. 0-3 or 0,2,5 (several hosts, one server)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (chain, store, shards and their days) and, with RPC URLs, the "
        "estimate of `plan` (a bounded sample of the window), then exit without starting",
    )
    return p


def ctl_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="backfill-console ctl",
        description=(
            "Control a running console (UI or --no-ui) through its unix socket. Which console: "
            "the one of --config FILE, else of ./config.toml, else the console this user "
            "started last (a per-user runtime pointer; see README, Commands)."
        ),
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="VERB")
    sub.add_parser("status", help="shards, states, pids, days, heartbeat ages")
    sc = sub.add_parser("scale", help="restart every worker with a new SHARDS")
    sc.add_argument("shards", type=int)
    rs = sub.add_parser("restart", help="restart one shard's worker, or every STALLED/FATAL one")
    rs.add_argument("target", help="a shard id or 'stalled'")
    for name, text in (
        ("pause", "workers idle after their current chunk (heartbeats continue)"),
        ("resume", "resume fetching"),
        ("optimize", "OPTIMIZE ... FINAL finished partitions, in the background"),
        ("abort", "stop every worker gracefully, flush, exit; a rerun resumes"),
    ):
        sub.add_parser(name, help=text)
    cli_flags.share(p, json=["status"])
    return p


def _load(path: str | None) -> Config:
    return load_config(path)


def print_version(config: str | None) -> int:
    from engine.version import version_text

    try:
        cfg: Config | None = _load(config)
        why = ""
    except ConfigError as exc:
        cfg, why = None, f"bad config: {exc}"
    print(version_text(cfg, why))
    return EXIT_OK


def _fail_config(exc: ConfigError) -> int:
    print(f"backfill-console: {exc}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd, rest = cli_flags.hoist(argv, SUBCOMMANDS)
    if cmd == "devchain":
        from engine.devchain.cli import main as devchain_main

        return devchain_main(rest)
    if cmd == "ctl":
        return ctl_main(rest)
    if cmd == "plan":
        return plan_main(rest)
    if cmd == "sql":
        return sql_main(rest)
    if cmd is not None:
        return analytics_main(cmd, rest)
    args = main_parser().parse_args(argv)
    if args.version:
        return print_version(args.config)
    try:
        cfg = _load(args.config)
        shard_ids = None
        if args.shard_ids:
            from engine.control import parse_shard_ids

            try:
                shard_ids = parse_shard_ids(args.shard_ids, cfg.backfill.shards)
            except ValueError as exc:
                expected = str(exc).split(": ", 1)[-1]
                raise ConfigError("--shard-ids", args.shard_ids, expected) from exc
    except ConfigError as exc:
        return _fail_config(exc)
    if args.dry_run:
        print(render_plan(cfg, shard_ids))
        if cfg.uses_devchain:
            print("estimate: the devchain needs none (`plan` samples configured RPC URLs)")
            return EXIT_OK
        print()
        return print_estimate(cfg)
    if not args.no_ui and not sys.stdout.isatty():
        print("backfill-console: stdout is not a terminal: running headless (--no-ui)")
        args.no_ui = True
    return run(cfg, shard_ids, ui=not args.no_ui)


def render_plan(cfg: Config, shard_ids: list[int] | None) -> str:
    from engine.masking import mask_url
    from engine.runtime import chain_label_for

    shards = cfg.backfill.shards
    ids = shard_ids if shard_ids is not None else list(range(shards))
    chain = "devchain (local anvil)" if cfg.uses_devchain else chain_label_for(list(cfg.rpc.urls))
    store = (
        f"server {mask_url(cfg.clickhouse.url)}"
        if cfg.clickhouse.url
        else f"local server on {cfg.clickhouse.path}"
    )
    lines = [
        f"chain:  {chain}",
        f"store:  {store} (database {cfg.clickhouse.database})",
        f"days:   {cfg.backfill.days} from {cfg.backfill.start_date} (UTC)",
        f"SHARDS: {shards}; this console runs shard(s) {_ranges_text(ids)}",
    ]
    total = 0
    for k in ids:
        days = list(range(k, cfg.backfill.days, shards))
        total += len(days)
        preview = ", ".join(map(str, days[:4])) + (", ..." if len(days) > 4 else "")
        lines.append(f"  shard {k}: {len(days)} day(s): {preview}")
    lines.append(f"total:  {total} day(s) for this console")
    lines.append(f"socket: {cfg.backfill.data_dir / 'console.sock'}")
    return "\n".join(lines)


def _ranges_text(ids: list[int]) -> str:
    if not ids:
        return "none"
    out, start, prev = [], ids[0], ids[0]
    for k in [*ids[1:], None]:
        if k is not None and k == prev + 1:
            prev = k
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if k is not None:
            start = prev = k
    return ",".join(out)


def _setup_logging(cfg: Config) -> None:
    cfg.backfill.data_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(cfg.backfill.data_dir / "console.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def run(cfg: Config, shard_ids: list[int] | None, ui: bool) -> int:
    from engine.control import ConsoleAlreadyRunning
    from engine.preflight import StartupError
    from engine.runtime import Engine

    ui_running: list[bool] = []

    def say(msg: str) -> None:
        logging.getLogger("engine").info("%s", msg)
        if not ui_running:  # once the TUI owns the screen, its panels show the notices
            print(msg, flush=True)

    engine = Engine(cfg, shard_ids=shard_ids, say=say)
    try:
        engine.preflight()  # RPC and store server first: nothing is created when they fail
    except StartupError as exc:
        print(f"backfill-console: could not start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _setup_logging(cfg)
    stop_signal: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop_signal.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            engine.start()
        except ConsoleAlreadyRunning as exc:
            print(f"backfill-console: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except StartupError as exc:  # expected: said in words, no traceback
            print(f"backfill-console: could not start: {exc}", file=sys.stderr)
            logging.getLogger("engine").error("could not start: %s", exc)
            return EXIT_FAILED
        except Exception as exc:
            print(f"backfill-console: could not start: {exc}", file=sys.stderr)
            logging.exception("start failed")
            return EXIT_FAILED
        if ui:
            ui_running.append(True)
            return _run_ui(cfg, engine)
        return _run_headless(engine, stop_signal)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _run_ui(cfg: Config, engine) -> int:
    from console.app import run_console

    try:
        code = run_console(engine, dict(cfg.console.keys), cfg.console.refresh_s)
    finally:
        engine.stop("console quit")
    # An abort from `ctl abort` ends the UI too; it exits like an abort from the keys.
    return EXIT_ABORTED if engine.exit_reason == ExitReason.ABORTED else code


def progress_line(st) -> str:
    pct = 100.0 * st.days_complete / st.days_total if st.days_total else 0.0
    rows = " ".join(
        f"{t.replace('_transfers_staging', '')}={n:,}"
        for t, n in sorted(st.rows_staged.items())
        if t.endswith("_staging")
    )
    refetched = refetched_words(getattr(st, "rows_refetched", {}))
    if refetched:
        rows += f" (re-fetched {refetched}, kept once)"
    if st.stalled:
        eta = ""
    elif st.eta_s is None:
        eta = getattr(st, "eta_note", "") or "calculating"
    else:
        s = int(st.eta_s)
        eta = f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    states: dict[str, int] = {}
    for w in st.workers:
        states[w.state] = states.get(w.state, 0) + 1
    workers = " ".join(f"{n} {k}" for k, n in sorted(states.items())) or "none"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.now))
    failed = f" failed {st.days_failed}" if st.days_failed else ""
    if st.disk_full:
        failed += " | DISK FULL: fetching paused until the store can write"
    shards = ""
    cfg_shards = getattr(st, "config_shards", 0)
    if cfg_shards and cfg_shards != st.shards:
        shards = f" | SHARDS {st.shards} (config {cfg_shards})"
    return (
        f"{stamp} {st.state} days {st.days_complete}/{st.days_total} ({pct:.1f}%){failed} | "
        f"rows staged {rows} | {st.rows_per_s:,.0f} rows/s | "
        f"{f'STALLED: {st.stalled}' if st.stalled else f'ETA {eta}'} | workers {workers}"
        f"{shards}"
    )


def _run_headless(engine, stop_signal: list[int]) -> int:
    last = 0.0
    try:
        while True:
            if stop_signal:
                sig = stop_signal[0]
                name = "SIGINT" if sig == signal.SIGINT else "SIGTERM"
                print(f"{name}: stopping workers cleanly; a rerun resumes", flush=True)
                engine.stop(f"stopped by {name}")
                return 128 + sig
            st = engine.status()
            final = st.state in (EngineState.COMPLETE, EngineState.STOPPED)
            if time.monotonic() - last >= PROGRESS_EVERY_S or final:
                last = time.monotonic()
                print(progress_line(st), flush=True)
            if st.state == EngineState.COMPLETE:
                engine.stop("complete")
                print(f"done: all {st.days_total} day(s) COMPLETE", flush=True)
                return EXIT_OK
            if st.stalled:
                # Nothing can progress without the operator: say why and exit, not sit forever.
                print(progress_line(st), flush=True)
                print(f"backfill-console: STALLED: {st.stalled}", file=sys.stderr, flush=True)
                engine.stop("stalled")
                return EXIT_FAILED
            if st.state == EngineState.STOPPED:
                engine.stop("stopped")
                return EXIT_ABORTED if engine.exit_reason else EXIT_FAILED
            time.sleep(0.5)
    except BaseException:
        engine.stop("error")
        raise


def ctl_target(config: str | None) -> tuple[Path, str]:
    """(socket, how it was chosen) for ctl: --config, else ./config.toml, else the console this
    user started last (engine.locate). Raises ConfigError for a bad config, ControlError when
    nothing can be found (saying what was tried)."""
    from engine.config import default_config_path
    from engine.control import ControlError, socket_path_for
    from engine.locate import live_consoles, runtime_dir

    if config is not None or default_config_path().is_file():
        cfg = _load(config)
        return socket_path_for(cfg.backfill.data_dir), f"config {cfg.path}"
    consoles = live_consoles()
    if len(consoles) == 1:
        c = consoles[0]
        return c.socket, f"the running console pid {c.pid} (config {c.config})"
    if len(consoles) > 1:
        listing = "; ".join(f"pid {c.pid}: --config {c.config}" for c in consoles)
        raise ControlError(
            f"{len(consoles)} consoles are running ({listing}): say which with --config FILE"
        )
    cfg = _load(None)
    sock = socket_path_for(cfg.backfill.data_dir)
    if sock.exists():
        return sock, f"built-in defaults in {cfg.base_dir}"
    raise ControlError(
        f"no console found: no --config given, no {default_config_path()}, no running console "
        f"recorded in {runtime_dir()}, and no socket at {sock} (the built-in defaults' "
        f"data_dir); run ctl with --config FILE, the config the console was started with"
    )


def ctl_main(argv: list[str]) -> int:
    from engine.control import ControlError, format_status_text, send_command

    args = ctl_parser().parse_args(argv)
    if getattr(args, "json", False) and args.cmd != "status":
        print(f"backfill-console ctl: --json applies to status, not {args.cmd}", file=sys.stderr)
        return EXIT_USAGE
    req: dict = {"cmd": args.cmd}
    if args.cmd == "scale":
        req["shards"] = args.shards
    elif args.cmd == "restart":
        t = args.target
        if t != "stalled" and not t.isdigit():
            print(f"ctl restart: {t!r}: expected a shard id or 'stalled'", file=sys.stderr)
            return EXIT_USAGE
        req["target"] = "stalled" if t == "stalled" else int(t)
    try:
        sock, chosen = ctl_target(args.config)
    except ConfigError as exc:
        return _fail_config(exc)
    except ControlError as exc:
        print(f"backfill-console ctl: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        reply = send_command(sock, req)
    except ControlError as exc:
        print(f"backfill-console ctl: {exc} (console looked up from {chosen})", file=sys.stderr)
        return EXIT_FAILED
    if not reply.get("ok"):
        print(
            f"backfill-console ctl: {reply.get('error') or reply.get('message')}", file=sys.stderr
        )
        return EXIT_FAILED
    if args.cmd == "status":
        if getattr(args, "json", False):
            print(json.dumps(reply["status"], indent=2))
        else:
            print(format_status_text(reply["status"]), end="")
    else:
        print(reply.get("message", "ok"))
    return EXIT_OK


def print_estimate(cfg: Config, max_requests: int | None = None) -> int:
    """Sample the window (engine.plan) and print the estimate; EXIT_FAILED when sampling fails."""
    from engine import plan

    try:
        est = plan.estimate(cfg, max_requests or plan.MAX_REQUESTS)
    except plan.PlanError as exc:
        print(f"backfill-console plan: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(plan.render(est, cfg.backfill.start_date), flush=True)
    return EXIT_OK


def plan_main(argv: list[str]) -> int:
    from engine import plan

    p = argparse.ArgumentParser(
        prog="backfill-console plan",
        description=(
            "Sample the configured window (a few short ranges on a few days spread over it) with "
            "a bounded, printed number of requests; detect the provider's traits (blockTimestamp "
            "in logs, block-range and result caps); print per-day and total estimates of rows, "
            "eth_getLogs calls, block calls, requests, hours at rpc.requests_per_second and "
            "store size; warn when block calls dominate."
        ),
    )
    p.add_argument(
        "--max-requests",
        type=int,
        default=plan.MAX_REQUESTS,
        metavar="N",
        help=f"most requests the sample may spend (default {plan.MAX_REQUESTS})",
    )
    cli_flags.share(p)
    args = p.parse_args(argv)
    if args.max_requests < 10:
        print(
            f"plan: --max-requests {args.max_requests}: expected an integer >= 10", file=sys.stderr
        )
        return EXIT_USAGE
    try:
        cfg = _load(args.config)
    except ConfigError as exc:
        return _fail_config(exc)
    if cfg.uses_devchain:
        print("plan: no rpc.urls configured: the devchain needs no estimate", file=sys.stderr)
        return EXIT_USAGE
    return print_estimate(cfg, args.max_requests)


def sql_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="backfill-console sql",
        description=(
            "Run one SQL statement against the configured store (also while a console runs). "
            "The configured database is the current one; {db} is replaced by its name."
        ),
    )
    cli_flags.share(p)
    p.add_argument("statement", help='e.g. "SELECT count() FROM backfill_checkpoint FINAL"')
    p.add_argument(
        "--format",
        default="table",
        metavar="F",
        help="table (default: aligned columns) or a ClickHouse format: TSV, CSV, JSONEachRow, "
        "Vertical, PrettyCompact, ...",
    )
    args = p.parse_args(argv)
    try:
        cfg = _load(args.config)
    except ConfigError as exc:
        return _fail_config(exc)
    from engine.store.sql_cli import run_sql

    return run_sql(cfg, args.statement, args.format)


def analytics_main(cmd: str, argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog=f"backfill-console {cmd}",
        description=(
            "Run the strict gates on the store; exit 0 only if all pass."
            if cmd == "hard-gate"
            else "Rebuild net flows, trades, PnL; hard gate; swap only if it passes; snapshot."
        ),
    )
    cli_flags.share(p)
    args = p.parse_args(argv)
    try:
        cfg = _load(args.config)
    except ConfigError as exc:
        return _fail_config(exc)
    from engine.analytics import gates, rebuild, swap
    from engine.on_complete import ANALYTICS_LOCK
    from engine.store.client import StoreError, open_store
    from engine.store.lock import LockHeld, StoreLock, holder_label

    # One analytics build at a time on a store, across processes and hosts (a console's
    # on-complete rebuild or gates, another hard-gate or rebuild): the lock lives in the store.
    try:
        store = open_store(cfg)
    except StoreError as exc:
        print(f"{cmd}: cannot open the store: {exc}")
        return EXIT_FAILED
    try:
        with StoreLock(store, ANALYTICS_LOCK, holder_label(f"backfill-console {cmd}")):
            try:
                swap.repair(store, lambda m: print(f"{cmd}: {m}"))  # a swap cut short, first
            except Exception as exc:
                print(f"{cmd}: not started: a swap cut short could not be repaired: {exc}")
                return EXIT_FAILED
            return gates.cli_hard_gate(cfg) if cmd == "hard-gate" else rebuild.cli_rebuild(cfg)
    except LockHeld as exc:
        print(f"{cmd}: not started: {exc}")
        return EXIT_FAILED
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
