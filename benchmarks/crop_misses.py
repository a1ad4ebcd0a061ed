#!/usr/bin/env python
"""Why BlazeFace misses FER faces in the hard scenes: the detector's miss rate per face size, against
the context around the face, its colour and the detector model.

FER2013 faces are tight crops (no hair, no chin, a hard square edge) and grey; BlazeFace learnt whole
heads in colour. Each configuration composes the same validation faces with the same seed
(benchmarks/crop_scenes.py: 640x480 real-photo backgrounds, sharp or blurred, half JPEG-recompressed,
64-256 px faces) and runs only the detector:

  - detector: short range (the engine's default, 128x128 input), full range (192x192), or short range
    on 2x3 overlapping tiles as well (`engine.run --tiles`, the engine's answer to small faces);
  - context: none (the tight square), replicate / blur (the face padded by a quarter of its side on
    each side with its own border pixels, sharp or blurred, feathered into the photo);
  - colour: grey or a skin chroma (same luma).

A control on real faces (`--portraits N`): the two packaged portraits (skimage's astronaut, matplotlib's
Grace Hopper), N placements, cut FER-tight (context none) or with their real hair, ears and chin around
the same square (context photo): what the tight framing itself costs, which the padding proxies cannot say.

Reported per configuration: the miss rate at the engine's threshold (0.5) and at 0.3 (near misses),
per face-size bin, per background (sharp / blurred) and per JPEG or not; and where the detector puts
its box on the faces it finds (true side / box side, true centre below the box centre, in sides), which
says whether the engine's crop margin, chosen on tight faces, carries over to faces with context; and
the true side over the eye distance (the keypoints), a measure the context around a face cannot move.

Examples:
  python benchmarks/crop_misses.py                                   # 1000 faces, every configuration
  python benchmarks/crop_misses.py --n 2000 --json benchmarks/results/crop_hard_misses.json --md benchmarks/results/crop_hard_misses.md
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence


import numpy as np

from benchmarks import SHARED, crop_scenes, machine_info, md_table, now_utc, package_versions, rel, text_table, write_json, write_text
from engine.core.cliargs import Parser, positive_int
from engine.core.errors import UserError, cli_main

DEFAULT_DATA = SHARED / "data" / "fer2013"
DETECTORS = ("short", "full", "tiles")  # tiles: short range on the frame and on 2x3 tiles (engine.run --tiles)
THRESHOLDS = (0.5, 0.3)  # the engine's --min-face-score, and a lower one: how near the misses were


def _names(allowed: Sequence[str]):
    def parse(text: str) -> tuple[str, ...]:
        vals = tuple(v.strip() for v in text.split(",") if v.strip())
        bad = [v for v in vals if v not in allowed]
        if not vals or bad:
            raise argparse.ArgumentTypeError(f"{text!r}: use a comma-separated list of {', '.join(allowed)}")
        return vals
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python benchmarks/crop_misses.py", description=__doc__.split("\n\n")[0],
               epilog="Examples:" + __doc__.split("Examples:", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="FER-style data (folders or fer2013.csv) [../shared/data/fer2013]")
    p.add_argument("--split", default="validation", help="which split's faces [validation]")
    p.add_argument("--n", type=positive_int, default=1000, help="faces per configuration [1000]")
    p.add_argument("--detectors", type=_names(DETECTORS), default=DETECTORS, help="short,full,tiles [all]")
    p.add_argument("--contexts", type=_names(crop_scenes.FER_CONTEXTS), default=crop_scenes.FER_CONTEXTS, help="none,replicate,blur [all]")
    p.add_argument("--colors", type=_names(crop_scenes.COLORS), default=crop_scenes.COLORS, help="gray,skin [both]")
    p.add_argument("--portraits", type=int, default=400, help="placements of the packaged portraits for the real-context control (0: none) [400]")
    p.add_argument("--detector-impl", default="auto", help="auto, mediapipe or litert [auto]")
    p.add_argument("--seed", type=int, default=0, help="face choice and frames [0]")
    p.add_argument("--json", help="write the results as JSON")
    p.add_argument("--md", help="write the results as a Markdown table")
    return p


def measure(faces: np.ndarray, seed: int, detector, screen, context: str, color: str) -> dict:
    """One configuration: compose, detect (at the lowest threshold), split the misses."""
    n = len(faces)
    cfg = crop_scenes.HardScenes(context=context, color=color)
    scenes = crop_scenes.compose_hard(faces, np.random.default_rng(seed), cfg, screen=screen)
    setting = crop_scenes.face_settings(scenes, n)
    score = np.zeros(n)
    scale, below, eyes = [], [], []
    extra = 0
    for s in scenes:
        dets = detector.detect(s.frame)
        hits = [None if j is None else dets[j] for j in crop_scenes.match(dets, [b for _, b in s.placed])]
        extra += sum(d.score >= THRESHOLDS[0] for d in dets) - sum(h is not None and h.score >= THRESHOLDS[0] for h in hits)
        for (i, (x, y, side, _)), hit in zip(s.placed, hits):
            if hit is None:
                continue
            score[i] = hit.score
            if hit.score >= THRESHOLDS[0]:
                bx, by, bw, bh = hit.box
                scale.append(side / max(bw, bh))
                below.append((y + side / 2 - (by + bh / 2)) / side)
                kp = hit.keypoints
                if len(kp) >= 2:
                    eyes.append(side / max(1e-6, float(np.hypot(kp[1][0] - kp[0][0], kp[1][1] - kp[0][1]))))

    def miss(mask: np.ndarray, t: float):
        return None if not mask.any() else float((score[mask] < t).mean())

    everything = np.ones(n, bool)
    groups = {"all": everything}
    groups.update({f"{crop_scenes.bin_name(k)} px": setting["size"] == k for k in range(len(crop_scenes.SIZE_BINS))})
    groups.update({"sharp": ~setting["blur"], "blurred": setting["blur"], "no jpeg": ~setting["jpeg"], "jpeg": setting["jpeg"]})
    q = (10, 50, 90)
    return {
        "faces": n, "frames": len(scenes), "extra_detections": int(extra),
        "miss_rate": {g: miss(m, THRESHOLDS[0]) for g, m in groups.items()},
        "miss_rate_at_0.3": {g: miss(m, THRESHOLDS[1]) for g, m in groups.items()},
        "true_side_over_box_side": {f"p{v}": round(float(np.percentile(scale, v)), 3) for v in q} if scale else None,
        "true_centre_below_box_centre": {f"p{v}": round(float(np.percentile(below, v)), 3) for v in q} if below else None,
        "true_side_over_eye_distance": {f"p{v}": round(float(np.percentile(eyes, v)), 3) for v in q} if eyes else None,
    }


def run(args: argparse.Namespace) -> dict:
    from engine.core.contract import FER_CLASSES
    from engine.faces.detect import DetectorOptions, create_detector
    from engine.core.logs import quiet
    from models.data import load_split

    t_start = time.time()
    data = load_split(args.data, args.split, FER_CLASSES, quiet=True)
    if len(data) == 0:
        raise UserError(f"{args.data} has no {args.split} faces")
    pick = np.sort(np.random.default_rng(args.seed).permutation(len(data))[: min(args.n, len(data))])
    faces = data.x[pick, :, :, 0]
    with quiet():
        # one screen for every configuration (the short-range detector at the engine's threshold): the same backgrounds for both detectors
        screen = create_detector(DetectorOptions(model="short", min_score=THRESHOLDS[0], impl=args.detector_impl, video=False))
        detectors = {m: create_detector(DetectorOptions(model="short" if m == "tiles" else m, tiles=m == "tiles", min_score=THRESHOLDS[1],
                                                        impl=args.detector_impl, video=False)) for m in args.detectors}
    configs, portraits = [], []
    try:
        for model, det in detectors.items():
            for context in args.contexts:
                for color in args.colors:
                    t0 = time.time()
                    r = measure(faces, args.seed, det, screen, context, color)
                    configs.append({"detector": model, "context": context, "color": color, **r})
                    print(f"crop_misses: {model} {context} {color}: miss {100 * r['miss_rate']['all']:.1f}% "
                          f"({time.time() - t0:.0f} s)", file=sys.stderr)
        if args.portraits:
            for wide in (False, True):
                base = crop_scenes.portrait_faces(context=wide)
                flips = np.random.default_rng(args.seed).random(args.portraits) < 0.5
                people = np.stack([base[k % len(base)][:, ::-1] if f else base[k % len(base)] for k, f in enumerate(flips)])
                for model, det in detectors.items():
                    for color in args.colors:
                        r = measure(people, args.seed, det, screen, "photo" if wide else "none", color)
                        portraits.append({"detector": model, "context": "photo" if wide else "none", "color": color, **r})
    finally:
        with quiet():
            screen.close()
            for det in detectors.values():
                det.close()
    return {
        "benchmark": "crop_misses",
        "date": now_utc(),
        "machine": machine_info(),
        "versions": package_versions(),
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k not in ("json", "md")},
        "data": rel(args.data),
        "scenes": {"width": 640, "height": 480, "size": [64, 256], "backgrounds": list(crop_scenes.BACKGROUNDS),
                   "context_pad": crop_scenes.CONTEXT_PAD},
        "thresholds": list(THRESHOLDS),
        "configs": configs,
        "portraits": portraits,
        "seconds": round(time.time() - t_start, 1),
    }


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _row(c: dict, context: str, groups: list[str]) -> list[str]:
    def p50(key: str, fmt: str) -> str:
        return "-" if not c.get(key) else format(c[key]["p50"], fmt)

    def spread(key: str) -> str:  # p10-p90 width over the median: how much a crop based on it wanders
        v = c.get(key)
        return "-" if not v else f"{(v['p90'] - v['p10']) / v['p50']:.2f}"

    return ([c["detector"], context, c["color"]] + [_pct(c["miss_rate"][k]) for k in groups]
            + [_pct(c["miss_rate_at_0.3"]["all"]), p50("true_side_over_box_side", ".2f"), spread("true_side_over_box_side"),
               p50("true_centre_below_box_centre", "+.3f"), p50("true_side_over_eye_distance", ".2f"), spread("true_side_over_eye_distance")])


def tables(res: dict) -> tuple[str, str]:
    groups = list(res["configs"][0]["miss_rate"])
    headers = (["detector", "context", "colour"] + [f"miss % {g}" for g in groups]
               + ["miss % all @0.3", "true side / box (p50)", "its spread", "centre below box (p50)", "true side / eye distance (p50)", "its spread"])
    rows = [_row(c, c["context"], groups) for c in res["configs"]]
    rows += [_row(c, f"portraits, {c['context']}", groups) for c in res.get("portraits", [])]
    note = (f"{res['configs'][0]['faces']} {res['params']['split']} faces per configuration, seed {res['params']['seed']}, "
            f"hard scenes (640x480, real photos, 64-256 px faces, half blurred, half JPEG); miss = no detection at score >= 0.5 "
            f"with its centre inside the face square; spread = (p90 - p10) / p50. 'portraits' rows: the control on the two packaged real faces "
            f"({res['params']['portraits']} placements), FER-tight (none) or with their real surroundings (photo).")
    return text_table(headers, rows) + "\n\n" + note, md_table(headers, rows, left=3) + "\n\n" + note + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    crop_scenes.require_default_data(args.data, DEFAULT_DATA)
    res = run(args)
    text, md = tables(res)
    print(text)
    for path, write, body in ((args.json, write_json, res), (args.md, write_text, md)):
        if path:
            write(path, body)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
