# An MQTT 3.1.1 broker inside the MicroPython test, behind the socket double: sessions by
# client id (a second connect with the same id takes the first over, as Mosquitto does),
# subscriptions with + and #, retained messages, QoS 1 acks, pings, and a log of all of it.
# As the cloud's ingest would, it acknowledges every data record with a high-water mark.
import errno
import json
import time

from nightlink.shared import codec, features, topics


def _matches(filt, topic):
    f = filt.split("/")
    t = topic.split("/")
    for i in range(len(f)):
        if f[i] == "#":
            return True
        if i >= len(t) or (f[i] != "+" and f[i] != t[i]):
            return False
    return len(f) == len(t)


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _str(b, i):
    n = (b[i] << 8) | b[i + 1]
    return bytes(b[i + 2 : i + 2 + n]).decode(), i + 2 + n


class Broker:
    def __init__(self):
        self.reset()

    def reset(self):
        self.log = []  # [event, client id] in order: connect, takeover, disconnect, lost
        self.sessions = {}  # client id -> open socket
        self.subs = []  # [socket, filter, qos]
        self.retained = {}
        self.data = []  # [topic, seq] of every data record published
        self.status = []
        self.refuse = 0  # CONNACK return code for the next connects (5: not authorised)
        self.down = False  # connects are refused at the TCP level
        self.pings = 0
        self.scheduled = []  # [unix s, topic, payload], published when the clock gets there
        self._buf = {}
        self._marks = {}  # (device, stream) -> [hwm, set of seqs above it]
        self._pid = 0

    # -- what the test drives ---------------------------------------------------------------

    def publish(self, topic, payload, retain=True, qos=0):
        """A publish from outside the clock (the edge's feed), to every subscriber."""
        if retain:
            self.retained[topic] = payload
        for sock, filt, sub_qos in list(self.subs):
            if _matches(filt, topic):
                self._deliver(sock, topic, payload, min(qos, sub_qos))

    def schedule(self, unix_s, topic, payload, retain=True):
        """Publish (retained unless told) once the board's clock reaches unix_s."""
        self.scheduled.append([unix_s, topic, payload, retain])

    def kick(self, client_id):
        """Drop a client's connection, as a broker restart or a dead link would."""
        sock = self.sessions.pop(client_id, None)
        if sock is not None:
            sock.closed = True
            self.subs = [s for s in self.subs if s[0] is not sock]
            self.log.append(["kicked", client_id])

    def subscriptions(self, client_id):
        sock = self.sessions.get(client_id)
        return [[s[1], s[2]] for s in self.subs if s[0] is sock and sock is not None]

    # -- the socket side --------------------------------------------------------------------

    def accept(self, sock, addr):
        if self.down:
            self.log.append(["refused", None])
            raise OSError(errno.ECONNREFUSED)
        self._buf[id(sock)] = bytearray()

    def gone(self, sock):
        self._buf.pop(id(sock), None)
        self.subs = [s for s in self.subs if s[0] is not sock]
        if sock.client_id is not None and self.sessions.get(sock.client_id) is sock:
            del self.sessions[sock.client_id]
            self.log.append(["lost", sock.client_id])

    def receive(self, sock, data):
        buf = self._buf[id(sock)]
        buf.extend(data)
        while len(buf) >= 2:
            n, shift, i = 0, 0, 1
            while True:
                if i >= len(buf):
                    return
                n |= (buf[i] & 0x7F) << shift
                shift += 7
                i += 1
                if not buf[i - 1] & 0x80:
                    break
            if len(buf) < i + n:
                return
            kind = buf[0]
            body = bytes(buf[i : i + n])
            self._buf[id(sock)] = buf = buf[i + n :]
            self._packet(sock, kind, body)
        self._due()

    def _packet(self, sock, kind, body):
        op = kind & 0xF0
        if op == 0x10:
            self._connect(sock, body)
        elif kind == 0x82:
            self._subscribe(sock, body)
        elif op == 0x30:
            self._publish(sock, kind, body)
        elif op == 0xC0:
            self.pings += 1
            sock.inbox.extend(b"\xd0\x00")
        elif op == 0xE0:
            if self.sessions.get(sock.client_id) is sock:
                del self.sessions[sock.client_id]
            self.log.append(["disconnect", sock.client_id])
            self.subs = [s for s in self.subs if s[0] is not sock]
        # PUBACKs from the client (0x40) need nothing

    def _connect(self, sock, body):
        _proto, i = _str(body, 0)
        i += 4  # level, flags, keepalive
        cid, i = _str(body, i)
        if self.refuse:
            sock.inbox.extend(bytes((0x20, 2, 0, self.refuse)))
            return
        old = self.sessions.get(cid)
        if old is not None and old is not sock:
            self.log.append(["takeover", cid])  # "already connected, closing old connection"
            old.closed = True
            self.subs = [s for s in self.subs if s[0] is not old]
        sock.client_id = cid
        self.sessions[cid] = sock
        self.log.append(["connect", cid])
        sock.inbox.extend(b"\x20\x02\x00\x00")

    def _subscribe(self, sock, body):
        pid = body[0:2]
        i = 2
        granted = bytearray()
        new = []
        while i < len(body):
            filt, i = _str(body, i)
            qos = body[i] & 3
            i += 1
            self.subs.append([sock, filt, qos])
            new.append((filt, qos))
            granted.append(qos)
        sock.inbox.extend(bytes((0x90,)) + _varint(2 + len(granted)) + pid + bytes(granted))
        for filt, qos in new:
            for topic in self.retained:
                if _matches(filt, topic):
                    self._deliver(sock, topic, self.retained[topic], qos)

    def _publish(self, sock, kind, body):
        qos = (kind >> 1) & 3
        topic, i = _str(body, 0)
        if qos:
            sock.inbox.extend(b"\x40\x02" + body[i : i + 2])
            i += 2
        payload = body[i:]
        if kind & 1:
            self.retained[topic] = payload
        for s, filt, sub_qos in list(self.subs):
            if s is not sock and _matches(filt, topic):
                self._deliver(s, topic, payload, min(qos, sub_qos))
        try:
            kind_, tenant, device, stream = topics.parse(topic)
        except topics.TopicError:
            return
        if kind_ == "status":
            self.status.append(json.loads(payload))
        elif kind_ == "data":
            self._ack(tenant, device, stream, payload)

    def _ack(self, tenant, device, stream, payload):
        h = codec.peek_header(payload)
        self.data.append([stream, h[codec.H_SEQ]])
        mark = self._marks.setdefault((device, stream), [0, set()])
        for seq in range(h[codec.H_SEQ], codec.last_seq(h) + 1):
            mark[1].add(seq)
        while mark[0] + 1 in mark[1]:
            mark[0] += 1
            mark[1].discard(mark[0])
        if features.stream_by_name(stream) is not None:
            body = json.dumps({"stream": stream, "hwm": mark[0]}).encode()
            self.publish(topics.ack_topic(tenant, device, stream), body, True, 1)

    def _deliver(self, sock, topic, payload, qos):
        t = topic.encode()
        var = bytes(((len(t) >> 8) & 0xFF, len(t) & 0xFF)) + t
        if qos:
            self._pid = self._pid % 65535 + 1
            var += bytes((self._pid >> 8, self._pid & 0xFF))
        sock.inbox.extend(bytes((0x30 | (qos << 1),)) + _varint(len(var) + len(payload)) + var
                          + bytes(payload))

    def _due(self):
        now = time.time()
        while self.scheduled and self.scheduled[0][0] <= now:
            _at, topic, payload, retain = self.scheduled.pop(0)
            self.publish(topic, payload, retain)


BROKER = Broker()
