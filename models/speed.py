"""Pick the training precision and XLA setting by timing them on this machine, not by rule.

Rules of thumb failed here. On an AVX2 machine XLA (`jit_compile`) made a small CNN 2.3x faster
(the team's design notes, shared/DESIGN.md). On the 2-core Xeon with AMX/AVX-512 bf16 used for the shipped models, XLA made
training SLOWER and kept mixed_bfloat16 away from oneDNN's bf16 kernels (emonet_s, batch 128,
images/s: float32 153 with XLA, 182 without; mixed_bfloat16 150 with XLA, 327 without). So
`--precision auto` / `--jit auto` time a few synthetic training steps of each candidate and keep
the fastest: tens of seconds against hours of training. Emulated bf16 (no hardware support) is ~8x
slower and never a candidate.

`python -m models.speed --arch emonet_s` prints the table for this machine.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

JIT_CHOICES = ("auto", "on", "off")


def cpu_has_bf16() -> bool:
    """Hardware bf16 (AVX512-BF16 or AMX); without it Keras emulates bf16, ~8x slower."""
    from engine.core.cpu import cpu_info

    flags = set(cpu_info()["features"])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def normalize_jit(jit) -> str:
    """Old run states stored a bool."""
    if jit is True:
        return "on"
    if jit is False:
        return "off"
    return jit


@dataclass
class SpeedChoice:
    precision: str  # float32 | mixed_bfloat16
    jit: bool
    #: images/s per candidate ("float32, XLA": 153.0, ...), empty when nothing was timed
    timings: dict[str, float] = field(default_factory=dict)
    how: str = "given"  # given (by the flags) | rule (a short run, or one started before timing) | measured | given on resume


def rule_precision(precision: str, has_bf16: bool) -> str:
    """What `auto` means untimed: bf16 wherever the hardware has it."""
    return precision if precision != "auto" else ("mixed_bfloat16" if has_bf16 else "float32")


def label(precision: str, jit: bool) -> str:
    return f"{precision}, {'XLA' if jit else 'no XLA'}"


def candidates(precision: str, jit: str, has_bf16: bool) -> list[tuple[str, bool]]:
    precs = [precision] if precision != "auto" else (["float32", "mixed_bfloat16"] if has_bf16 else ["float32"])
    jits = [jit == "on"] if jit != "auto" else [False, True]
    return [(p, j) for p in precs for j in jits]


def images_per_second(arch: str, n_classes: int, batch: int, precision: str, jit: bool, steps: int = 6) -> float:
    """Synthetic training steps of a fresh model (the data pipeline is not timed: it is the same
    for every candidate). The first epoch compiles and is not counted."""
    import keras
    import numpy as np

    from engine.core.contract import FACE_SIZE
    from models.archs import ARCHS

    before = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = ARCHS[arch](n_classes)
        model.compile(optimizer=keras.optimizers.AdamW(1e-4), loss="categorical_crossentropy", jit_compile=jit)
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (batch * steps, FACE_SIZE, FACE_SIZE, 1)).astype("float32")
        y = keras.utils.to_categorical(rng.integers(0, n_classes, len(x)), n_classes)
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        return len(x) / (time.perf_counter() - t0)
    finally:
        keras.mixed_precision.set_global_policy(before)
        keras.backend.clear_session()


def legacy_choice(precision: str, jit) -> SpeedChoice:
    """The setup of a run started before setups were timed: `auto` then meant bf16 wherever the
    CPU had it, and XLA was a bool (on by default). Its checkpoints carry that precision."""
    return SpeedChoice(rule_precision(precision, cpu_has_bf16()), normalize_jit(jit) != "off", how="rule")


def choose(arch: str, n_classes: int, batch: int, precision: str, jit: str, batches_per_epoch: int) -> SpeedChoice:
    """The fastest (precision, XLA) among the candidates the flags leave open.

    A run too short to repay the probe (a smoke run, a test) takes the rule instead: bf16 where the
    hardware has it, no XLA (its compile alone outlasts such a run)."""
    jit = normalize_jit(jit)
    has_bf16 = cpu_has_bf16()
    if precision == "mixed_bfloat16" and not has_bf16:
        print("warning: this CPU has no hardware bf16; mixed_bfloat16 will be ~8x slower", file=sys.stderr)
    cands = candidates(precision, jit, has_bf16)
    if len(cands) == 1:
        return SpeedChoice(*cands[0])
    if batches_per_epoch < 50:
        return SpeedChoice(rule_precision(precision, has_bf16), jit == "on", how="rule")
    print(f"timing {len(cands)} training setups for {arch} (precision/XLA auto) ...", file=sys.stderr)
    timings = {label(p, j): round(images_per_second(arch, n_classes, batch, p, j), 1) for p, j in cands}
    best = max(cands, key=lambda c: timings[label(*c)])
    print("  " + "; ".join(f"{k}: {v:.0f} img/s" for k, v in timings.items()) + f" -> {label(*best)}", file=sys.stderr)
    return SpeedChoice(best[0], best[1], timings, how="measured")


def main(argv: Sequence[str] | None = None) -> int:
    from engine.core.cliargs import Parser, positive_int

    p = Parser(prog="python -m models.speed", description="Training images/s of each precision x XLA setup on this machine.")
    p.add_argument("--arch", default="emonet_s", help="architecture to time [emonet_s]")
    p.add_argument("--classes", type=positive_int, default=7, help="number of classes [7]")
    p.add_argument("--batch", type=positive_int, default=128, help="batch size [128]")
    p.add_argument("--steps", type=positive_int, default=6, help="timed batches per setup, after one untimed pass [6]")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads (models.archs imports it)
    from engine.core.errors import UserError
    from models.archs import ARCHS

    if args.arch not in ARCHS:
        raise UserError(f"unknown arch {args.arch!r}: choose from {', '.join(ARCHS)}")
    has_bf16 = cpu_has_bf16()
    print(f"{args.arch}, batch {args.batch}, hardware bf16: {'yes' if has_bf16 else 'no (mixed_bfloat16 not timed)'}")
    rows = []
    for prec, jit in candidates("auto", "auto", has_bf16):
        rate = images_per_second(args.arch, args.classes, args.batch, prec, jit, args.steps)
        rows.append((label(prec, jit), rate))
        print(f"  {label(prec, jit):28s} {rate:8.0f} img/s", flush=True)
    best = max(rows, key=lambda r: r[1])
    print(f"fastest: {best[0]} (what models.train --precision auto --jit auto picks for a run of 50+ batches per epoch)")
    return 0


if __name__ == "__main__":
    from engine.core.errors import cli_main

    sys.exit(cli_main(main))
