"""The live view's page (engine.serve.live): one self-contained HTML file, and the emotion colours it uses.

Inline JS and CSS, nothing fetched from elsewhere (PAGE_CSP forbids it), so it works on a LAN with no
internet. It reads /stream.mjpg, /events and /healthz (engine.serve.http_server serves them).
"""
from __future__ import annotations

import struct
import zlib

#: The Content-Security-Policy the page is served with: nothing but this server, inline script and style.
PAGE_CSP = ("default-src 'none'; img-src 'self'; connect-src 'self'; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'")


def _css(bgr: tuple[int, int, int]) -> str:
    b, g, r = bgr
    return f"rgb({r},{g},{b})"


def _colours() -> dict[str, str]:
    from engine.io.overlay import COLOURS

    return {k: _css(v) for k, v in COLOURS.items()}


#: emotion -> CSS colour, the overlay's colours (sent in /healthz; the page draws the timeline with them)
CSS_COLOURS = _colours()

def _png(rows: list[bytes], size: int) -> bytes:
    """An RGBA PNG from raw rows (no image library: serving must stay a few-ms import)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + row for row in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _icon(size: int = 16) -> bytes:
    """A 16 px smiley in the overlay's 'happy' colour: what /favicon.ico answers."""
    c = (size - 1) / 2
    rows = []
    for y in range(size):
        row = bytearray()
        for x in range(size):
            d2 = (x - c) ** 2 + (y - c) ** 2
            eye = y in (5, 6) and x in (5, 10)
            smile = 10 <= y <= 11 and abs(((x - c) ** 2 + (y - c + 4) ** 2) ** 0.5 - 7) < 1 and 3 < x < 12
            if d2 > (size / 2) ** 2:
                row += b"\0\0\0\0"
            elif eye or smile:
                row += b"\x20\x20\x20\xff"
            else:
                row += b"\xfa\xd2\x28\xff"
        rows.append(bytes(row))
    return _png(rows, size)


#: /favicon.ico, served without the token (a browser asks for it without the page's ?token=, and a 401
#: there is a red line in every viewer's console); it says nothing about the run.
ICON = _icon()

