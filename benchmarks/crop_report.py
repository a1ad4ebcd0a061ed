"""The tables of `crop_agreement.py`: its result record (crop_scoring.run) as plain text for the terminal
and as Markdown for --md, with the hard scenes' per-setting table (crop_scenes.breakdown_table).
"""
from __future__ import annotations

from benchmarks import crop_scenes, md_table, text_table


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _confidence_line(res: dict) -> str:
    bins = res.get("by_confidence") or []
    if not bins:
        return ""
    parts = [f"{b['margin_lo']:.1f}-{b['margin_hi']:.1f}: {_pct(b['share'])}% of faces, agreement {_pct(b['agreement'])}%, "
             f"direct accuracy {_pct(b['direct_accuracy'])}%" for b in bins]
    return (f"By the direct label's margin over its runner-up ({res.get('by_confidence_crop', 'default')} crop): "
            + "; ".join(parts) + ".\n")


def _ceiling_cost(res: dict) -> str:
    if "settings" in res:
        return "resampling, the skin colour and JPEG" if res["scenes"]["color"] == "skin" else "resampling and JPEG"
    return "resampling alone" if not res["params"].get("roll") else "resampling, and the turned corners filled from the border"


def tables(res: dict) -> tuple[str, str]:
    headers = ["align (keep roll)", "margin", "shift_y", "agree %", "engine acc %", "direct acc %", ""]
    rows = [[(f"on ({r['keep_roll_deg']:g})" if r["align"] else "off"), f"{r['margin']:.2f}", f"{r['shift_y']:+.2f}", _pct(r["agreement"]), _pct(r["engine_accuracy"]),
             _pct(res["direct_accuracy_detected"]), " ".join(t for t, on in (("best", r["best"]), ("default", r["default"])) if on)]
            for r in res["rows"]]
    b, g = res["best"], res["box_geometry"]
    summary = (f"{res['faces']} faces in {res['frames']} frames; detector missed {res['faces'] - res['detected']} "
               f"({_pct(res['miss_rate'])}%), {res['extra_detections']} extra detections, {res['detect_ms_per_frame']} ms/frame.\n"
               f"Direct 48x48 accuracy: {_pct(res['direct_accuracy_all'])}% on all faces, {_pct(res['direct_accuracy_detected'])}% on the detected ones"
               + (f", {_pct(res['missed_direct_accuracy'])}% on the missed ones" if res["missed_direct_accuracy"] is not None else "") + ".\n"
               f"Ceiling: the engine's crop of the true square agrees on {_pct(res['oracle_agreement'])}% "
               f"({_ceiling_cost(res)}); "
               f"the true side is {g['true_side_over_box_side']['p50']:.2f}x the detector's box side (p10-p90 "
               f"{g['true_side_over_box_side']['p10']:.2f}-{g['true_side_over_box_side']['p90']:.2f}), its centre "
               f"{abs(g['true_centre_below_box_centre']['p50']):.3f} sides {'below' if g['true_centre_below_box_centre']['p50'] >= 0 else 'above'}"
               f" the box centre.\n"
               + (f"Model stability: it gives the mirrored 48x48 face the same label on {_pct(res['flip_agreement'])}% of faces.\n"
                  if res["flip_agreement"] is not None else "Flip TTA on (engine.run --tta): every label averages the face and its mirror image.\n")
               + _confidence_line(res)
               + f"Best crop: margin {b['margin']:.2f}, shift_y {b['shift_y']:+.2f}, align {'on (keep roll ' + format(b['keep_roll_deg'], 'g') + ')' if b['align'] else 'off'}: "
               f"agreement {_pct(b['agreement'])}% (target {100 * res['target_agreement']:.0f}%: "
               f"{'met' if res['meets_target'] else 'NOT met'}), engine accuracy {_pct(b['engine_accuracy'])}%"
               + (f", against the FER+ majority {_pct(b['engine_ferplus_accuracy'])}% ({b['ferplus_faces']} faces)"
                  if b.get("engine_ferplus_accuracy") is not None else "") + ".")
    text = text_table(headers, rows) + "\n\n" + summary
    md = md_table(headers, rows, left=0) + "\n\n" + summary.replace("\n", "\n\n") + "\n"
    if "settings" in res:  # the hard scenes
        sc = res["scenes"]
        scene = (f"hard scenes ({sc['width']}x{sc['height']}, {', '.join(sc['backgrounds'])} from scikit-image; blurred "
                 f"backgrounds on {100 * sc['blur_share']:g}% of frames, JPEG q{sc['jpeg_quality'][0]}-{sc['jpeg_quality'][1]} on "
                 f"{100 * sc['jpeg_share']:g}%, {sc['color']} faces, context {sc['context']}; {sc['backgrounds_redrawn']} backgrounds "
                 "redrawn where the detector fired on the photo alone)")
        bh, br = crop_scenes.breakdown_table(res)
        miss = ", ".join(f"{k} px {_pct(v)}%" for k, v in res["miss_rate_by_size"].items())
        per = "Per setting ('all' rows are the margins; 'true-box agree' is the engine's crop of the true face square):\n\n"
        text += f"\n\nDetector miss rate by face side: {miss}.\n{per}" + text_table(bh, br)
        md += f"\nDetector miss rate by face side: {miss}.\n\n{per}" + md_table(bh, br, left=3) + "\n"
    else:
        scene = f"background {res['params']['background']}"
    return (text,
            f"Model `{res['model']}`{' with flip TTA' if res['params'].get('tta') else ''}"
            f"{', ' + str(res['params']['views']) + ' crops per face averaged' if res['params'].get('views', 1) > 1 else ''}, {res['params']['split']} split, {scene}, "
            + ("" if "settings" in res else f"faces turned by up to {res['params'].get('roll', 0):g} degrees, ")
            + f"face size {res['params']['size'][0]}-{res['params']['size'][1]} px, seed {res['params']['seed']}.\n\n" + md)
