"""The reports of `benchmarks/fps.py`: the summary and per-stage tables (text and Markdown) and the plot.

They read only the result dict `fps.benchmark` returns (the JSON file's content), so a saved JSON can be
turned into tables again.
"""
from __future__ import annotations

from pathlib import Path

from benchmarks import fmt, md_table, text_table
from benchmarks.fer_peer import FER_TARGET
from benchmarks.fps_stats import LATENCY_TARGET, STAGES, THROUGHPUT_TARGET
from engine.core.errors import UserError


def label(run: dict) -> str:
    """A configuration in a few words: backend-precision, threads, detector, and how frames were fed."""
    det = run["detector"] + ("+tiles" if run["tiles"] else "") + (f" every{run['every']}" if run.get("every", 1) > 1 else "") + (
        f" {run['detector_impl']}" if run.get("detector_impl") == "litert" else "")
    paced = f" realtime@{run['realtime_fps']:.3g}" if run.get("realtime_fps") else ""
    pre = " predecoded" if run.get("predecoded") else ""
    return f"{run['backend']}-{run['precision']} t{run['threads']} {det}{paced}{pre}"


SUMMARY_HEADERS = ("source", "config", "FPS", "e2e p50", "e2e p99", "detect p50", "classify p50", "ms/face",
                   "faces/frame", "frames w/ faces", "face px", "CPU %", "RSS MB", "FPS/bound", "e2e/sum", "start s",
                   "fer FPS", "x fer", "fer FPS w/ decode", "x fer w/ decode", "fer faces/frame", "fer frames w/ faces")


def _pct(n: int, total: int) -> str:
    return f"{n}/{total} ({100.0 * n / total:.0f}%)" if total else "-"


def _px(p: dict | None) -> str:
    return f"{p['p10']:.0f}-{p['p90']:.0f}" if p else "-"


def summary_rows(report: dict) -> list[list[str]]:
    rows = []
    fer = {f["source"]: f for f in report["fer"]}
    for r in report["runs"]:
        c, v = r["checks"], r["vs_fer"] or {}
        peer = fer.get(r["source"], {})
        rows.append([
            r["source"], label(r), fmt(r["fps"]), fmt(r["latency"]["p50"]), fmt(r["latency"]["p99"]),
            fmt(r["stages"]["detect"]["p50"], 2), fmt(r["stages"]["classify"]["p50"], 2),
            fmt((r["classify_ms_per_face"] or {}).get("p50"), 2), fmt(r["faces_per_frame"], 2),
            _pct(r["frames_with_faces"], r["frames"]), _px(r.get("face_px")), fmt(r["cpu_pct"], 0), fmt(r["peak_rss_mb"], 0),
            f"{c['throughput_ratio'] * 100:.0f}%" if c["throughput_ratio"] is not None else "-",
            f"{c['latency_ratio']:.2f}x" if c["latency_ratio"] is not None else "-",
            fmt(r["startup_s"], 2),
            fmt(v.get("fer_fps")), f"{v['speed_ratio']:.1f}x" if v.get("speed_ratio") else "-",
            fmt(v.get("fer_fps_with_decoding")),
            f"{v['speed_ratio_with_decoding']:.1f}x" if v.get("speed_ratio_with_decoding") else "-",
            fmt(v.get("fer_faces_per_frame"), 2),
            _pct(peer["frames_with_faces"], peer["frames"]) if "frames_with_faces" in peer else "-",
        ])
    for f in report["fer"]:
        if "error" in f:
            rows.append([f["source"], "fer (not run)"] + ["-"] * (len(SUMMARY_HEADERS) - 2))
            continue
        rows.append([f["source"], f"fer {f['version']} (Haar)", fmt(f["fps"]), "-", "-", "-", "-", "-",
                     fmt(f["faces_per_frame"], 2), _pct(f["frames_with_faces"], f["frames"]), _px(f.get("face_px")),
                     fmt(f["cpu_pct"], 0), fmt(f["peak_rss_mb"], 0), "-", "-", fmt(f["startup_s"], 2),
                     fmt(f["fps"]), "1.0x", fmt(f.get("fps_with_decoding")), "1.0x" if f.get("fps_with_decoding") else "-",
                     fmt(f["faces_per_frame"], 2), _pct(f["frames_with_faces"], f["frames"])])
    rows.sort(key=lambda row: row[0])  # stable: each source's rows together, ours first, fer last
    return rows


