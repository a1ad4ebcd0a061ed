#!/bin/bash
# One GPU lease for the model-quality issue: K out-of-fold teachers trained at once on one GPU, their
# out-of-fold soft labels and one averaging ONNX teacher written to $OUT (the device tool brings $OUT back).
#
# Why at once: the H200 ran three 6-minute ResNets in parallel as fast as one; the lease is 15 minutes in
# all, starts included, so the script must finish in one call. Prepared and tested on the CPU with a tiny
# setting first (tests/test_gpu_teacher.py does the same):
#   PY=/path/to/python-with-torch K=2 MINUTES=0.2 WIDTH=8 LIMIT=1000 OUT=/tmp/kf bash models/kfold_teachers.sh
# On the device (the pack travels with `carry`; make it with `python -m models.gpu_teacher pack`):
#   run(command="PACK=runs/fer_pack.npz K=4 MINUTES=7 bash models/kfold_teachers.sh", carry=["runs/fer_pack.npz"])
# Afterwards, here: `python -m models.train ... --soft-labels $OUT/oof.npz` (distillation on faces the
# teachers never trained on), and the ONNX teacher for `--teacher-pool` if wanted.
set -euo pipefail
PY=${PY:-python}
PACK=${PACK:-runs/fer_pack.npz}
K=${K:-4}
MINUTES=${MINUTES:-7}
WIDTH=${WIDTH:-48}
ARCHS=${ARCHS:-resnet}   # several ("resnet vgg"): K folds each, all at once; the labels average every net that never saw a face
OUT=${OUT:-runs/kfold}
mkdir -p "$OUT"
[ -f "$PACK" ] || { echo "error: no pack at $PACK (python -m models.gpu_teacher pack --data DATA --out $PACK)" >&2; exit 2; }
pids=()
folds=""
for a in $ARCHS; do
  for i in $(seq 0 $((K - 1))); do
    name=$( [ "$a" = resnet ] && echo "fold$i" || echo "${a}_fold$i" )   # resnet keeps the names of the first leases
    $PY -m models.gpu_teacher train --data "$PACK" --out "$OUT/$name.npz" --arch "$a" --folds "$K" --fold "$i" --seed "$i" \
      --minutes "$MINUTES" --width "$WIDTH" ${LIMIT:+--limit "$LIMIT"} > "$OUT/$name.log" 2>&1 &
    pids+=($!)
    folds="$folds $OUT/$name.npz"
  done
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
tail -n 3 "$OUT"/*fold*.log
[ "$fail" = 0 ] || { echo "error: a fold failed (logs in $OUT)" >&2; exit 1; }
$PY -m models.gpu_teacher oof $folds --data "$PACK" --out "$OUT/oof.npz" | tee "$OUT/oof.log"
$PY -m models.gpu_teacher onnx $folds --out "$OUT/teacher/emotion.onnx"
