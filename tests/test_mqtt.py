"""--mqtt with real components: a real Mosquitto broker (Debian's `mosquitto`, started here on a free 127.0.0.1
port; the tests skip, saying so, where it is not installed), a real paho-mqtt subscriber, a real engine process on
a real clip (two packaged portraits drifting, as tests/test_serve.py composes it). docs/mqtt.md is the contract:
the topics, the keys of each message, Home Assistant discovery, availability (the last will), a broker that dies
and comes back costs no frame, a broker that is not there is one line. Also `python -m engine.service`'s unit
(checked with `systemd-analyze verify` where installed).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fakes import write_drifting_clip

paho = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install -e '.[mqtt]')")
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="Debian's mosquitto is not installed (apt-get install mosquitto; .ci/run does)")

REPO = Path(__file__).resolve().parents[1]
CLIP_FRAMES = 40
NATIVE_LOG = re.compile(r"^(INFO: |WARNING: All log messages|WARNING: Logging before|[IWE]\d{4} |To enable the following"
                        r"|Exception ignored|\s)")
FACE_KEYS = {"event", "frame", "t", "id", "box", "score", "emotion", "confidence", "probs"}
STATE_KEYS = {"source", "frame", "t", "present", "emotion", "confidence", "counts", "fps", "faces"}
#: what Home Assistant's MQTT discovery needs of every config here (and what docs/mqtt.md promises)
HA_KEYS = {"name", "unique_id", "state_topic", "value_template", "availability", "device"}


# --------------------------------------------------------------------------- a broker, a subscriber, an engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """`mosquitto -c conf` on 127.0.0.1:port; `users` {name: password} turns anonymous access off."""

    def __init__(self, folder: Path, port: int | None = None, users: dict[str, str] | None = None):
        self.folder, self.port = folder, port or free_port()
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {'false' if users else 'true'}"]
        if os.geteuid() == 0:  # as root it would switch to user mosquitto, who cannot read pytest's 0700 folders
            lines.append("user root")
        if users:
            pw = folder / "passwd"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True, capture_output=True)
            lines.append(f"password_file {pw}")
        self.conf = folder / f"mosquitto-{self.port}.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                assert self.proc.poll() is None, f"mosquitto exited {self.proc.returncode}"
                time.sleep(0.05)
        raise AssertionError("mosquitto did not listen within 10 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Listener:
    """A paho-mqtt client that records every message of `topics` (re-subscribing after a reconnect)."""

    def __init__(self, port: int, topics=("#",)):
        self.messages: list[tuple[str, str, bool, float]] = []
        self.lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-{free_port()}")
        self.client.on_connect = lambda c, u, f, rc, p: [c.subscribe(t, qos=1) for t in topics]
        self.client.on_message = self._message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain), time.monotonic()))

    def on(self, pattern: str) -> list[tuple[str, str, bool, float]]:
        with self.lock:
            return [m for m in self.messages if re.fullmatch(pattern, m[0])]

    def wait(self, pattern: str, payload: str | None = None, after: float = 0.0, timeout: float = 30) -> tuple:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [m for m in self.on(pattern) if m[3] >= after and (payload is None or m[1] == payload)]
            if hits:
                return hits[0]
            time.sleep(0.05)
        raise AssertionError(f"no {payload or 'message'} on {pattern} within {timeout} s; got {self.messages[-5:]}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def engine(*args, stderr_path: Path, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "engine.run", "--no-display", *map(str, args)]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(stderr_path, "w"),
                            env={**os.environ, **(env or {})})


def run_engine(*args, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.run", "--no-display", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def own_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln and not NATIVE_LOG.match(ln)]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """40 frames of the two packaged portraits drifting, as an MJPG AVI (no shared media needed)."""
    return write_drifting_clip(tmp_path_factory.mktemp("clip") / "two_faces.avi", CLIP_FRAMES)


# --------------------------------------------------------------------------- a whole run: topics, keys, discovery


@pytest.fixture(scope="module")
def clean_run(clip, tmp_path_factory):
    """The clip twice, published to a fresh broker, everything a subscriber saw, the JSONL beside it."""
    if MOSQUITTO is None:
        pytest.skip("Debian's mosquitto is not installed (apt-get install mosquitto; .ci/run does)")
    tmp = tmp_path_factory.mktemp("mqtt")
    broker = Broker(tmp).start()
    listener = Listener(broker.port)
    try:
        time.sleep(0.3)
        proc = run_engine("--source", clip, "--loop", 2, "--jsonl", tmp / "ev.jsonl", "--mqtt", f"127.0.0.1:{broker.port}",
                          "--mqtt-client-id", "kitchen-pi", "--mqtt-state-rate", 5)
        assert proc.returncode == 0, proc.stderr
        time.sleep(0.5)
        late = Listener(broker.port)  # a dashboard that connects after the run: the retained messages
        time.sleep(1.0)
        late.close()
        yield {"proc": proc, "seen": list(listener.messages), "retained": list(late.messages), "events": jsonl(tmp / "ev.jsonl")}
    finally:
        listener.close()
        broker.kill()


def payloads(seen, pattern: str) -> list[dict]:
    return [json.loads(p) for t, p, _, _ in seen if re.fullmatch(pattern, t)]


def test_face_events_arrive_with_the_jsonl_keys(clean_run):
    seen, events = clean_run["seen"], clean_run["events"]
    base = "emotion/kitchen-pi/two_faces_avi"
    appear, changes, leave = (payloads(seen, f"{base}/face/{e}") for e in ("appear", "emotion", "leave"))
    ids = {f["id"] for e in events for f in e["faces"]}
    assert len(events) == 2 * CLIP_FRAMES and len(ids) >= 2
    assert {m["id"] for m in appear} == ids == {m["id"] for m in leave}, "every tracked face appears and leaves once"
    for m in appear + changes + leave:
        assert FACE_KEYS <= set(m), m
        assert set(m["probs"]) == set(events[0]["faces"][0]["probs"])
    # "emotion" fires exactly where a face's stable emotion (the JSONL's "emotion") changes, previous None at first
    expected, last = [], {}
    for e in events:
        for f in e["faces"]:
            if last.get(f["id"], "-") != f["emotion"]:
                expected.append((e["frame"], f["id"], last.get(f["id"]), f["emotion"]))
            last[f["id"]] = f["emotion"]
    assert [(m["frame"], m["id"], m["previous"], m["emotion"]) for m in changes] == expected
    by_frame = {e["frame"]: {f["id"]: f for f in e["faces"]} for e in events}
    for m in changes:  # the same face as the JSONL line of that frame: box, confidence, probs
        face = by_frame[m["frame"]][m["id"]]
        assert (m["box"], m["confidence"], m["probs"]) == (face["box"], face["confidence"], face["probs"])


def test_state_is_retained_and_availability_says_online_then_offline(clean_run):
    seen, retained = clean_run["seen"], clean_run["retained"]
    states = payloads(seen, "emotion/kitchen-pi/two_faces_avi/state")
    assert states and all(STATE_KEYS <= set(s) for s in states)
    busy = [s for s in states if s["present"]]
    assert busy and all(sum(s["counts"].values()) == s["present"] == len(s["faces"]) for s in busy)
    assert all(s["emotion"] in s["counts"] and 0 < s["confidence"] <= 1 for s in busy)
    assert states[-1]["present"] == 0, "the last state (at the end of the run) is nobody there"
    assert [p for t, p, _, _ in seen if t == "emotion/kitchen-pi/availability"] == ["online", "offline"]
    late = {t: p for t, p, r, _ in retained if r}
    assert late["emotion/kitchen-pi/availability"] == "offline"
    assert json.loads(late["emotion/kitchen-pi/two_faces_avi/state"]) == states[-1]
    assert "0 dropped" in clean_run["proc"].stderr


def test_home_assistant_discovery_configs(clean_run):
    configs = {t: json.loads(p) for t, p, r, _ in clean_run["retained"] if t.startswith("homeassistant/") and r}
    kinds = {}
    for topic, config in configs.items():
        m = re.fullmatch(r"homeassistant/(sensor|binary_sensor)/([a-zA-Z0-9_-]+)/([a-zA-Z0-9_-]+)/config", topic)
        assert m, topic
        assert m.group(2) == "kitchen-pi" and HA_KEYS <= set(config), (topic, config)
        assert config["state_topic"] == "emotion/kitchen-pi/two_faces_avi/state"
        assert config["availability"] == [{"topic": "emotion/kitchen-pi/availability"}]
        assert config["device"]["identifiers"] == ["kitchen-pi"]
        kinds.setdefault(m.group(1), []).append(m.group(3))
    assert sorted(kinds["sensor"]) == sorted(f"two_faces_avi_{s}" for s in ("faces", "emotion", "confidence", "fps"))
    assert kinds["binary_sensor"] == ["two_faces_avi_present"]
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)


# --------------------------------------------------------------------------- the broker goes away and comes back


class CuttableProxy:
    """A TCP forwarder 127.0.0.1:port -> the broker whose live connections `cut()` closes: a network drop."""

    def __init__(self, target: int):
        self.target, self.pairs, self.lock = target, [], threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for a, b in pairs:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def frames_in(path: Path, seconds: float) -> float:
    """JSONL lines written per second over `seconds`: the engine's frame rate, seen from outside."""
    n0, t0 = path.read_bytes().count(b"\n"), time.monotonic()
    time.sleep(seconds)
    return (path.read_bytes().count(b"\n") - n0) / (time.monotonic() - t0)


