"""engine.run's MQTT flags (`--mqtt HOST[:PORT]` and friends) mapped to `engine.mqtt.MqttOptions`, and the
start/stop policy of the command: a broker that cannot be reached at start (wrong host, closed port, refused
credentials) is one line on stderr and the run goes on without MQTT, or, with --mqtt-required, exit 2.
paho-mqtt is imported only when --mqtt is given."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from engine.core.cliargs import positive_int
from engine.core.errors import UserError
from engine.core.types import RunningMode
from engine.mqtt.options import PASSWORD_ENV, MqttOptions

#: MqttOptions field -> flag (merged into engine.cli.options.FLAGS)
MQTT_FLAGS = {
    "MqttOptions.host": "--mqtt", "MqttOptions.port": "--mqtt", "MqttOptions.cafile": "--mqtt-cafile",
    "MqttOptions.prefix": "--mqtt-prefix", "MqttOptions.discovery_prefix": "--mqtt-discovery-prefix",
    "MqttOptions.keepalive": "--mqtt-keepalive", "MqttOptions.state_rate": "--mqtt-state-rate",
    "MqttOptions.queue_size": "--mqtt-queue",
}


def add_mqtt_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("MQTT (Home Assistant, Node-RED, ...: docs/mqtt.md; needs pip install 'emotion-engine[mqtt]')")
    g.add_argument("--mqtt", metavar="HOST[:PORT]|URL",
                   help="publish face events, a retained state and Home Assistant discovery to this broker: HOST, HOST:PORT, "
                        f"mqtt://user:pass@host:port or mqtts://host (TLS); the password may instead be in ${PASSWORD_ENV}")
    g.add_argument("--mqtt-client-id", metavar="ID", help="MQTT client id, also the Home Assistant device id [emotion-engine-<hostname>]")
    g.add_argument("--mqtt-prefix", default=MqttOptions.prefix, metavar="TOPIC", help=f"topic prefix [{MqttOptions.prefix}]")
    g.add_argument("--mqtt-keepalive", type=positive_int, default=MqttOptions.keepalive, metavar="S",
                   help=f"keep-alive seconds: a dropped connection is noticed within ~1.5x this [{MqttOptions.keepalive}]")
    g.add_argument("--mqtt-state-rate", type=float, default=MqttOptions.state_rate, metavar="N",
                   help=f"retained state messages a second, at most [{MqttOptions.state_rate:g}]")
    g.add_argument("--mqtt-queue", type=positive_int, default=MqttOptions.queue_size, metavar="N",
                   help=f"messages kept while the broker is away; past it the oldest are dropped and counted [{MqttOptions.queue_size}]")
    g.add_argument("--mqtt-cafile", metavar="FILE", help="mqtts://: a CA certificate for the broker's [the system's CAs]")
    g.add_argument("--mqtt-discovery-prefix", default=MqttOptions.discovery_prefix, metavar="TOPIC",
                   help=f"Home Assistant discovery prefix [{MqttOptions.discovery_prefix}]")
    g.add_argument("--mqtt-no-discovery", action="store_true", help="no Home Assistant discovery configs")
    g.add_argument("--mqtt-required", action="store_true",
                   help="no broker at start is an error (exit 2) instead of one warning and a run without MQTT")


def mqtt_options_from_args(args: argparse.Namespace) -> MqttOptions | None:
    """MqttOptions from the flags; None without --mqtt. A bad value is an OptionError naming the field."""
    if not getattr(args, "mqtt", None):
        if getattr(args, "mqtt_required", False):
            raise UserError("--mqtt-required needs --mqtt HOST[:PORT]")
        return None
    return MqttOptions.from_url(
        args.mqtt, client_id=args.mqtt_client_id, prefix=args.mqtt_prefix, keepalive=args.mqtt_keepalive,
        state_rate=args.mqtt_state_rate, queue_size=args.mqtt_queue, cafile=args.mqtt_cafile,
        discovery=not args.mqtt_no_discovery, discovery_prefix=args.mqtt_discovery_prefix, required=args.mqtt_required)


def start_mqtt(opts: MqttOptions | None, source, log: Callable[[str], None]):
    """An `MqttSink` connected for `source`, or None (no --mqtt, or no broker: one warning line)."""
    if opts is None:
        return None
    from engine.mqtt.publisher import MqttError
    from engine.mqtt.sink import MqttSink

    try:
        return MqttSink.connect(opts, source=source.name, stills=source.mode is RunningMode.IMAGE, log=log)
    except MqttError as exc:
        if opts.required:
            raise UserError(f"{exc} (--mqtt-required)") from None
        print(f"warning: {exc}; running without MQTT", file=sys.stderr, flush=True)
        return None


def stop_mqtt(sink, log: Callable[[str], None]) -> None:
    """Close the sink and say what it sent; dropped messages are said even with --quiet."""
    if sink is None:
        return
    stats = sink.close()
    if stats.dropped:
        print(sink.summary(), file=sys.stderr, flush=True)
    else:
        log(sink.summary())
