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
# MODELS (comma list of shipped model names or export folders with labels.json, default every shipped model;
# a72/a76 copy the folders into the Pi root, so runs/... works there too), TAG (suffix for the result names),
# DATA (default ../shared/data/fer2013; its ferplus.csv, when there, travels with validation/ to score FER+).
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
      # a first run.sh builds the root from scratch (rm -rf): build it before copying anything in
      [[ -e "$root/.pi-stage2-done" ]] || tests/pi/run.sh "$t" --setup
      rm -rf "$root/tmp/fer" "$root/tmp/int8-models" && mkdir -p "$root/tmp/fer" "$root/tmp/int8-models"
      cp -r "$DATA/validation" "$root/tmp/fer/"
      [[ ! -f "$DATA/ferplus.csv" ]] || cp "$DATA/ferplus.csv" "$root/tmp/fer/"
      pi_models=()  # export folders (which may be git-ignored, e.g. runs/...) go in as /tmp/int8-models/<name>
      IFS=, read -ra wanted <<< "${MODELS:-}"
      for m in "${wanted[@]}"; do m=${m%/}
        if [[ -f "$m/labels.json" ]]; then
          mkdir -p "$root/tmp/int8-models/${m##*/}"
          cp -L "$m/labels.json" "$m"/emotion_*.tflite "$m"/emotion_*.onnx "$root/tmp/int8-models/${m##*/}/"
          pi_models+=("/tmp/int8-models/${m##*/}")
        else pi_models+=("$m"); fi
      done
      PI_ARGS=(--faces "$FACES"); ((${#pi_models[@]})) && PI_ARGS+=(--models "$(IFS=,; echo "${pi_models[*]}")")
      rm -f "$root/tmp/int8_check_$t$SUFFIX.json" "$root/tmp/int8_check_$t$SUFFIX.md"
      # -m: the project copy's engine/, whose zoo has the float32 reference files (the installed wheel's has not)
      tests/pi/run.sh "$t" --exec "pip install -q onnxruntime >/dev/null 2>&1; \
        EMOTION_EMULATED_CPU='qemu-aarch64 cortex-$t' python -m benchmarks.int8_check --data /tmp/fer ${PI_ARGS[*]} --out /tmp/int8_check_$t$SUFFIX" || status=1
      cp "$root/tmp/int8_check_$t$SUFFIX.json" "$root/tmp/int8_check_$t$SUFFIX.md" "$RESULTS/" || status=1 ;;
    *) echo "unknown target $t (native, avx2, a72, a76)" >&2; exit 2 ;;
  esac
done
exit $status
