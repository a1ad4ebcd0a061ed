#!/usr/bin/env bash
# Raspberry Pi smoke test under emulation (opt-in; not part of the default pytest run).
#
#   tests/pi/run.sh a72|a76                 build/reuse an arm64 Debian bookworm root, install the
#                                           project the way README.md ("Raspberry Pi") tells a Pi user, run
#                                           the engine on a real clip, print ONE JSON line
#   tests/pi/run.sh a72|a76 --setup         only build/reuse the root and the venv
#   tests/pi/run.sh a72|a76 --exec CMD...   run CMD inside the root, in the project dir, venv active
#
# a72 = Raspberry Pi 4 (Cortex-A72, ARMv8.0: no LSE atomics, mediapipe 1.x dies with SIGILL there)
# a76 = Raspberry Pi 5 (Cortex-A76, ARMv8.2: LSE atomics)
#
# Environment:
#   PI_ROOT      root folder, kept between runs (default /work/pi-root; outside the repo on purpose)
#   PI_MIRROR    Debian mirror (default: the one in the host's apt sources, else deb.debian.org)
#   PI_CLIP      clip to run on (default ../shared/media/head-pose-face-detection-female-and-male.gif)
#   PI_FRAMES    --max-frames for the engine (default 20)
#   PI_MODEL     a host model directory (labels.json + exports) or file to copy in and pass as --model
#                (default: the engine's own default, the shipped model zoo)
#   PI_ENGINE_ARGS  extra engine.run arguments (e.g. "--precision fp32 --detector full")
#   PI_REINSTALL=1  throw the venv away and install everything again
#
# Needs root (chroot, mounts), qemu-user-static, binfmt-support and debootstrap (installed with apt
# when missing). First run ~15 min (debootstrap second stage + pip under emulation); later runs
# reuse the root and the venv and reinstall only the project itself (--no-deps).
# Timings under emulation say nothing about a real Pi.
set -euo pipefail

log() { printf '[pi %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

case "${1:-}" in
  a72) CPU=cortex-a72; CPUINFO=cpuinfo-pi4-cortex-a72.txt ;;
  a76) CPU=cortex-a76; CPUINFO=cpuinfo-pi5-cortex-a76.txt ;;
  *) echo "usage: $0 a72|a76 [--setup | --exec CMD...]" >&2; exit 2 ;;
