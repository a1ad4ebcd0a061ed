"""The report of `serve_cost.py`: per input and setting the medians and the per-round ratios to the run
without --serve (`summarise`), and the Markdown page benchmarks/results/serve_cost.md (`markdown`).
"""
from __future__ import annotations

import statistics

from benchmarks import fmt, md_table
from benchmarks.serve_runs import SETTINGS, VIEWERS


def summarise(runs: list[dict]) -> dict:
    """Per input and setting: median FPS/RSS/CPU, and the median of per-round ratios to `off`."""
    out: dict = {}
    for inp in sorted({r["input"] for r in runs}):
        mine = [r for r in runs if r["input"] == inp]
        off_by_round = {r["round"]: r for r in mine if r["setting"] == "off"}
        out[inp] = {}
        for setting in SETTINGS:
            rs = [r for r in mine if r["setting"] == setting]
            ratios = [r["fps"] / off_by_round[r["round"]]["fps"] for r in rs if off_by_round.get(r["round"], {}).get("fps")]
            rss_d = [r["rss_mb"] - off_by_round[r["round"]]["rss_mb"] for r in rs if r["round"] in off_by_round]
            out[inp][setting] = {
                "fps_median": round(statistics.median(r["fps"] for r in rs), 1),
                "fps_each": [r["fps"] for r in rs],
                "fps_ratio_to_off_median": round(statistics.median(ratios), 3) if ratios else None,
                "fps_ratio_to_off_each": [round(x, 3) for x in ratios],
                "cpu_pct_median": round(statistics.median(r["cpu_pct"] for r in rs), 1),
                "rss_mb_median": round(statistics.median(r["rss_mb"] for r in rs), 1),
                "rss_mb_vs_off_median": round(statistics.median(rss_d), 1) if rss_d else None,
                "viewer_jpeg_fps_median": round(statistics.median(x for r in rs for x in r["viewer_jpeg_fps"]), 1) if VIEWERS[setting] else None,
                "load_avg_1m": [r["load_avg_1m"] for r in rs],
            }
    return out


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Live view cost (`engine.run --serve`)", "",
             f"Measured {report['when']} on {m['cpu']} (CPU class **{m['isa_class']}**, {m['cores']} cores), "
             f"1-minute load average {report['load_avg_1m_range'][0]}-{report['load_avg_1m_range'][1]} during the runs "
             f"(a training job shared the cores). Face detector: {', '.join(report['detectors']) or '?'}. "
             f"Command: `{report['command']}`.", "",
             f"Each number is the median of {report['repeats']} interleaved rounds; `x off` is the median of per-round "
             f"ratios to the run without --serve. A viewer = one /stream.mjpg + one /events reader (what the page opens), "
             f"stream capped at {report['stream_fps']} JPEG/s. FPS: the file played flat out, {report['seconds']} s windows.", ""]
    rows = []
    for inp, per in report["summary"].items():
        for setting, s in per.items():
            rows.append([inp, setting, fmt(s["fps_median"]), fmt(s["fps_ratio_to_off_median"], 3), fmt(s["cpu_pct_median"], 0),
                         fmt(s["rss_mb_median"]), fmt(s["rss_mb_vs_off_median"]), fmt(s["viewer_jpeg_fps_median"])])
    lines.append(md_table(["input", "setting", "FPS", "x off", "CPU %", "RSS MB", "RSS vs off", "JPEG/s per viewer"], rows, left=2))
    spread = []
    for inp, per in report["summary"].items():
        each = per["off"]["fps_each"]
        spread.append(f"{inp} {min(each):.0f}-{max(each):.0f} FPS (±{50 * (max(each) - min(each)) / statistics.median(each):.0f}%)")
    lines += ["", "Noise floor: the runs without --serve alone spread " + ", ".join(spread) + " across rounds, on this "
              "busy machine; differences smaller than that are not measurable here."]
    f = report["flatness"] or {}
    lines += [] if not f else ["", f"RSS flatness: {f['frames']} frames in {f['seconds']} s with --serve, a viewer connecting, reading 2 s and "
              f"dropping {f['viewer_cycles']} times: RSS {f['rss_mb_after_10pct']} MB at 10% of the frames, "
              f"{f['rss_mb_min_after_10pct']}-{f['rss_mb_max_after_10pct']} MB from there on, {f['rss_mb_end']} MB at the end; "
              f"slope over the second half {f['rss_slope_mb_per_1000_frames_second_half']} MB per 1000 frames."]
    s = report["server_startup"]
    lines += ["", f"Server start-up (fresh interpreter with engine.run's own imports already loaded): importing "
              f"http.server + engine.serve.live {s['import_ms']} ms, bind and start {s['bind_and_start_ms']} ms, "
              f"+{s['rss_added_mb']} MB RSS (median of 3)."]
    return "\n".join(lines) + "\n"