# The page: one file, no external resource (the CSP above forbids any), so it works on a LAN with no internet.
PAGE = br"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>emotion-engine live</title><link rel="icon" href="favicon.ico">
<style>
 body{margin:0;font:14px/1.4 system-ui,sans-serif;background:#111;color:#ddd}
 header{padding:8px 12px;background:#1c1c1c;display:flex;gap:18px;flex-wrap:wrap;align-items:baseline}
 header b{color:#fff} .k{color:#888}
 #banner{display:none;padding:8px 12px;background:#a02020;color:#fff;font-weight:bold}
 main{display:flex;flex-wrap:wrap;gap:12px;padding:12px}
 #video{width:720px;max-width:100%;background:#000;min-height:180px}
 #side{flex:1;min-width:260px}
 table{border-collapse:collapse;width:100%} td,th{padding:3px 6px;text-align:left;border-bottom:1px solid #2a2a2a}
 .sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
 canvas{width:100%;height:auto;background:#181818;margin-top:8px} #ms{font-family:monospace;font-size:12px;color:#aaa}
</style></head><body>
<div id="banner"></div>
<header><b>emotion-engine</b><span><span class="k">source</span> <span id="source">-</span></span>
<span><span class="k">model</span> <span id="model">-</span></span><span><span class="k">detector</span> <span id="detector">-</span></span>
<span><span class="k">FPS</span> <span id="fps">-</span></span><span id="ms"></span></header>
<main><img id="video" alt="live video">
<div id="side"><table><thead><tr><th>face</th><th>emotion</th><th>confidence</th></tr></thead><tbody id="faces"></tbody></table>
<canvas id="timeline" width="640" height="200"></canvas><div class="k">emotion per face, last 60 s</div></div></main>
<script>
"use strict";
// The query is passed on as typed (the token may hold a raw + or &: the server reads it both ways), after
// the page's own parameters, so a raw & in the token still reaches the end of the query.
const raw = location.search.slice(1);
const url = (path, own) => { const parts = [own, raw].filter(Boolean); return path + (parts.length ? "?" + parts.join("&") : ""); };
const $ = id => document.getElementById(id);
let colours = {}, lastEvent = 0, engineState = "starting", streamDown = false;
const tracks = new Map();  // face id -> [[t0, t1, emotion], ...] on the engine's timeline
let present = new Set();  // the face ids of the newest frame
const MAX_ROWS = 8;  // timeline rows drawn: more would shrink each below a readable label
const GIVE_UP_MS = 15000;  // no answer this long: say the engine has stopped (or cannot be reached)
let tNow = 0, shown = 0, shownAt = performance.now(), rate = 0, engineFps = 0;
let stoppedAt = null, lastContact = performance.now(), lastContactClock = new Date();

function clock(d) { return d.toLocaleTimeString(); }
function banner() {
  const b = $("banner"); let text = "";
  if (stoppedAt) text = "the engine has stopped (at " + clock(stoppedAt) + ")";
  else if (performance.now() - lastContact > GIVE_UP_MS)
    text = "the engine has stopped or cannot be reached (no answer since " + clock(lastContactClock) + ")";
  else if (streamDown) text = "connection to the engine lost - retrying";
  else if (engineState === "reconnecting") text = "camera lost - reopening it";
  else if (engineState === "ended") text = "the engine has stopped";
  b.textContent = text; b.style.display = text ? "block" : "none";
  if (stoppedAt || performance.now() - lastContact > GIVE_UP_MS) $("fps").textContent = "-";
}
function contact() { lastContact = performance.now(); lastContactClock = new Date(); }
function startVideo() { if (!stoppedAt) $("video").src = url("stream.mjpg", "t=" + Date.now()); }
$("video").onerror = () => setTimeout(startVideo, 2000);
startVideo();

const es = new EventSource(url("events"));
es.onopen = () => { streamDown = false; contact(); banner(); };
es.onerror = () => { streamDown = true; banner(); };
es.addEventListener("stopped", m => {  // the engine's last word before it stops serving
  stoppedAt = new Date(JSON.parse(m.data).time * 1000); es.close(); banner();
});
es.onmessage = m => {
  const ev = JSON.parse(m.data); lastEvent = performance.now(); shown++; contact();
  tNow = ev.t; present = new Set(ev.faces.map(f => f.id));
  for (const f of ev.faces) {
    let segs = tracks.get(f.id); if (!segs) { segs = []; tracks.set(f.id, segs); }
    const last = segs[segs.length - 1];
    if (last && last[2] === f.emotion && ev.t - last[1] < 1) last[1] = ev.t; else segs.push([ev.t, ev.t, f.emotion]);
  }
  latest = ev;
};
let latest = null;

function render() {
  const now = performance.now();
  if (now - shownAt >= 1000) { rate = shown * 1000 / (now - shownAt); shown = 0; shownAt = now; }
  if (latest) {
    const ev = latest; latest = null;
    $("faces").innerHTML = [...ev.faces].sort((a, b) => a.id - b.id).map(f => `<tr><td>#${f.id}</td><td><span class="sw" style="background:${colours[f.emotion] || "#0f0"}"></span>` +
      `<span class="emotion">${f.emotion}</span></td><td>${(f.confidence * 100).toFixed(0)}%</td></tr>`).join("") ||
      '<tr><td colspan="3" class="k">no face</td></tr>';
    $("ms").textContent = Object.entries(ev.ms).map(([k, v]) => `${k} ${v.toFixed(1)}`).join("  ") + " ms";
    if (!stoppedAt) $("fps").textContent = (rate || engineFps).toFixed(1);
  }
  drawTimeline();
}
function timelineRows() {
  // Faces in the newest frame first (by id), then the others by when they were last seen, newest first.
  const seen = id => { const segs = tracks.get(id); return segs[segs.length - 1][1]; };
  return [...tracks.keys()].sort((a, b) => (present.has(b) - present.has(a)) ||
    (present.has(a) ? a - b : seen(b) - seen(a) || a - b));
}
function drawTimeline() {
  const c = $("timeline"), g = c.getContext("2d"), W = c.width, H = c.height, left = 40, span = 60;
  g.clearRect(0, 0, W, H);
  for (const [id, segs] of tracks) {  // forget what scrolled out
    while (segs.length && segs[0][1] < tNow - span) segs.shift();
    if (!segs.length) tracks.delete(id);
  }
  const all = timelineRows(), ids = all.slice(0, MAX_ROWS), hidden = all.length - ids.length;
  const row = Math.min(28, (H - 16 - (hidden ? 14 : 0)) / Math.max(1, ids.length));
  g.font = "12px sans-serif"; g.fillStyle = "#666";
  for (let s = 0; s <= span; s += 10) { const x = left + (W - left) * (1 - s / span); g.fillRect(x, 0, 1, H - 14); g.fillText(s ? `-${s}s` : "now", x - (s ? 12 : 24), H - 2); }
  ids.forEach((id, i) => {
    const y = 4 + i * row; g.fillStyle = "#ccc"; g.fillText("#" + id, 4, y + row / 2 + 4);
    for (const [t0, t1, emo] of tracks.get(id)) {
      const x0 = left + (W - left) * (1 - (tNow - t0) / span), x1 = left + (W - left) * (1 - (tNow - t1) / span);
      g.fillStyle = colours[emo] || "#0f0"; g.fillRect(Math.max(left, x0), y, Math.max(2, x1 - Math.max(left, x0)), row - 4);
    }
  });
  if (hidden) { g.fillStyle = "#aaa"; g.fillText(`+${hidden} more face${hidden > 1 ? "s" : ""} (not in view lately)`, 4, 4 + ids.length * row + 10); }
  return {ids, row, hidden};
}
setInterval(render, 100);

async function health() {
  if (stoppedAt) return banner();
  try {
    const r = await fetch(url("healthz"), {cache: "no-store"}); const h = await r.json();
    contact(); colours = h.colours || colours; engineState = h.source.state;
    $("source").textContent = (h.source.name || "-") + (h.source.live ? " (live)" : "");
    $("model").textContent = (h.model || "-") + (h.backend ? " on " + h.backend : "");
    $("detector").textContent = h.detector || "-";
    engineFps = h.fps;
    if (!lastEvent || performance.now() - lastEvent > 2000) $("fps").textContent = h.fps.toFixed(1);
  } catch (e) { engineState = "ended"; }
  banner();
}
health(); setInterval(health, 1000);
</script></body></html>
"""
