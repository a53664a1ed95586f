# Flash outbox of the desk clock: an append-only file of framed records, CRC per record.
# Survives power cuts (a torn last write is cut off at open), drains on high-water-mark acks.

import os
import struct

try:
    from micropython import const
except ImportError:  # CPython (host port, tests)

    def const(x):
        return x


try:
    import codec
except ImportError:  # CPython: the package layout
    from nightlink.shared import codec

_FRAME = const(2)  # u16 length before each record
_MAX_RECORD = const(1024)
_STATE_MAGIC = b"NLO1"
_MAX_RANGES = const(32)  # dropped seq ranges remembered per stream for the cloud


class OutboxFull(Exception):
    """No room even after dropping every droppable record."""


class Outbox:
    """Records waiting for the cloud, oldest first, in `path`; state (acks, drops) beside it.

    capacity: bytes of flash the outbox may use (7 days of room epochs fit in ~770 KB).
    protected: streams whose records are never dropped when the file is full.
    """

    def __init__(self, path, capacity=800 * 1024, protected=()):
        self.path = path
        self.tmp = path + ".tmp"
        self.state_path = path + ".state"
        self.capacity = capacity
        self.protected = protected
        self.acked = {}  # stream -> highest acknowledged seq
        self.drops = {}  # stream -> rows dropped for lack of room (reported to the cloud)
        self.dropped = {}  # stream -> [[first, last], ...] seq ranges dropped (newest kept)
        self.last_seq = {}  # stream -> highest seq written
        self.size = 0
        self.count = 0
        self.torn = 0  # bytes cut off a torn last write at open
        self._buf = bytearray(_MAX_RECORD)
        self._mv = memoryview(self._buf)
        self._load_state()
        self._recover()

    # -- persistence ----------------------------------------------------------------------

    def _load_state(self):
        try:
            with open(self.state_path, "rb") as f:
                data = f.read()
        except OSError:
            return
        if len(data) < 8 or data[:4] != _STATE_MAGIC:
            return
        body = data[4:-4]
        if codec.crc32(body) != struct.unpack("<I", data[-4:])[0]:
            return  # a torn state write: the outbox itself still knows what is unsent
        for i in range(len(body) // 6):
            kind, stream, value = struct.unpack_from("<BBI", body, 6 * i)
            if kind == 1:
                self.acked[stream] = value
            elif kind == 2:
                self.drops[stream] = value
            elif kind == 3:  # a dropped range: its first seq, then (kind 4) its last
                self.dropped.setdefault(stream, []).append([value, value])
            elif kind == 4 and self.dropped.get(stream):
                self.dropped[stream][-1][1] = value

    def _save_state(self):
        body = bytearray()
        for kind, table in ((1, self.acked), (2, self.drops)):
            for stream in table:
                body += struct.pack("<BBI", kind, stream, table[stream])
        for stream in self.dropped:
            for first, last in self.dropped[stream]:
                body += struct.pack("<BBI", 3, stream, first)
                body += struct.pack("<BBI", 4, stream, last)
        data = _STATE_MAGIC + bytes(body) + struct.pack("<I", codec.crc32(body))
        with open(self.tmp, "wb") as f:
            f.write(data)
        os.rename(self.tmp, self.state_path)  # atomic on littlefs and POSIX

    def _entries(self):
        """(offset, length) of every intact record, in file order; stops at damage."""
        try:
            f = open(self.path, "rb")
        except OSError:
            return
        hdr = bytearray(_FRAME)
        off = 0
        with f:
            while True:
                if f.readinto(hdr) != _FRAME:
                    return
                n = hdr[0] | (hdr[1] << 8)
                if n == 0 or n > _MAX_RECORD:
                    return
                mv = self._mv[:n]
                if f.readinto(mv) != n:
                    return
                try:
                    codec.peek_length(mv)
                    codec.decode(mv)
                except codec.WireError:
                    return
                yield off, n
                off += _FRAME + n

    def _recover(self):
        end = 0
        for off, n in self._entries():
            end = off + _FRAME + n
            self.count += 1
            stream, seq, rows = self._ident(n)
            last = seq + rows - 1
            if last > self.last_seq.get(stream, 0):
                self.last_seq[stream] = last
        try:
            size = os.stat(self.path)[6]
        except OSError:
            size = 0
        if size > end:  # a torn last write: cut it off
            self.torn = size - end
            self._truncate(end)
        self.size = end
        for stream in self.acked:
            if self.acked[stream] > self.last_seq.get(stream, 0):
                self.last_seq[stream] = self.acked[stream]

    def _ident(self, n):
        """(stream, first seq, rows) of the record in the buffer."""
        stream = self._buf[1]
        seq = struct.unpack_from("<I", self._buf, 14)[0]
        rows = struct.unpack_from("<H", self._buf, 22)[0]
        return stream, seq, rows

    def _truncate(self, length):
        # MicroPython has no truncate(): copy the good prefix to a new file and swap.
        with open(self.path, "rb") as src, open(self.tmp, "wb") as dst:
            left = length
            while left:
                got = src.readinto(self._mv[: min(left, _MAX_RECORD)])
                if not got:
                    break
                dst.write(self._mv[:got])
                left -= got
        os.rename(self.tmp, self.path)

    # -- writing ----------------------------------------------------------------------------

    def next_seq(self, stream):
        """The sequence number the next row of `stream` gets (continues after reboots)."""
        return self.last_seq.get(stream, 0) + 1

    def append(self, record_bytes):
        """Add one encoded record; make room first by dropping old unprotected records."""
        n = len(record_bytes)
        if n > _MAX_RECORD:
            raise ValueError("record of %d bytes is larger than %d" % (n, _MAX_RECORD))
        if self.size + _FRAME + n > self.capacity:
            self.compact(need=_FRAME + n)
        with open(self.path, "ab") as f:
            f.write(struct.pack("<H", n))
            f.write(record_bytes)
        self.size += _FRAME + n
        self.count += 1
        stream = record_bytes[1]
        seq = struct.unpack_from("<I", record_bytes, 14)[0]
        rows = struct.unpack_from("<H", record_bytes, 22)[0]
        if seq + rows - 1 > self.last_seq.get(stream, 0):
            self.last_seq[stream] = seq + rows - 1

    # -- draining ---------------------------------------------------------------------------

    def pending(self, after=None, limit=16):
        """Up to `limit` unacknowledged records (bytes), oldest first; `after` maps stream to
        the highest seq already handed out on this connection (not yet acknowledged)."""
        out = []
        for off, n in self._entries():
            stream, seq, rows = self._ident(n)
            done = self.acked.get(stream, 0)
            if after is not None and after.get(stream, 0) > done:
                done = after[stream]
            if seq + rows - 1 > done:
                out.append(bytes(self._mv[:n]))
                if len(out) >= limit:
                    break
            del off
        return out

    def ack(self, stream, hwm):
        """The cloud holds every row of `stream` up to seq hwm. The file is emptied once
        everything is acknowledged, and rewritten only when it is three-quarters full, so
        flash is not worn by a rewrite per ack."""
        if hwm <= self.acked.get(stream, 0):
            return
        self.acked[stream] = hwm
        if self.all_acked():
            try:
                os.remove(self.path)
            except OSError:
                pass
            self.size = 0
            self.count = 0
            self._save_state()
        elif self.size > self.capacity * 3 // 4:
            self.compact()

    def all_acked(self):
        for stream in self.last_seq:
            if self.last_seq[stream] > self.acked.get(stream, 0):
                return False
        return True

    def unacked(self):
        """How many records still wait for the cloud."""
        n = 0
        for _off, size in self._entries():
            stream, seq, rows = self._ident(size)
            if seq + rows - 1 > self.acked.get(stream, 0):
                n += 1
        return n

    def _note_dropped(self, stream, off, rows):
        """Remember the seq range of the record at `off` as dropped (merging neighbours)."""
        with open(self.path, "rb") as f:
            f.seek(off + _FRAME)
            f.readinto(self._mv[:24])
        first = struct.unpack_from("<I", self._buf, 14)[0]
        last = first + rows - 1
        ranges = self.dropped.setdefault(stream, [])
        if ranges and ranges[-1][1] + 1 >= first:
            if last > ranges[-1][1]:
                ranges[-1][1] = last
        else:
            ranges.append([first, last])
        if len(ranges) > _MAX_RANGES:
            ranges.pop(0)

    def compact(self, need=0):
        """Rewrite the file with the unacknowledged records only; if `need` more bytes must
        fit, drop the oldest unprotected records too, counting them per stream."""
        keep = []
        total = 0
        for off, n in self._entries():
            stream, seq, rows = self._ident(n)
            if seq + rows - 1 > self.acked.get(stream, 0):
                keep.append((off, n, stream, rows))
                total += _FRAME + n
        dropped = set()
        i = 0
        while total + need > self.capacity and i < len(keep):
            off, n, stream, rows = keep[i]
            if stream not in self.protected:
                dropped.add(off)
                total -= _FRAME + n
                self.drops[stream] = self.drops.get(stream, 0) + rows
                self._note_dropped(stream, off, rows)
            i += 1
        if total + need > self.capacity:
            raise OutboxFull("the outbox is full of records that may not be dropped")
        with open(self.path, "rb") as src, open(self.tmp, "wb") as dst:
            for off, n, _stream, _rows in keep:
                if off in dropped:
                    continue
                src.seek(off)
                src.readinto(self._mv[: _FRAME + n])
                dst.write(self._mv[: _FRAME + n])
        os.rename(self.tmp, self.path)
        self.size = total
        self.count = len(keep) - len(dropped)
        self._save_state()