@needs_broker
def test_a_broker_that_dies_or_a_network_drop_costs_no_frame(clip, tmp_path):
    """A network drop: the broker sends the last will (offline), the engine reconnects (online). The broker
    killed and restarted on its port: the engine runs on at its frame rate, reconnects, says online again; every
    frame of the source went through (the JSONL's frame numbers have no gap)."""
    broker = Broker(tmp_path).start()
    proxy = CuttableProxy(broker.port)
    listener = Listener(broker.port, topics=("emotion/#",))
    ev, err = tmp_path / "ev.jsonl", tmp_path / "err.txt"
    proc = engine("--source", clip, "--loop", 100000, "--jsonl", ev, "--mqtt", f"127.0.0.1:{proxy.port}",
                  "--mqtt-client-id", "shelf", "--mqtt-keepalive", 5, stderr_path=err)
    avail = "emotion/shelf/availability"
    try:
        listener.wait(avail, "online")
        t_cut = time.monotonic()
        proxy.cut()  # the network drops: the broker publishes the will, the engine reconnects through the proxy
        listener.wait(avail, "offline", after=t_cut, timeout=15)
        listener.wait(avail, "online", after=t_cut, timeout=20)
        before = frames_in(ev, 2.0)
        broker.kill()  # SIGKILL: no goodbye to anyone
        during = frames_in(ev, 2.0)
        t_back = time.monotonic()
        broker.start()
        listener.wait(avail, "online", after=t_back, timeout=40)
        listener.wait("emotion/shelf/.*/state", after=time.monotonic(), timeout=10)  # fresh states again
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.close()
        broker.kill()
    stderr = err.read_text()
    assert "Traceback" not in stderr, stderr
    assert stderr.count("mqtt: lost") >= 1 and stderr.count("mqtt: reconnected") >= 2, stderr
    assert re.search(r"mqtt: \d+ messages queued .* [2-9] disconnect\(s\), [2-9] reconnect\(s\)", stderr), stderr
    frames = [e["frame"] for e in jsonl(ev)]
    assert frames == list(range(len(frames))), "a frame went missing while the broker was away"
    print(f"frames/s with the broker up {before:.0f}, killed {during:.0f}; {len(frames)} frames")
    assert during >= 0.5 * before, (before, during)


