"""Benchmark: our end-to-end backfill vs cryo (Rust, PyPI `cryo`) on the same devchain logs.

    .venv/bin/pip install -e '.[test,bench]'   # cryo==0.3.2 + polars (-e: this checkout stays)
    .venv/bin/python bench/cryo_compare.py [--days 1048] [--shards 8] [--repeat 3]

cryo fetches the logs of the configured contracts into an in-memory DataFrame (no store, no
decoding, no counterparty filter; that is less work than ours). We run the real Engine into a
fresh embedded ClickHouse. Both against the same anvil node, cryo first in each run (so nothing
of ours is still busy), a fresh store for every run; medians of the runs printed side by side.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.throughput import end_to_end, write_config  # noqa: E402
from engine.config import load_config  # noqa: E402
from engine.devchain import DevchainSpec, start_devchain  # noqa: E402


def cryo_rate(url: str, head: int, addresses: list[str], chunk: int) -> tuple[int, float]:
    import cryo

    t0 = time.perf_counter()
    rows = 0
    for address in addresses:
        df = cryo.collect(
            "logs",
            blocks=[f"0:{head + 1}"],
            rpc=url,
            contract=[address],
            inner_request_size=chunk,
            output_format="pandas",
            no_verbose=True,
        )
        rows += len(df)
    return rows, time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--days", type=int, default=1048)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--state-dir", default=str(ROOT / "data" / "devchain"))
    p.add_argument("--repeat", type=int, default=3, help="runs of each measurement (median)")
    args = p.parse_args()
    try:
        import cryo  # noqa: F401
    except ImportError:
        print("cryo is not installed: .venv/bin/pip install -e '.[test,bench]' (cryo, polars)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-cryo-"))
    state_dir = Path(args.state_dir)
    try:
        base = write_config(work, args.days, args.shards, "http://127.0.0.1:1", state_dir)
        cfg0 = load_config(base)
        spec = DevchainSpec.from_config(cfg0)
        c = cfg0.contracts
        addresses = sorted(set(c.erc20_tokens) | set(c.erc1155) | set(c.exchanges))
        ours_s: list[float] = []
        cryo_s: list[float] = []
        with start_devchain(spec, state_dir, log=print) as chain:
            for k in range(args.repeat):
                c_rows, c_s = cryo_rate(chain.url, chain.head_block, addresses, 2000)
                time.sleep(1.0)
                run_dir = work / f"run{k}"
                run_dir.mkdir()
                config = write_config(run_dir, args.days, args.shards, chain.url, state_dir)
                rows, e2e_s, _ = end_to_end(config)
                time.sleep(1.0)
                ours_s.append(e2e_s)
                cryo_s.append(c_s)
                print(f"run {k + 1}: ours {e2e_s:.2f}s, cryo {c_s:.2f}s")
        e2e_s, c_s = statistics.median(ours_s), statistics.median(cryo_s)
        print(f"days {args.days}, shards {args.shards}, medians of {args.repeat} run(s)")
        print(
            f"ours (end to end, into ClickHouse): {rows:>9,} rows in {e2e_s:6.2f}s = "
            f"{rows / e2e_s:>9,.0f} rows/s"
        )
        print(
            f"cryo (logs into a DataFrame)      : {c_rows:>9,} logs in {c_s:6.2f}s = "
            f"{c_rows / c_s:>9,.0f} logs/s"
        )
        print(f"ours / cryo: {(rows / e2e_s) / (c_rows / c_s):.2f} (target >= 1)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
