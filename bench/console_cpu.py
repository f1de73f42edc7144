"""Benchmark: CPU of the console process at steady state with 12 workers (target <= 5% of a core).

    .venv/bin/python bench/console_cpu.py [--workers 12] [--seconds 20]

Runs the real `backfill-console` (the TUI, in a detached 200x50 tmux pane, and then `--no-ui`) on a
60-day devchain with a low request budget so the 12 workers stay busy, waits for steady state, and
measures the console process's own CPU time (psutil; workers and anvil are separate processes).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def write_config(folder: Path, workers: int, state_dir: Path) -> Path:
    path = folder / "config.toml"
    path.write_text(
        f"""
[rpc]
requests_per_second = 12.0
[clickhouse]
path = "clickhouse"
[backfill]
days = 60
shards = {workers}
confirmations = 2
data_dir = "backfill"
[devchain]
state_dir = "{state_dir}"
"""
    )
    return path


def find_console(parent_pid: int) -> psutil.Process | None:
    for p in psutil.Process(parent_pid).children(recursive=True):
        try:
            if "engine.cli" in " ".join(p.cmdline()):
                return p
        except psutil.Error:
            continue
    return None


def measure(proc: psutil.Process, warmup: float, seconds: float) -> float:
    time.sleep(warmup)
    c0 = sum(proc.cpu_times()[:2])
    t0 = time.monotonic()
    time.sleep(seconds)
    c1 = sum(proc.cpu_times()[:2])
    return 100.0 * (c1 - c0) / (time.monotonic() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=12)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--state-dir", default=str(ROOT / "data" / "devchain"))
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    try:
        config = write_config(work, args.workers, Path(args.state_dir))
        py = sys.executable
        # Build/load the chain once so start-up is not measured.
        subprocess.run(
            [py, "-m", "engine.cli", "devchain", "--config", str(config), "--no-serve"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        results = {}
        if shutil.which("tmux"):
            name = "bench-console-cpu"
            cmd = f"cd {ROOT} && env -u COLUMNS -u LINES {py} -m engine.cli --config {config}"
            subprocess.run(
                ["tmux", "new-session", "-d", "-s", name, "-x", "200", "-y", "50", cmd], check=True
            )
            try:
                pane_pid = int(
                    subprocess.run(
                        ["tmux", "display-message", "-p", "-t", name, "#{pane_pid}"],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                )
                time.sleep(3)
                proc = find_console(pane_pid) or psutil.Process(pane_pid)
                results["TUI (200x50)"] = measure(proc, 5, args.seconds)
            finally:
                subprocess.run(["tmux", "send-keys", "-t", name, "q"])
                time.sleep(0.5)
                subprocess.run(["tmux", "send-keys", "-t", name, "y"])
                time.sleep(5)
                subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
        shutil.rmtree(work / "backfill", ignore_errors=True)
        shutil.rmtree(work / "clickhouse", ignore_errors=True)
        headless = subprocess.Popen(
            [py, "-m", "engine.cli", "--no-ui", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        try:
            results["--no-ui"] = measure(psutil.Process(headless.pid), 8, args.seconds)
        finally:
            headless.terminate()
            headless.wait(60)
        for what, pct in results.items():
            print(
                f"console CPU, {args.workers} workers, {what:<13}: {pct:5.1f}% of one core "
                f"(target <= 5%)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
