"""Host-port stand-in for MicroPython's `network`: a station interface that is "connected"
once connect() is called with an SSID the host accepts (`WLAN.available`, all by default).
The PC's own network carries the traffic."""

STA_IF = 0
AP_IF = 1
STAT_IDLE = 0
STAT_CONNECTING = 1
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202


class WLAN:
    available = None  # None: every SSID connects; else a dict ssid -> password
    connects = 0

    def __init__(self, interface=STA_IF):
        self._active = False
        self._ssid = None
        self._status = STAT_IDLE

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)
        if not on:
            self._status = STAT_IDLE
        return None

    def connect(self, ssid, password=""):
        WLAN.connects += 1
        nets = WLAN.available
        if nets is not None and ssid not in nets:
            self._status = STAT_NO_AP_FOUND
        elif nets is not None and nets[ssid] != password:
            self._status = STAT_WRONG_PASSWORD
        else:
            self._ssid = ssid
            self._status = STAT_GOT_IP

    def disconnect(self):
        self._status = STAT_IDLE

    def isconnected(self):
        return self._active and self._status == STAT_GOT_IP

    def status(self, param=None):
        if param == "rssi":
            return -58
        return self._status

    def config(self, name):
        return {"ssid": self._ssid, "essid": self._ssid, "mac": b"\xa4\xcf\x12\xb0\xc3\xd4"}[name]

    def ifconfig(self):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
