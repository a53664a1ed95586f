# Board double of `socket` for the MicroPython tests: the real umqtt.simple writes and reads
# MQTT bytes on it, and every socket leads to the one in-process broker (mqtt_broker.BROKER).
import errno

from mqtt_broker import BROKER

AF_INET = 2
SOCK_STREAM = 1


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    return [(AF_INET, SOCK_STREAM, 0, "", (host, port))]


class socket:  # noqa: N801 - the module's own spelling
    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=0):
        self.inbox = bytearray()  # bytes the broker sent, not yet read
        self.blocking = True
        self.closed = False
        self.client_id = None

    def settimeout(self, t):
        self.blocking = t is None or t > 0

    def setblocking(self, flag):
        self.blocking = flag

    def connect(self, addr):
        BROKER.accept(self, addr)

    def write(self, buf, n=None):
        if self.closed:
            raise OSError(errno.ECONNRESET)
        data = buf.encode() if isinstance(buf, str) else bytes(buf)
        if n is not None:
            data = data[:n]
        BROKER.receive(self, data)
        return len(data)

    def read(self, n):
        if self.inbox:
            out = bytes(self.inbox[:n])
            self.inbox = self.inbox[n:]
            return out
        if self.closed:
            return b""
        if not self.blocking:
            return None
        raise OSError(errno.ETIMEDOUT)  # a read that would wait for ever: the broker is silent

    def close(self):
        if not self.closed:
            self.closed = True
            BROKER.gone(self)