# --------------------------------------------------------------------------- no broker: one line, the run goes on


@pytest.fixture(scope="module")
def locked_broker(tmp_path_factory):
    """A broker that wants a user name and password (engine / s3cret)."""
    if MOSQUITTO is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("Debian's mosquitto (and mosquitto_passwd) is not installed")
    broker = Broker(tmp_path_factory.mktemp("locked"), users={"engine": "s3cret"}).start()
    yield broker
    broker.kill()


@pytest.mark.parametrize("case", ["unknown host", "closed port", "wrong password", "no password"])
def test_no_broker_is_one_line_and_the_run_goes_on(case, locked_broker):
    url = {"unknown host": "no-such-broker.invalid", "closed port": f"127.0.0.1:{free_port()}",
           "wrong password": f"mqtt://engine:wrong@127.0.0.1:{locked_broker.port}",
           "no password": f"mqtt://127.0.0.1:{locked_broker.port}"}[case]
    proc = run_engine("--source", "sample", "--quiet", "--mqtt", url, env={"EMOTION_MQTT_PASSWORD": ""})
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in own_lines(proc.stderr) if "mqtt" in ln.lower()]
    assert len(lines) == 1 and lines[0].startswith("warning: MQTT broker ") and lines[0].endswith("running without MQTT"), proc.stderr
    assert "wrong" not in proc.stderr and "Traceback" not in proc.stderr
    assert "grace_hopper.jpg: #1" in proc.stdout, "the run went on"
    required = run_engine("--source", "sample", "--quiet", "--mqtt", url, "--mqtt-required", env={"EMOTION_MQTT_PASSWORD": ""})
    assert required.returncode == 2 and own_lines(required.stderr)[-1].startswith("error: MQTT broker "), required.stderr


