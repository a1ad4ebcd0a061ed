"""What CPU are we on, and may we import mediapipe here? Standard library only.

mediapipe 1.x aarch64 wheels are compiled for ARMv8.1 LSE atomics. On a Cortex-A72
(Raspberry Pi 4, ARMv8.0) the whole process dies with SIGILL ("This binary was compiled
with lse enabled, but this feature is not available on this processor" / "Illegal
instruction") as soon as mediapipe's native library runs: a bare `import mediapipe` may
survive, creating a Tasks FaceDetector does not. No Python exception, nothing to catch. So the engine
asks `mediapipe_safe()` BEFORE importing mediapipe and, where it says no, runs the same
BlazeFace model through LiteRT instead (`engine.faces.blazeface.LiteRTFaceDetector`).

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


#: The CPU classes speed and int8 behaviour differ by, fastest int8 first within each family.
#: (class, what a user would call it, why it matters) -- the one table benchmarks, docs and checks use.
ISA_CLASSES = (
    ("amx", "x86 with AMX (Sapphire Rapids and later Xeons)", "int8/bf16 tile matrix units: int8 ~10x the AVX2 rate"),
    ("avx512-vnni", "x86 with AVX-512 VNNI (Ice Lake/Cascade Lake Xeons, AMD Zen 4+)", "int8 dot products: int8 faster than float"),
    ("avx512", "x86 with AVX-512, no VNNI (Skylake-SP)", "wide float; int8 u8s8 can saturate in ONNX Runtime"),
    ("avx2", "x86 with AVX2 + FMA (most laptops, small servers)", "int8 no faster than float; int8 u8s8 can saturate"),
    ("x86", "older x86 (SSE only)", "slow everywhere"),
    ("arm-dotprod", "ARMv8.2+ with dot product (Raspberry Pi 5, Cortex-A76)", "XNNPACK int8 uses SDOT/UDOT"),
    ("arm", "ARMv8.0 (Raspberry Pi 4, Cortex-A72)", "no int8 dot product: int8 saves memory, not much time"),
)


def _runtime_features() -> set[str]:
    """The instruction sets this process can actually use, as numpy's dispatcher found them.

    numpy reads CPUID (x86) or the kernel's hwcaps (ARM) itself, so this is right under
    emulation too (`qemu-x86_64 -cpu Haswell` reports AVX2 only, while /proc/cpuinfo still
    shows the host's flags). Empty when numpy does not expose its table.
    """
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as feats  # numpy < 2
        except ImportError:
            return set()
    return {k for k, v in feats.items() if v}


def isa_class(info: dict | None = None, features: set[str] | None = None) -> str:
    """The CPU class (a key of ISA_CLASSES) that decides speed and int8 behaviour here."""
    info = cpu_info() if info is None else info
    feats = _runtime_features() if features is None else features
    flags = set(info.get("features") or [])
    if _is_arm64(info.get("machine", "")):
        return "arm-dotprod" if ("ASIMDDP" in feats or "asimddp" in flags) else "arm"
    if feats:
        avx512 = "AVX512F" in feats
        vnni = "AVX512VNNI" in feats
        avx2 = "AVX2" in feats
    else:  # no numpy table: trust /proc/cpuinfo
        avx512, vnni, avx2 = "avx512f" in flags, "avx512_vnni" in flags, "avx2" in flags
    if avx512 and "amx_int8" in flags:
        return "amx"
    if vnni:
        return "avx512-vnni"
    if avx512:
        return "avx512"
    return "avx2" if avx2 else "x86"


def cpu_record() -> dict:
    """What every benchmark and check result records about the machine it ran on."""
    info = cpu_info()
    return {
        "model": info.get("model_name") or info.get("core") or platform.processor() or "unknown",
        "isa_class": isa_class(info),
        "machine": info.get("machine", ""),
        "cpus": info.get("cpus") or os.cpu_count() or 0,
        "board": info.get("board", ""),
        "emulated": os.environ.get("EMOTION_EMULATED_CPU", ""),
    }


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


if __name__ == "__main__":  # python -m engine.core.cpu: what would the engine pick here?
    _info = cpu_info()
    _safe, _reason = mediapipe_safe(_info)
    try:
        _choice = "%s (%s)" % choose_detector()
    except ValueError as _exc:
        _choice = f"error: {_exc}"
    print(f"machine:   {_info['machine']}  {_info['model_name'] or _info['core']}  {_info['board']}".rstrip())
    print(f"cpu class: {isa_class(_info)}")
    if _is_arm64(_info["machine"]):
        print(f"atomics:   {'yes' if 'atomics' in _info['features'] else 'no'} (ARMv8.1 LSE, in /proc/cpuinfo Features)")
    print(f"mediapipe: {'safe to import' if _safe else 'NOT safe: ' + _reason}")
    print(f"detector:  {_choice.replace(' ()', '')}")