def stage_rows(report: dict) -> list[list[str]]:
    rows = []
    for r in report["runs"]:
        for st in (*STAGES, "total"):
            s = r["latency"] if st == "total" else r["stages"][st]
            rows.append([r["source"], label(r), "capture-to-output" if st == "total" else st,
                         fmt(s["p50"], 2), fmt(s["p90"], 2), fmt(s["p99"], 2)])
    return rows


def format_text(report: dict) -> str:
    lines = [text_table(SUMMARY_HEADERS, summary_rows(report)), ""]
    lines.append("times in ms; e2e = capture-to-output latency; face px = box side p10-p90; FPS/bound = FPS / (1000 / slowest thread's mean "
                 f"ms), target >= {THROUGHPUT_TARGET:.0%}; e2e/sum = e2e p50 / sum of stage medians, target <= {LATENCY_TARGET}x; "
                 f"x fer = vs fer on pre-decoded frames (like for like on 'predecoded' rows); x fer w/ decode = vs fer decoding "
                 f"the clip too, as the pipeline does; "
                 f"target >= {FER_TARGET:.0f}x")
    for s in report["skipped"]:
        lines.append(f"skipped {s['config']} on {s['source']}: {s['reason']}")
    for f in report["fer"]:
        if "error" in f:
            lines.append(f"fer not run on {f['source']}: {f['error']}")
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    m = report["machine"]
    out = [f"# End-to-end pipeline benchmark ({report['date']})", "",
           f"Machine: {m['cpu']} (CPU class **{m.get('isa_class', '?')}**), {m['cores']} cores ({', '.join(m['cpu_flags']) or 'no SIMD flags read'}), "
           f"{m['os']}, Python {m['python']}" + (f", 1-min load {m['load_avg_1m_at_start']} at start" if "load_avg_1m_at_start" in m else "") + ".",
           "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
           f"Settings: warm-up {report['settings']['warmup']} frames excluded, loop {report['settings']['loop']}, "
           f"sink {report['settings']['sink']}, {report['settings']['isolation']}.", "",
           "## Summary", "", md_table(SUMMARY_HEADERS, summary_rows(report), left=2), "",
           "Times in ms. e2e = capture-to-output latency. face px = side of the found face boxes, p10-p90. FPS/bound = FPS / (1000 / mean ms per frame of the slowest pipeline "
           f"thread), target >= {THROUGHPUT_TARGET:.0%}. e2e/sum = e2e p50 / sum of stage medians, target <= {LATENCY_TARGET}x. "
           "x fer = our FPS / fer's FPS on the same frames decoded before timing (fer does not pay for decoding; the "
           "pipeline does, except on rows marked 'predecoded', fed from the same kind of in-memory frames: like for like); x fer w/ decode = our FPS / fer's FPS when it reads each frame with the same decoder "
           f"first, as a fer script does (both sides decode). Target >= {FER_TARGET:.0f}x.", "",
           "## Per-stage latency (ms)", "", md_table(("source", "config", "stage", "p50", "p90", "p99"), stage_rows(report), left=3), "",
           "## Checks", ""]
    for r in report["runs"]:
        c = r["checks"]
        v = r["vs_fer"]
        if c["throughput_ratio"] is None:  # paced like a camera: the source sets the rate
            tput = (f"{r['fps']:.1f} FPS out of {r['realtime_fps']:.3g} FPS offered ({r['frames_dropped']} of "
                    f"{r['frames_read']} frames dropped), bound {c['bound_fps']:.1f} FPS")
        else:
            tput = (f"throughput {r['fps']:.1f} FPS vs bound {c['bound_fps']:.1f} (slowest thread {c['slowest_thread']}) = "
                    f"{c['throughput_ratio'] * 100:.0f}% ({'met' if c['throughput_ok'] else 'missed'})")
        out.append(f"- {r['source']} {label(r)}: {tput}; e2e p50 {r['latency']['p50']:.1f} ms vs stage sum "
                   f"{c['stage_median_sum_ms']:.1f} ms = {c['latency_ratio']:.2f}x ({'met' if c['latency_ok'] else 'missed'}); "
                   f"start-up {fmt(r['startup_s'], 2)} s (model+detector load {r['load_s']:.2f} s)"
                   + (f"; {v['speed_ratio']:.1f}x fer on pre-decoded frames ({'met' if v['ratio_ok'] else 'missed'})" if v and v.get("speed_ratio") else "")
                   + (f", {v['speed_ratio_with_decoding']:.1f}x fer decoding too ({'met' if v['speed_ratio_with_decoding'] >= FER_TARGET else 'missed'})"
                      if v and v.get("speed_ratio_with_decoding") else "")
                   + f". Equivalent: `{r['command']}`")
    for s in report["skipped"]:
        out.append(f"- skipped {s['config']} on {s['source']}: {s['reason']}")
    for f in report["fer"]:
        if "error" in f:
            out.append(f"- fer not run on {f['source']}: {f['error']}")
        else:
            out.append(f"- fer on {f['source']}: `{f['call']}`, {f['detector']}; {f['note']}.")
    return "\n".join(out) + "\n"


