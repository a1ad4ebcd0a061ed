#!/usr/bin/env bash
# Regenerate the shipped sound cues in engine/sound/sounds/<emotion>/*.wav.
#
# Needs espeak-ng and sox (Debian/Raspberry Pi OS: `apt-get install -y espeak-ng sox`).
# Output: 16 kHz, mono, 16-bit PCM WAV, leading/trailing silence trimmed, peak-normalised to -3 dBFS.
# The output is deterministic for a given espeak-ng/sox version (sox runs without dither).
# Tested with espeak-ng 1.51 and SoX 14.4.2 (Debian 12).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/engine/sound/sounds}"
for tool in espeak-ng sox; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed (apt-get install -y espeak-ng sox)" >&2; exit 2; }
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# say EMOTION NAME VOICE PITCH SPEED TEXT
# VOICE is an espeak-ng voice with an optional +variant (f3 = a female variant, m3 = a male one).
say() {
    local emotion="$1" name="$2" voice="$3" pitch="$4" speed="$5" text="$6"
    mkdir -p "$out/$emotion"
    espeak-ng -v "$voice" -p "$pitch" -s "$speed" -w "$tmp/raw.wav" "$text"
    # -D: no dither (reproducible); silence: trim the start, then reverse, trim the start (= the end), reverse back.
    sox -D "$tmp/raw.wav" -r 16000 -c 1 -b 16 "$out/$emotion/$name.wav" \
        silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse norm -3
    echo "$emotion/$name.wav: $text" >&2
}

#   emotion   file            voice       pitch speed text
say angry     whoa_angry      en-us+m3    40    165   "Whoa, you look angry!"
say angry     deep_breath     en-gb+f3    55    160   "Easy there. Take a deep breath."
say disgust   disgusted       en-us+f2    60    165   "Eww, you look disgusted!"
say disgust   smells_bad      en-gb+m1    35    165   "Yuck! Something smells bad?"
say fear      dont_be_scared  en-us+f3    60    155   "Don't be scared. It's okay."
say fear      frightened      en-gb+m3    45    165   "You look frightened!"
say happy     look_happy      en-us+f3    70    170   "You look happy!"
say happy     lovely_smile    en-gb+m2    50    165   "What a lovely smile!"
say sad       look_sad        en-us+m1    30    145   "Aww, you look sad."
say sad       cheer_up        en-gb+f2    55    155   "Cheer up. It will be okay."
say surprise  what_a_surprise en-us+f4    80    170   "Wow, what a surprise!"
say surprise  oh_surprised    en-gb+m3    60    170   "Oh! You look surprised!"
say neutral   calm            en-us+m2    45    160   "You look calm."
say neutral   relaxed         en-gb+f1    50    160   "Nice and relaxed."
