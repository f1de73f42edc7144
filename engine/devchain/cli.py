"""`backfill-console devchain`: build or load the cached devchain and serve it until Ctrl-C.

    backfill-console devchain [--days N] [--seed S] [--port P] [--config FILE] [--no-serve]

Prints the RPC URL and the ground-truth path, then keeps the anvil node running until SIGINT or
SIGTERM (exit 0). `--no-serve` builds or loads the cache, prints the same lines and exits.
Exit codes: 0 ok, 1 the node failed, 2 bad config or arguments.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from engine import cli_flags


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="backfill-console devchain",
        description=(
            "Start the local devchain (anvil on 127.0.0.1) with the synthetic history of the "
            "configured days; the first start builds and caches it, later starts load it."
        ),
    )
    p.add_argument("--days", type=int, metavar="N", help="days of history (default backfill.days)")
    p.add_argument("--seed", type=int, metavar="S", help="history seed (default devchain.seed)")
    p.add_argument("--port", type=int, metavar="P", help="RPC port (default: a free port)")
    p.add_argument(
        "--no-serve", action="store_true", help="build or load the cache, print, and exit"
    )
    cli_flags.share(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from engine.config import ConfigError, load_config
    from engine.devchain import AnvilError, DevchainSpec, start_devchain
    from engine.devchain.anvil import port_taken_error

    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.days is not None and args.days < 1:
        print(f"backfill-console devchain: --days {args.days}: expected >= 1", file=sys.stderr)
        return 2
    if args.seed is not None and args.seed < 0:
        print(f"backfill-console devchain: --seed {args.seed}: expected >= 0", file=sys.stderr)
        return 2
    if args.port is not None and not 1 <= args.port <= 65535:
        print(f"backfill-console devchain: --port {args.port}: expected 1..65535", file=sys.stderr)
        return 2
    if args.port is not None and (taken := port_taken_error(args.port)):
        print(f"backfill-console devchain: {taken}", file=sys.stderr)
        return 1
    try:
        cfg = load_config(args.config)
        spec = DevchainSpec.from_config(cfg, days=args.days, seed=args.seed)
    except (ConfigError, ValueError) as exc:
        print(f"backfill-console devchain: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def say(msg: str) -> None:
        print(msg, flush=True)

    try:
        chain = start_devchain(spec, cfg.devchain.state_dir, port=args.port, log=say)
    except (AnvilError, OSError) as exc:
        print(f"backfill-console devchain: {exc}", file=sys.stderr)
        return 1
    with chain:
        gt = chain.ground_truth
        say(f"devchain: RPC URL {chain.url}")
        say(f"devchain: ground truth {chain.ground_truth_path}")
        say(
            f"devchain: {spec.days} days from {spec.start_date}, seed {spec.seed}, "
            f"blocks 0..{chain.head_block}, {gt['totals']['rows']} rows "
            f"({gt['totals']['erc20_rows']} erc20, {gt['totals']['erc1155_rows']} erc1155)"
        )
        if args.no_serve:
            return 0
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        say("devchain: serving; Ctrl-C to stop")
        while not stop.wait(0.5):
            if not chain.alive():
                print("backfill-console devchain: anvil exited unexpectedly", file=sys.stderr)
                return 1
        say("devchain: stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
