"""The LAN broker on the edge node, and its bridge to the cloud broker.

The desk clocks publish to a Mosquitto on the edge (LAN, works when the internet is down);
a Mosquitto bridge forwards their data and status to the cloud broker and brings the
cloud's acknowledgements and commands back, with a persistent session and QoS 1 both ways.
`nightlink edge broker-config` writes this configuration from the edge's TOML file.
"""

from __future__ import annotations

from nightlink.edge.node.config import EdgeConfig
from nightlink.shared import topics


def bridge_config(cfg: EdgeConfig, device: str, *, listen_host: str = "0.0.0.0",
                  persistence: str | None = "/var/lib/mosquitto/", extra: str = "") -> str:
    """mosquitto.conf text for the edge's LAN broker with a bridge to [sync]'s broker.

    With `persistence` (a folder), queued messages survive a restart of the LAN broker.
    """
    t = topics.check_name("tenant", cfg.tenant)
    prefix = f"{topics.PREFIX}/{t}/"
    s = cfg.sync
    lines = [
        "# Written by `nightlink edge broker-config`; regenerate rather than edit.",
        f"listener {cfg.clocks.port} {listen_host}",
        *(["persistence true", f"persistence_location {persistence}"] if persistence else []),
        "",
        "connection nightlink-cloud",
        f"address {s.host}:{s.port}",
        f"remote_clientid nl-bridge-{device}",
        "cleansession false",
        "bridge_protocol_version mqttv311",
        "try_private false",
        "restart_timeout 2 30",
        f"keepalive_interval {s.keepalive_s}",
        # Out: every clock's data and status. In: their acks and commands.
        f"topic {prefix}+/+ out 1",
        f"topic {prefix}+/+/{topics.ACK} in 1",
        f"topic {prefix}+/{topics.CMD} in 1",
    ]
    if s.username:
        lines += [f"remote_username {s.username}", f"remote_password {s.password}"]
    if s.tls:
        lines += ["bridge_capath /etc/ssl/certs", "bridge_insecure false"]
    return "\n".join(lines) + "\n" + extra
