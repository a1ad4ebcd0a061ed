"""What CPU are we on, and may we import mediapipe here? Standard library only.

mediapipe 1.x aarch64 wheels are compiled for ARMv8.1 LSE atomics. On a Cortex-A72
(Raspberry Pi 4, ARMv8.0) the whole process dies with SIGILL ("This binary was compiled
with lse enabled, but this feature is not available on this processor" / "Illegal
instruction") as soon as mediapipe's native library runs: a bare `import mediapipe` may
survive, creating a Tasks FaceDetector does not. No Python exception, nothing to catch. So the engine
asks `mediapipe_safe()` BEFORE importing mediapipe and, where it says no, runs the same
BlazeFace model through LiteRT instead (`engine.blazeface.LiteRTFaceDetector`).

The kernel reports LSE as the `atomics` flag on the `Features` line of /proc/cpuinfo
(Pi 4: `fp asimd evtstrm crc32 cpuid`; Pi 5, Cortex-A76: `... atomics ...`).

Override: the environment variable `EMOTION_DETECTOR` (see `detector_override()`) is for
the caller that picks the detector: `EMOTION_DETECTOR=litert` forces the LiteRT BlazeFace
detector everywhere (no mediapipe import at all), `EMOTION_DETECTOR=mediapipe` forces the
MediaPipe Tasks detector even where this module says it is unsafe (at your own risk: on a
Pi 4 the process dies). Unset or `auto`: decide with `mediapipe_safe()`.
"""
from __future__ import annotations

import os
import platform

CPUINFO = "/proc/cpuinfo"
DETECTOR_ENV = "EMOTION_DETECTOR"
DETECTOR_CHOICES = ("auto", "mediapipe", "litert")

#: ARM "CPU part" numbers (implementer 0x41) a user is likely to meet.
ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd0d": "Cortex-A77",
    "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2",
    "0xd4f": "Neoverse-V2",
}


def _is_arm64(machine: str) -> bool:
    return machine.lower() in ("aarch64", "arm64", "armv8l", "armv8b")


def cpu_info(path: str = CPUINFO) -> dict:
    """A summary of the CPU: arch, features, model name, ARM part and board model.

    Keys: `machine` (platform.machine()), `features` (sorted list of the `Features` or
    `flags` tokens of the first processor), `model_name`, `cpu_part` (e.g. "0xd08"),
    `core` (e.g. "Cortex-A72" when the part is known), `board` (e.g. "Raspberry Pi 4
    Model B Rev 1.4"), `cpus` (processor count), `cpuinfo_readable` (False when the file
    could not be read, e.g. on macOS or Windows).
    """
    info: dict = {
        "machine": platform.machine(),
        "features": [],
        "model_name": "",
        "cpu_part": "",
        "core": "",
        "board": "",
        "cpus": 0,
        "cpuinfo_readable": False,
    }
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return info
    info["cpuinfo_readable"] = True
    features: list[str] | None = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        value = value.strip()
        if key == "processor":
            info["cpus"] += 1
        elif key in ("features", "flags") and features is None:
            features = value.split()
        elif key == "model name" and not info["model_name"]:
            info["model_name"] = value
        elif key == "cpu part" and not info["cpu_part"]:
            info["cpu_part"] = value.lower()
        elif key == "model" and not info["board"] and not value.isdigit():
            info["board"] = value  # the Raspberry Pi's "Model : Raspberry Pi 4 Model B"
    info["features"] = sorted(set(features or []))
    info["core"] = ARM_PARTS.get(info["cpu_part"], "")
    if not info["model_name"] and info["core"]:
        info["model_name"] = info["core"]
    return info


def mediapipe_safe(info: dict | None = None) -> tuple[bool, str]:
    """(True, "") when importing mediapipe cannot kill this process; (False, reason) otherwise.

    False only on 64-bit ARM whose /proc/cpuinfo `Features` line lacks `atomics`
    (ARMv8.1 LSE), i.e. a Cortex-A72 Raspberry Pi 4 or older cores. Everywhere else,
    including an unreadable /proc/cpuinfo, the answer is True.
    """
    info = cpu_info() if info is None else info
    if not _is_arm64(info.get("machine", "")):
        return True, ""
    if not info.get("cpuinfo_readable") or not info.get("features"):
        return True, ""
    if "atomics" in info["features"]:
        return True, ""
    core = info.get("core") or info.get("model_name") or "this ARM CPU"
    return False, (
        f"{core} lacks the ARMv8.1 LSE atomics that mediapipe 1.x wheels are compiled for "
        "(running mediapipe would kill the process with 'Illegal instruction'), so faces are found by "
        "the same BlazeFace model run through LiteRT instead"
    )


def detector_override() -> str:
    """The `EMOTION_DETECTOR` choice: "auto" (unset), "mediapipe" or "litert".

    Raises ValueError for any other value; the caller turns it into a UserError.
    """
    value = os.environ.get(DETECTOR_ENV, "").strip().lower() or "auto"
    if value not in DETECTOR_CHOICES:
        raise ValueError(f"{DETECTOR_ENV}={value!r}: choose from {', '.join(DETECTOR_CHOICES)}")
    return value


def choose_detector() -> tuple[str, str]:
    """("mediapipe" | "litert", why): the env override if set, else `mediapipe_safe()`."""
    choice = detector_override()
    if choice != "auto":
        return choice, f"{DETECTOR_ENV}={choice}"
    safe, reason = mediapipe_safe()
    return ("mediapipe", "") if safe else ("litert", reason)


if __name__ == "__main__":  # python -m engine.cpu: what would the engine pick here?
    _info = cpu_info()
    _safe, _reason = mediapipe_safe(_info)
    try:
        _choice = "%s (%s)" % choose_detector()
    except ValueError as _exc:
        _choice = f"error: {_exc}"
    print(f"machine:   {_info['machine']}  {_info['model_name'] or _info['core']}  {_info['board']}".rstrip())
    if _is_arm64(_info["machine"]):
        print(f"atomics:   {'yes' if 'atomics' in _info['features'] else 'no'} (ARMv8.1 LSE, in /proc/cpuinfo Features)")
    print(f"mediapipe: {'safe to import' if _safe else 'NOT safe: ' + _reason}")
    print(f"detector:  {_choice.replace(' ()', '')}")