def test_the_password_from_the_environment_is_used_and_never_shown(locked_broker):
    listener_ok = paho.Client(paho.CallbackAPIVersion.VERSION2)
    listener_ok.username_pw_set("engine", "s3cret")
    proc = run_engine("--source", "sample", "--mqtt", f"mqtt://engine@127.0.0.1:{locked_broker.port}", "--mqtt-required",
                      env={"EMOTION_MQTT_PASSWORD": "s3cret"})
    assert proc.returncode == 0, proc.stderr
    assert f"mqtt: connected to mqtt://engine@127.0.0.1:{locked_broker.port}" in proc.stderr
    assert "s3cret" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("value, fragment", [("http://host", "mqtt:// or mqtts://"), ("host:99999", "port"),
                                             ("mqtt://host/path", "no path")])
def test_a_bad_mqtt_value_is_one_sentence(value, fragment):
    proc = run_engine("--source", "sample", "--mqtt", value, timeout=30)
    assert proc.returncode == 2 and own_lines(proc.stderr) == [l for l in own_lines(proc.stderr) if l.startswith("error: --mqtt: ")]
    assert fragment in proc.stderr


def test_options_from_urls():
    from engine.mqtt.options import MqttOptions

    o = MqttOptions.from_url("mqtts://me:p%40ss@broker.lan", env={})
    assert (o.host, o.port, o.tls, o.username, o.password) == ("broker.lan", 8883, True, "me", "p@ss")
    assert "p@ss" not in o.describe() and "p@ss" not in repr(o)
    o = MqttOptions.from_url("10.0.0.5:1884", env={"EMOTION_MQTT_PASSWORD": "x"}, client_id="Living Room")
    assert (o.host, o.port, o.tls, o.password, o.node_id) == ("10.0.0.5", 1884, False, "x", "living_room")


# --------------------------------------------------------------------------- python -m engine.service


def service(*args, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.service", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_the_service_unit_is_valid_and_keeps_the_password_out(tmp_path):
    proc = service("print", "--source", "0", "--serve", "0.0.0.0:8080", "--mqtt", "mqtt://engine:s3cret@broker.lan")
    assert proc.returncode == 0, proc.stderr
    unit = proc.stdout
    for line in ("Restart=on-failure", "KillSignal=SIGTERM", "StandardError=journal", "WantedBy=multi-user.target",
                 "After=network-online.target"):
        assert line in unit.splitlines(), line
    exec_start = next(ln for ln in unit.splitlines() if ln.startswith("ExecStart="))
    assert f"{sys.executable} -m engine.run --source 0" in exec_start and "--no-display" in exec_start
    assert "s3cret" not in unit and "mqtt://engine@broker.lan" in exec_start
    path = tmp_path / "emotion-engine.service"
    path.write_text(unit)
    if shutil.which("systemd-analyze"):
        verify = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0, verify.stderr
        assert "emotion-engine.service" not in verify.stderr, verify.stderr  # no warning about our unit
    user = service("print", "--user", "--source", "0").stdout
    assert "WantedBy=default.target" in user and "User=" not in user


def test_service_install_writes_the_unit_and_a_private_env_file(tmp_path):
    env = tmp_path / "env"
    proc = service("install", "--unit-dir", tmp_path / "units", "--env-file", env, "--no-enable", "--name", "shelf",
                   "--source", "0", "--mqtt", "mqtt://engine:s3cret@broker.lan:1884")
    assert proc.returncode == 0, proc.stderr
    unit = (tmp_path / "units" / "shelf.service").read_text()
    assert "s3cret" not in unit and f"EnvironmentFile=-{env.resolve()}" in unit
    assert env.read_text() == "EMOTION_MQTT_PASSWORD=s3cret\n" and stat.S_IMODE(env.stat().st_mode) == 0o600
    assert "s3cret" not in proc.stderr
    bad = service("install", "--unit-dir", tmp_path / "bad", "--no-enable", "--source", "0", "--detect-every", "0")
    assert bad.returncode == 2 and not (tmp_path / "bad").exists(), "a bad engine.run flag is refused before writing"