esac
shift
MODE=run
if [[ "${1:-}" == "--setup" ]]; then MODE=setup; shift
elif [[ "${1:-}" == "--exec" ]]; then MODE=exec; shift; [[ $# -gt 0 ]] || die "--exec needs a command"
fi

[[ $(id -u) == 0 ]] || die "needs root (chroot and mounts)"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROOT=${PI_ROOT:-/work/pi-root}
CLIP=${PI_CLIP:-$REPO/../shared/media/head-pose-face-detection-female-and-male.gif}
FRAMES=${PI_FRAMES:-20}
PROJ=/home/pi/emotion-engine          # inside the root
VENV=$PROJ/.venv

mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock -n 9 || die "another run holds $ROOT.lock"

# ---------------------------------------------------------------- host tools and binfmt_misc
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
if ((${#need[@]})); then
  log "installing host packages: ${need[*]}"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
  update-binfmts --enable qemu-aarch64 >&2 || true
fi
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || die "binfmt_misc has no enabled qemu-aarch64 entry"

# Run a command in the root with a clean environment (the host's PIP_* variables point at host paths).
in_root() {
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    TERM=dumb DEBIAN_FRONTEND=noninteractive PIP_DEFAULT_TIMEOUT=180 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore QEMU_CPU="$CPU" ${EXTRA_ENV:-} \
    chroot "$ROOT" /bin/bash -c "$1"
}

MOUNTS=()
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
mount_all() {
  mountpoint -q "$ROOT/proc" || { mount -t proc proc "$ROOT/proc"; MOUNTS+=("$ROOT/proc"); }
  # qemu-user shows the host's x86 /proc/cpuinfo: put a real Pi's there (onnxruntime segfaults on the
  # x86 one, and engine.core.cpu reads its Features line).
  cp "$HERE/$CPUINFO" "$ROOT/tmp/pi-cpuinfo"
  mount --bind "$ROOT/tmp/pi-cpuinfo" "$ROOT/proc/cpuinfo"; MOUNTS+=("$ROOT/proc/cpuinfo")
  mountpoint -q "$ROOT/dev" || { mount --rbind /dev "$ROOT/dev"; mount --make-rslave "$ROOT/dev"; MOUNTS+=("$ROOT/dev"); }
  mountpoint -q "$ROOT/sys" || { mount --rbind /sys "$ROOT/sys"; mount --make-rslave "$ROOT/sys"; MOUNTS+=("$ROOT/sys"); }
}

# ---------------------------------------------------------------- the root (cached)
if [[ ! -e "$ROOT/.pi-stage2-done" ]]; then
  if [[ -z "${PI_MIRROR:-}" ]]; then
    PI_MIRROR=$(grep -h -o -E '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
      | head -1 | grep -o -E 'https?://[^ ]+' || true)
    PI_MIRROR=${PI_MIRROR:-http://deb.debian.org/debian}
  fi
  log "debootstrap arm64 bookworm into $ROOT from $PI_MIRROR (first stage)"
  rm -rf "$ROOT"; mkdir -p "$ROOT"
  debootstrap --arch=arm64 --foreign --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$ROOT" "$PI_MIRROR" >&2
  log "second stage under qemu (~6 min)"
  in_root "/debootstrap/debootstrap --second-stage" >&2
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$PI_MIRROR" "$PI_MIRROR" > "$ROOT/etc/apt/sources.list"
  touch "$ROOT/.pi-stage2-done"
fi

# Host network/pip/CA configuration, refreshed every run (cheap): name resolution, the host's trusted
# CAs (pip must trust the same certificates as the host) and its pip configuration.
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
cp -L /etc/hosts "$ROOT/etc/hosts" 2>/dev/null || true
if [[ -d /usr/local/share/ca-certificates ]]; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  cp -rL /usr/local/share/ca-certificates/. "$ROOT/usr/local/share/ca-certificates/"
fi
[[ -f /etc/pip.conf ]] && cp -L /etc/pip.conf "$ROOT/etc/pip.conf"
if [[ -d /etc/xdg/pip ]]; then mkdir -p "$ROOT/etc/xdg"; rm -rf "$ROOT/etc/xdg/pip"; cp -rL /etc/xdg/pip "$ROOT/etc/xdg/pip"; fi

mount_all

if [[ ! -e "$ROOT/.pi-apt-done" ]]; then
  log "apt: CA certificates, libegl1 libgles2 (mediapipe), as README.md ("Raspberry Pi") says"
  in_root "update-ca-certificates >/dev/null && apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv python3-pip libegl1 libgles2 >/dev/null" >&2
  touch "$ROOT/.pi-apt-done"
else
  in_root "update-ca-certificates >/dev/null" >&2
fi

# ---------------------------------------------------------------- the project and its venv
# Copy the working tree (tracked + untracked-not-ignored files, as git sees them), keep the venv.
log "copying the working tree into $ROOT$PROJ"
mkdir -p "$ROOT$PROJ"
find "$ROOT$PROJ" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
(cd "$REPO" && git ls-files -z -c -o --exclude-standard | while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf -) | tar -xf - -C "$ROOT$PROJ"

if [[ ! -f "$ROOT$PROJ/README.md" ]]; then
  log "warning: the working tree has no README.md (pyproject names it): writing a placeholder into the copy"
  echo "# emotion-engine" > "$ROOT$PROJ/README.md"
fi

[[ "${PI_REINSTALL:-0}" == 1 ]] && rm -rf "$ROOT$VENV"
t0=$(date +%s.%N)
if [[ ! -e "$ROOT$VENV/.pi-venv-done" ]]; then
  log "fresh venv: pip install \".[tflite]\" under qemu $CPU (~5-10 min)"
  rm -rf "$ROOT$VENV"
  # Exactly the commands of README.md ("Raspberry Pi") (Raspberry Pi OS Lite = headless: swap the GUI OpenCV).
  in_root "set -e; cd $PROJ; python3 -m venv .venv; . .venv/bin/activate;
    pip install -q '.[tflite]';
    pip uninstall -q -y opencv-contrib-python; pip install -q --no-deps opencv-contrib-python-headless" >&2
  touch "$ROOT$VENV/.pi-venv-done"
else
  log "reusing the venv: reinstalling only the project (--no-deps)"
  in_root "set -e; cd $PROJ; . .venv/bin/activate; pip install -q --no-deps --force-reinstall ." >&2
fi
t1=$(date +%s.%N)
INSTALL_S=$(python3 -c "print(round($t1 - $t0, 1))")
log "install took ${INSTALL_S}s"

case $MODE in
  setup) log "setup done ($CPU)"; exit 0 ;;
  exec)
    set +e
    in_root "cd $PROJ && . .venv/bin/activate && $*"
    exit $? ;;
esac

# ---------------------------------------------------------------- the run
[[ -f "$CLIP" ]] || die "clip not found: $CLIP (set PI_CLIP)"
rm -rf "$ROOT/tmp/pi-clip"; mkdir -p "$ROOT/tmp/pi-clip"
cp "$CLIP" "$ROOT/tmp/pi-clip/" && CLIP_IN="/tmp/pi-clip/${CLIP##*/}"
rm -f "$ROOT/tmp/out.jsonl"
MODEL_ARG=
if [[ -n "${PI_MODEL:-}" ]]; then
  [[ -e "$PI_MODEL" ]] || die "PI_MODEL not found: $PI_MODEL"
  rm -rf "$ROOT/tmp/pi-model"; mkdir -p "$ROOT/tmp/pi-model"
  if [[ -d "$PI_MODEL" ]]; then cp -rL "$PI_MODEL/." "$ROOT/tmp/pi-model/"; MODEL_ARG="--model /tmp/pi-model"
  else cp -L "$PI_MODEL" "$(dirname "$PI_MODEL")/labels.json" "$ROOT/tmp/pi-model/" 2>/dev/null || cp -L "$PI_MODEL" "$ROOT/tmp/pi-model/"
       MODEL_ARG="--model /tmp/pi-model/${PI_MODEL##*/}"; fi
fi
log "running the engine under qemu $CPU on ${CLIP##*/} ($FRAMES frames)"
t0=$(date +%s.%N)
set +e
in_root "cd $PROJ && . .venv/bin/activate && python -m engine.run --backend tflite --source '$CLIP_IN' --no-display --jsonl /tmp/out.jsonl --max-frames $FRAMES $MODEL_ARG ${PI_ENGINE_ARGS:-}" >&2
rc=$?
set -e
t1=$(date +%s.%N)
RUN_S=$(python3 -c "print(round($t1 - $t0, 1))")
[[ $rc == 0 ]] || die "engine.run exited $rc under $CPU"
[[ -s "$ROOT/tmp/out.jsonl" ]] || die "engine.run wrote no JSONL"
python3 - "$ROOT/tmp/out.jsonl" "$CPU" "$INSTALL_S" "$RUN_S" <<'EOF'
import json, sys
path, cpu, install_s, run_s = sys.argv[1:]
frames = faces = 0
with open(path) as fh:
    for line in fh:
        if not line.strip():
            continue
        rec = json.loads(line)
        if "frame" not in rec:
            continue
        frames += 1
        faces += len(rec.get("faces") or [])
ok = frames > 0 and faces > 0
print(json.dumps({"cpu": cpu, "ok": ok, "frames": frames, "faces": faces,
                  "install_s": float(install_s), "run_s": float(run_s)}))
sys.exit(0 if ok else 1)
EOF
