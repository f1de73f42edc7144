"""How good is the ETA? Real headless runs on the devchain, the live ETA read every second.

    .venv/bin/python bench/eta.py [--quick]

Scenarios (each a real `backfill-console --no-ui` run: anvil devchain, worker processes, chdb):
  devchain   48 days, 4 shards, a request budget that makes the run last ~1-2 min
  throttled  24 days, 2 shards, a tight budget (1 request/s per worker)
  scaled     48 days, 2 shards, `ctl scale 4` at 30% of the days
Each run's progress (`ctl status --json`: days COMPLETE, ETA, its note) is recorded once a second
and written to $TMPDIR/bench-eta-<scenario>.json; then, at the first sample with 10%, 25% and 50%
of the days COMPLETE, the ETA is compared with the time the last day actually took to COMPLETE:
error = (ETA - actual) / actual. Target: |error| <= 25% from 10% on. An ETA still "calculating"
at a point is printed as such and counts as a miss.

Loopback only; a run is stopped as soon as its last day is COMPLETE (no rebuild is timed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POINTS = (0.10, 0.25, 0.50)
TARGET = 0.25
SCENARIOS = {
    "devchain": {"days": 48, "shards": 4, "rps": 6.0, "scale_at": None},
    "throttled": {"days": 24, "shards": 2, "rps": 2.0, "scale_at": None},
    "scaled": {"days": 48, "shards": 2, "rps": 6.0, "scale_at": (0.30, 4)},
}


def write_config(folder: Path, devchain: Path, days: int, shards: int, rps: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(
        f"""[rpc]
requests_per_second = {rps}
timeout_s = 10.0
[clickhouse]
path = "clickhouse"
[backfill]
days = {days}
shards = {shards}
confirmations = 2
data_dir = "backfill"
[monitor]
stall_after_s = 120
check_interval_s = 1
[devchain]
state_dir = "{devchain}"
seed = 7
blocks_per_day = 48
wallets = 12
transfers_per_day = 40
"""
    )
    return path


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("ETHEREUM_RPC_URLS", "SHARDS")}
    e["PYTHONPATH"] = str(ROOT)
    return e


def ctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "ctl", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        env=env(),
        timeout=30,
    )


def run(name: str, spec: dict, base: Path, devchain: Path) -> dict:
    config = write_config(base / name, devchain, spec["days"], spec["shards"], spec["rps"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "--no-ui", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env(),
    )
    samples: list[dict] = []
    scaled = False
    t0 = None
    try:
        while proc.poll() is None:
            time.sleep(1.0)
            out = ctl(config, "status", "--json")
            if out.returncode != 0:
                continue
            st = json.loads(out.stdout)
            now = time.monotonic()
            if t0 is None and st["state"] == "running":
                t0 = now
            if t0 is None:
                continue
            samples.append(
                {
                    "t": round(now - t0, 2),
                    "days": st["days_complete"],
                    "total": st["days_total"],
                    "eta_s": st.get("eta_s"),
                    "note": st.get("eta_note", ""),
                    "shards": st["shards"],
                }
            )
            frac = st["days_complete"] / st["days_total"]
            if spec["scale_at"] and not scaled and frac >= spec["scale_at"][0]:
                ctl(config, "scale", str(spec["scale_at"][1]))
                scaled = True
            if st["days_complete"] >= st["days_total"]:
                break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
    trace = Path(tempfile.gettempdir()) / f"bench-eta-{name}.json"
    trace.write_text(json.dumps(samples))
    print(f"{name}: {len(samples)} samples in {trace}", flush=True)
    return evaluate(samples)


def evaluate(samples: list[dict]) -> dict:
    """Errors of the ETA at POINTS against the time the last day was actually COMPLETE."""
    end = next((s["t"] for s in samples if s["days"] >= s["total"]), None)
    out: dict = {"duration_s": end, "points": {}}
    if end is None:
        return out
    for p in POINTS:
        s = next((s for s in samples if s["days"] >= p * s["total"]), None)
        if s is None:
            continue
        actual = end - s["t"]
        if s["eta_s"] is None:
            out["points"][p] = (None, actual, s["note"] or "calculating")
        else:
            out["points"][p] = ((s["eta_s"] - actual) / actual if actual > 0 else 0.0, actual, "")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="only the devchain scenario")
    ap.add_argument("--only", choices=sorted(SCENARIOS), help="one scenario")
    args = ap.parse_args()
    names = [args.only] if args.only else (["devchain"] if args.quick else list(SCENARIOS))
    with tempfile.TemporaryDirectory(prefix="bench-eta-") as tmp:
        base = Path(tmp)
        results = {n: run(n, SCENARIOS[n], base, base / "devchain") for n in names}
    print(
        f"{'scenario':<10} {'run s':>6}  "
        + "  ".join(f"{int(p * 100):>3}%: err (left s)" for p in POINTS)
    )
    worst = 0.0
    missed = 0
    for name, res in results.items():
        cells = []
        for p in POINTS:
            got = res["points"].get(p)
            if got is None:
                cells.append(f"{'-':>18}")
                missed += 1
            elif got[0] is None:
                cells.append(f"{got[2][:11]:>11} ({got[1]:>4.0f})")
                missed += 1
            else:
                worst = max(worst, abs(got[0]))
                cells.append(f"{got[0] * 100:>+9.0f}% ({got[1]:>4.0f})")
        dur = res["duration_s"]
        print(f"{name:<10} {dur if dur is not None else float('nan'):>6.0f}  " + "  ".join(cells))
    ok = worst <= TARGET and missed == 0
    print(
        f"worst |error| {worst * 100:.0f}% (target <= {TARGET * 100:.0f}% from 10% on); "
        f"points without an estimate: {missed}: {'MET' if ok else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
