#!/usr/bin/env bash
# benchmarks/int8_check.py on every CPU class this x86-64 machine can be or emulate:
#
#   benchmarks/int8_check_cpus.sh [native] [avx2] [a72] [a76]      (default: all four)
#
#   native  this machine as it is (its class: python -m engine.core.cpu)
#   avx2    qemu-x86_64 -cpu Haswell: AVX2 + FMA, no AVX-512/VNNI (apt: qemu-user)
#   a72     tests/pi/run.sh a72: aarch64 Cortex-A72, a Raspberry Pi 4 (no dot product)
#   a76     tests/pi/run.sh a76: aarch64 Cortex-A76, a Raspberry Pi 5 (dot product)
#
# Results: benchmarks/results/int8_check_<target>[_<TAG>].{json,md}. Environment: FACES (default 300),
# MODELS (comma list, default every shipped model), TAG (suffix for the result names), DATA (default
# ../shared/data/fer2013).
# Emulation is slow (the accurate models take minutes per file); timings under it mean nothing,
# the answers are exact: both runtimes pick their kernels from the emulated CPU's features.
set -euo pipefail
cd "$(dirname "$0")/.."
FACES=${FACES:-300}
DATA=${DATA:-../shared/data/fer2013}
PY=${PYTHON:-python}
RESULTS=benchmarks/results
SUFFIX=${TAG:+_$TAG}
ARGS=(--faces "$FACES" ${MODELS:+--models "$MODELS"})
targets=("$@")
((${#targets[@]})) || targets=(native avx2 a72 a76)
status=0
for t in "${targets[@]}"; do
  echo "== int8 check: $t ($FACES faces)" >&2
  case $t in
    native)
      "$PY" benchmarks/int8_check.py --data "$DATA" "${ARGS[@]}" --out "$RESULTS/int8_check_native$SUFFIX" || status=1 ;;
    avx2)
      command -v qemu-x86_64 >/dev/null || { echo "qemu-x86_64 missing: apt-get install qemu-user" >&2; exit 2; }
      EMOTION_EMULATED_CPU="qemu-x86_64 -cpu Haswell" qemu-x86_64 -cpu Haswell "$(command -v "$PY")" \
        benchmarks/int8_check.py --data "$DATA" "${ARGS[@]}" --out "$RESULTS/int8_check_avx2$SUFFIX" 2> >(grep -v '^qemu-x86_64: warning' >&2) || status=1 ;;
    a72|a76)
      root=${PI_ROOT:-/work/pi-root}
      mkdir -p "$root/tmp/fer" && cp -r "$DATA/validation" "$root/tmp/fer/"
      tests/pi/run.sh "$t" --exec "pip install -q onnxruntime >/dev/null 2>&1; \
        EMOTION_EMULATED_CPU='qemu-aarch64 cortex-$t' python benchmarks/int8_check.py --data /tmp/fer ${ARGS[*]} --out /tmp/int8_check_$t$SUFFIX" || status=1
      cp "$root/tmp/int8_check_$t$SUFFIX.json" "$root/tmp/int8_check_$t$SUFFIX.md" "$RESULTS/" ;;
    *) echo "unknown target $t (native, avx2, a72, a76)" >&2; exit 2 ;;
  esac
done
exit $status
