"""What --mqtt costs: FPS and peak RSS of `python -m engine.run` on the same clip with and without
`--mqtt` to a Mosquitto broker on this machine, interleaved rounds (off, on, off, on, ...) so a busy machine's
drift hits both alike. Each run is a fresh engine process playing the clip flat out (the hardest case: every
frame goes through the MQTT sink); its FPS is the engine's own `done: ... FPS` line, its peak RSS the kernel's
(os.wait4's ru_maxrss).

    python benchmarks/mqtt_cost.py                      # the shared 2-face clip x 20, 5 rounds
    python benchmarks/mqtt_cost.py --source clip.mp4 --loop 5 --rounds 3 --out benchmarks/results/mqtt_cost.md
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import REPO, SHARED, load_avg_1m

DONE = re.compile(r"done: (\d+) frames, (\d+) faces, ([\d.]+) FPS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker() -> tuple[subprocess.Popen, int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port, conf = free_port(), Path(tempfile.mkdtemp()) / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n" + ("user root\n" if os.geteuid() == 0 else ""))
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


def one_run(source: str, loop: int, mqtt: str | None) -> dict:
    cmd = [sys.executable, "-m", "engine.run", "--source", source, "--loop", str(loop), "--no-display",
           *(["--mqtt", mqtt, "--mqtt-required"] if mqtt else [])]
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    m = DONE.search(text)
    if proc.returncode != 0 or not m:
        raise SystemExit(f"engine.run failed ({proc.returncode}): {text[-800:]}")
    sent = re.search(r"mqtt: (\d+) messages queued .*?, (\d+) delivered, (\d+) dropped", text)
    return {"frames": int(m.group(1)), "fps": float(m.group(3)), "rss_mb": usage.ru_maxrss / 1024,
            "messages": int(sent.group(1)) if sent else 0, "dropped": int(sent.group(3)) if sent else 0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default=str(SHARED / "media" / "head-pose-face-detection-female-and-male.gif"))
    p.add_argument("--loop", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", type=Path, help="also write the Markdown table here")
    a = p.parse_args()
    if not Path(a.source).exists():
        raise SystemExit(f"{a.source} is not here: pass --source")
    mq, port = broker()
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    try:
        for r in range(a.rounds):
            for setting in (("off", "on") if r % 2 == 0 else ("on", "off")):
                runs[setting].append(one_run(a.source, a.loop, f"127.0.0.1:{port}" if setting == "on" else None))
                print(f"round {r + 1} {setting}: {runs[setting][-1]}", file=sys.stderr, flush=True)
    finally:
        mq.kill()
    med = {k: {f: statistics.median(x[f] for x in v) for f in ("fps", "rss_mb")} for k, v in runs.items()}
    spread = {k: (min(x["fps"] for x in v), max(x["fps"] for x in v)) for k, v in runs.items()}
    lines = [f"`python benchmarks/mqtt_cost.py --source {Path(a.source).name} --loop {a.loop} --rounds {a.rounds}`; "
             f"{runs['off'][0]['frames']} frames a run; load average (1 min) at the end {load_avg_1m():.1f}", "",
             "| | FPS (median) | FPS range | peak RSS (median) | messages a run | dropped |", "|---|---:|---:|---:|---:|---:|"]
    for k, label in (("off", "no --mqtt"), ("on", "--mqtt (broker on this machine)")):
        lines.append(f"| {label} | {med[k]['fps']:.0f} | {spread[k][0]:.0f}-{spread[k][1]:.0f} | {med[k]['rss_mb']:.1f} MB | "
                     f"{statistics.median(x['messages'] for x in runs[k]):.0f} | {sum(x['dropped'] for x in runs[k])} |")
    lines += ["", f"--mqtt / no --mqtt: FPS {med['on']['fps'] / med['off']['fps']:.3f}x, "
                  f"RSS {med['on']['rss_mb'] - med['off']['rss_mb']:+.1f} MB"]
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