STAGE_COLORS = {"capture": "#8c8c8c", "detect": "#1f77b4", "classify": "#ff7f0e", "track": "#2ca02c",
                "overlay": "#9467bd", "sink": "#d62728"}


def write_plot(report: dict, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install matplotlib") from None
    names, fps, colors = [], [], []
    for src in dict.fromkeys([r["source"] for r in report["runs"]] + [f["source"] for f in report["fer"]]):
        for r in report["runs"]:  # each source's configurations, then the peer on the same frames
            if r["source"] == src:
                names.append(f"{src}\n{label(r)}")
                fps.append(r["fps"])
                colors.append("#1f77b4")
        for f in report["fer"]:
            if f["source"] == src and "error" not in f:
                names.append(f"{src}\nfer {f['version']} (Haar)")
                fps.append(f["fps"])
                colors.append("#7f7f7f")
    h = max(3.0, 0.55 * len(names) + 1.2)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, h), gridspec_kw={"width_ratios": [1, 1.3]})
    y = range(len(names))
    ax1.barh(list(y), fps, color=colors)
    for i, v in enumerate(fps):
        ax1.text(v, i, f" {v:.0f}", va="center", fontsize=8)
    ax1.set_yticks(list(y), names, fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xlabel("frames per second (end to end)")
    ax1.set_title("Throughput")
    runs = report["runs"]
    ry = list(range(len(runs)))
    left = [0.0] * len(runs)
    for st in STAGES:
        vals = [r["stages"][st]["p50"] for r in runs]
        ax2.barh(ry, vals, left=left, color=STAGE_COLORS[st], label=st)
        left = [a + b for a, b in zip(left, vals)]
    ax2.scatter([r["latency"]["p50"] for r in runs], ry, marker="|", s=200, color="black", label="capture-to-output p50", zorder=3)
    ax2.set_yticks(ry, [f"{r['source']}\n{label(r)}" for r in runs], fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xlabel("median ms per frame")
    ax2.set_title("Per-stage latency (stacked medians)")
    handles, labels = ax2.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"{report['machine']['cpu']} ({report['machine']['cores']} cores), {report['date']}", fontsize=9)
    fig.tight_layout(rect=(0, 0.6 / h, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
