# MQTT topic scheme nl/v1/{tenant}/{device}/{stream}, with …/ack and …/cmd, and its validator.
# Names are checked here once so clock, edge and cloud agree on what a valid topic is.

PREFIX = "nl/v1"
ACK = "ack"
CMD = "cmd"
STATUS = "status"
# Segment names a data stream may not take, because they mean something else.
RESERVED = (ACK, CMD, STATUS)
MAX_NAME = 32
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-"
# The Nightscout documents an edge node syncs with the cloud travel as JSON on a data topic of
# this name (not a feature stream; its ack lists the sequence numbers stored, see WIRE.md).
TREATMENTS = "treatments"
DOC_STREAMS = (TREATMENTS,)
# Filters the cloud ingest subscribes to; the shared form spreads messages over workers.
INGEST_FILTER = PREFIX + "/+/+/+"
# The largest MQTT packet the project's brokers take (Mosquitto's max_packet_size): a batch of
# 4 MiB of records with its header, topic and MQTT framing; anything larger is refused at the
# broker instead of being held in its memory and the ingest's (WIRE.md).
MAX_PACKET_BYTES = 4 * 1024 * 1024 + 8 * 1024
SHARED_INGEST_FILTER = "$share/ingest/" + INGEST_FILTER


class TopicError(ValueError):
    """A topic or a name in it is not valid; the message says which part and why."""


def check_name(kind, name):
    """Raise TopicError unless name is 1..32 of [a-z0-9_-], starting with a letter or digit."""
    if not isinstance(name, str) or not name:
        raise TopicError("The %s name must be a non-empty string." % kind)
    if len(name) > MAX_NAME:
        raise TopicError("The %s name %r is longer than %d characters." % (kind, name, MAX_NAME))
    for ch in name:
        if ch not in _NAME_CHARS:
            raise TopicError(
                "The %s name %r may only hold lowercase letters, digits, '_' and '-'."
                % (kind, name)
            )
    if name[0] in "_-":
        raise TopicError("The %s name %r must start with a letter or digit." % (kind, name))
    return name


def _stream(stream):
    check_name("stream", stream)
    if stream in RESERVED:
        raise TopicError("The stream name %r is reserved for the protocol." % stream)
    return stream


def data_topic(tenant, device, stream):
    """Topic a device publishes a stream's records on."""
    return "%s/%s/%s/%s" % (
        PREFIX,
        check_name("tenant", tenant),
        check_name("device", device),
        _stream(stream),
    )


def treatments_topic(tenant, device):
    """Topic an edge node publishes its Nightscout treatments (a JSON batch) on."""
    return data_topic(tenant, device, TREATMENTS)


def ack_topic(tenant, device, stream):
    """Topic the cloud publishes a stream's high-water-mark acknowledgement on."""
    return data_topic(tenant, device, stream) + "/" + ACK


def cmd_topic(tenant, device):
    """Topic commands to one device are published on."""
    return "%s/%s/%s/%s" % (PREFIX, check_name("tenant", tenant), check_name("device", device), CMD)


def status_topic(tenant, device):
    """Topic a device reports its health on (outbox size, drops; JSON)."""
    return "%s/%s/%s/%s" % (PREFIX, check_name("tenant", tenant), check_name("device", device),
                            STATUS)


# Glucose and last night's summary from the edge node to the desk clocks: LAN only (one level
# deeper than data topics, so neither the bridge nor the ingest filters match), retained JSON;
# and the time, not retained, for clocks whose LAN has no NTP server.
CLOCK_FEED = "clock"
CLOCK_GLUCOSE = "glucose"
CLOCK_NIGHT = "night"
CLOCK_TIME = "time"


def clock_feed_topic(tenant, edge_device, kind):
    """Topic an edge node publishes the clocks' glucose, night summary or time on."""
    if kind not in (CLOCK_GLUCOSE, CLOCK_NIGHT, CLOCK_TIME):
        raise TopicError("The clock feed kind must be %r, %r or %r."
                         % (CLOCK_GLUCOSE, CLOCK_NIGHT, CLOCK_TIME))
    return "%s/%s/%s/%s/%s" % (PREFIX, check_name("tenant", tenant),
                               check_name("device", edge_device), CLOCK_FEED, kind)


def clock_feed_filter(tenant):
    """What a clock subscribes to: every edge node of its tenant."""
    return "%s/%s/+/%s/+" % (PREFIX, check_name("tenant", tenant), CLOCK_FEED)


def device_prefix(tenant, device):
    """The prefix below which a device may publish (for broker ACLs)."""
    return "%s/%s/%s/" % (PREFIX, check_name("tenant", tenant), check_name("device", device))


def parse(topic):
    """Split a topic into (kind, tenant, device, stream); kind is "data", "ack", "cmd" or
    "status". stream is None for "cmd" and "status". Raises TopicError with the reason for
    anything else.
    """
    if not isinstance(topic, str):
        raise TopicError("A topic must be a string.")
    if not topic.startswith(PREFIX + "/"):
        raise TopicError("The topic %r does not start with %r." % (topic, PREFIX + "/"))
    parts = topic[len(PREFIX) + 1 :].split("/")
    if len(parts) == 3 and parts[2] in (CMD, STATUS):
        return (parts[2], check_name("tenant", parts[0]), check_name("device", parts[1]), None)
    if len(parts) == 3:
        return ("data", check_name("tenant", parts[0]), check_name("device", parts[1]),
                _stream(parts[2]))
    if len(parts) == 4 and parts[3] == ACK:
        return ("ack", check_name("tenant", parts[0]), check_name("device", parts[1]),
                _stream(parts[2]))
    raise TopicError(
        "The topic %r is not nl/v1/{tenant}/{device}/{stream}, …/{stream}/ack, …/cmd or "
        "…/status." % topic
    )


def check_publish_topic(topic):
    """Raise TopicError if topic is not valid to publish on (any MQTT, not only ours)."""
    if not isinstance(topic, str) or not topic:
        raise TopicError("A publish topic must be a non-empty string.")
    if len(topic.encode()) > 65535:
        raise TopicError("A topic may not be longer than 65535 bytes.")
    for ch in topic:
        if ch in "+#":
            raise TopicError("A publish topic may not contain the wildcards '+' or '#'.")
        if ch == "\0":
            raise TopicError("A topic may not contain a null character.")
    return topic
