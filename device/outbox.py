# Flash outbox of the desk clock: an append-only file of framed records, CRC per record.
# Survives power cuts (a torn last write is cut off at open), drains on high-water-mark acks.

import os

try:
    from micropython import const
except ImportError:  # CPython (host port, tests)

    def const(x):
        return x


from nightlink.shared import codec

_FRAME = const(2)  # u16 length before each record
_MAX_RECORD = const(1024)
_MIN_RECORD = const(28)  # a header and a CRC: anything shorter is damage
_STATE_MAGIC = b"NLO1"
_MAX_RANGES = const(32)  # dropped seq ranges remembered per stream for the cloud
_HEAD_SAVE_BYTES = const(8192)  # the read head is written to flash when it moved this far
# State file entries (kind u8, stream u8, value u32 little-endian).
_S_ACKED = const(1)
_S_DROPS = const(2)
_S_DROP_FIRST = const(3)
_S_DROP_LAST = const(4)
_S_HEAD = const(5)  # file offset of the first record not yet acknowledged
_S_HEAD_COUNT = const(6)  # records before it
_S_HEAD_SEQ = const(7)  # stream and first seq of the record at the head (0: the file's end)
_S_FLOOR = const(8)  # numbering goes on after this seq (the cloud's mark of an earlier life)
_ENTRY = const(6)


class OutboxFull(Exception):
    """No room even after dropping every droppable record."""


class Outbox:
    """Records waiting for the cloud, oldest first, in `path`; state (acks, drops, read head)
    beside it.

    capacity: bytes of flash the outbox may use (7 days of room epochs fit in ~790 KB).
    protected: streams whose records are never dropped when the file is full.

    Records before the read head are all acknowledged, so draining reads each record a
    bounded number of times: the head and the send cursor only move forward, and records are
    checked by their CRC, never decoded.
    """

    def __init__(self, path, capacity=800 * 1024, protected=()):
        self.path = path
        self.tmp = path + ".tmp"
        self.state_path = path + ".state"
        self.state_tmp = path + ".state.tmp"
        self.capacity = capacity
        self.protected = protected
        self.acked = {}  # stream -> highest acknowledged seq
        self.drops = {}  # stream -> rows dropped for lack of room (reported to the cloud)
        self.floor = {}  # stream -> seq the numbering goes on after (catch_up)
        self.dropped = {}  # stream -> [[first, last], ...] seq ranges dropped (newest kept)
        self.last_seq = {}  # stream -> highest seq written
        self.size = 0
        self.count = 0
        self.torn = 0  # bytes cut off a torn last write at open
        self.head = 0  # file offset of the first record not known to be acknowledged
        self.head_count = 0  # records before the head
        self._head_id = (0, 0)  # (stream, first seq) of the record at the head; 0 at the end
        self._saved_head = 0
        self._stale = False  # acks arrived since the head last moved
        self._cur = 0  # where the next pending(after=...) scan starts
        self._need = {}  # stream -> highest seq before _cur that is sent but not acknowledged
        self._frame = bytearray(_FRAME)
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
        if codec.crc32(body) != int.from_bytes(data[-4:], "little"):
            return  # a torn state write: the outbox itself still knows what is unsent
        for i in range(len(body) // _ENTRY):
            kind = body[_ENTRY * i]
            stream = body[_ENTRY * i + 1]
            value = int.from_bytes(body[_ENTRY * i + 2 : _ENTRY * i + 6], "little")
            if kind == _S_ACKED:
                self.acked[stream] = value
            elif kind == _S_DROPS:
                self.drops[stream] = value
            elif kind == _S_DROP_FIRST:  # a dropped range: its first seq, then its last
                self.dropped.setdefault(stream, []).append([value, value])
            elif kind == _S_DROP_LAST and self.dropped.get(stream):
                self.dropped[stream][-1][1] = value
            elif kind == _S_HEAD:
                self.head = value
            elif kind == _S_HEAD_COUNT:
                self.head_count = value
            elif kind == _S_HEAD_SEQ:
                self._head_id = (stream, value)
            elif kind == _S_FLOOR:
                self.floor[stream] = value

    def _save_state(self):
        body = bytearray()
        for kind, table in ((_S_ACKED, self.acked), (_S_DROPS, self.drops),
                            (_S_FLOOR, self.floor)):
            for stream in table:
                _entry(body, kind, stream, table[stream])
        for stream in self.dropped:
            for first, last in self.dropped[stream]:
                _entry(body, _S_DROP_FIRST, stream, first)
                _entry(body, _S_DROP_LAST, stream, last)
        _entry(body, _S_HEAD, 0, self.head)
        _entry(body, _S_HEAD_COUNT, 0, self.head_count)
        _entry(body, _S_HEAD_SEQ, self._head_id[0], self._head_id[1])
        data = _STATE_MAGIC + bytes(body) + codec.crc32(body).to_bytes(4, "little")
        with open(self.state_tmp, "wb") as f:
            f.write(data)
        os.rename(self.state_tmp, self.state_path)  # atomic on littlefs and POSIX
        self._saved_head = self.head

    def _open(self, offset):
        """The outbox file for reading at offset, or None when there is no file."""
        try:
            f = open(self.path, "rb")
        except OSError:
            return None
        if offset:
            f.seek(offset)
        return f

    def _read(self, f, crc=True):
        """The next record of f into the buffer: (length, header), or (0, None) at the end of
        the file or at damage. With crc, the record is checked as the codec checks it (header,
        length, CRC32) without decoding its rows; without, only its header is read."""
        if f.readinto(self._frame) != _FRAME:
            return 0, None
        n = self._frame[0] | (self._frame[1] << 8)
        if n < _MIN_RECORD or n > _MAX_RECORD:
            return 0, None
        mv = self._mv[:n]
        if f.readinto(mv) != n:
            return 0, None
        try:
            return n, codec.check(mv) if crc else codec.peek_header(mv)
        except codec.WireError:
            return 0, None

    def _recover(self):
        try:
            size = os.stat(self.path)[6]
        except OSError:
            size = 0
        start = self._head_start(size)
        end = start
        count = self.head_count
        f = self._open(start)
        if f is not None:
            with f:
                while True:
                    n, h = self._read(f)
                    if not n:
                        break
                    end += _FRAME + n
                    count += 1
                    last = codec.last_seq(h)
                    if last > self.last_seq.get(h[codec.H_STREAM], 0):
                        self.last_seq[h[codec.H_STREAM]] = last
        if size > end:  # a torn last write: cut it off
            self.torn = size - end
            self._truncate(end)
        self.size = end
        self.count = count
        self._cur = self.head
        for table in (self.acked, self.floor):
            for stream in table:
                if table[stream] > self.last_seq.get(stream, 0):
                    self.last_seq[stream] = table[stream]

    def _head_start(self, size):
        """Where recovery scans from: the saved head when the record there is the one the
        state names (so the file is the one the state was written for), else the start."""
        ok = False
        if 0 < self.head < size:
            f = self._open(self.head)
            if f is not None:
                with f:
                    n, h = self._read(f)
                ok = n > 0 and (h[codec.H_STREAM], h[codec.H_SEQ]) == self._head_id
        elif 0 < self.head == size:
            ok = self._head_id[0] == 0
        if not ok:
            self.head = 0
            self.head_count = 0
            self._head_id = (0, 0)
        self._saved_head = self.head
        return self.head

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

    def catch_up(self, stream, mark):
        """The cloud holds rows of this device up to seq `mark` from an earlier life (the
        clock was reflashed, or its state lost, and numbers from 1 again): the next rows are
        numbered after it, for good, so the cloud's acks cover them again. Nothing is
        acknowledged by it: the rows waiting are sent (oldest first) before any numbered
        after the mark, and the first ack above the mark covers them."""
        if mark > self.last_seq.get(stream, 0):
            self.last_seq[stream] = mark
            self.floor[stream] = mark
            self._save_state()

    def next_seq(self, stream):
        """The sequence number the next row of `stream` gets (continues after reboots)."""
        return self.last_seq.get(stream, 0) + 1

    def append(self, record_bytes):
        """Add one encoded record; make room first by dropping old unprotected records."""
        n = len(record_bytes)
        if n > _MAX_RECORD:
            raise ValueError("record of %d bytes is larger than %d" % (n, _MAX_RECORD))
        h = codec.peek_header(record_bytes)
        if self.size + _FRAME + n > self.capacity:
            self.compact(need=_FRAME + n)
        self._frame[0] = n & 0xFF
        self._frame[1] = n >> 8
        with open(self.path, "ab") as f:
            f.write(self._frame)
            f.write(record_bytes)
        if self.head == self.size:  # everything before was acknowledged: this is the head
            self._head_id = (h[codec.H_STREAM], h[codec.H_SEQ])
        self.size += _FRAME + n
        self.count += 1
        last = codec.last_seq(h)
        if last > self.last_seq.get(h[codec.H_STREAM], 0):
            self.last_seq[h[codec.H_STREAM]] = last

    # -- draining ---------------------------------------------------------------------------

    def _unsent(self, h, after):
        """True if a record (its header) holds rows neither acknowledged nor in `after`."""
        s = h[codec.H_STREAM]
        done = self.acked.get(s, 0)
        if after is not None and after.get(s, 0) > done:
            done = after[s]
        return codec.last_seq(h) > done

    def _cursor_valid(self, after):
        """The send cursor may resume where it stopped while `after` still covers every
        record it stepped over (a reconnect or a gap resets `after`: start at the head)."""
        for s in self._need:
            v = self._need[s]
            if v > self.acked.get(s, 0) and v > after.get(s, 0):
                return False
        return self._cur >= self.head

    def pending(self, after=None, limit=16):
        """Up to `limit` unacknowledged records (bytes), oldest first; `after` maps stream to
        the highest seq already handed out on this connection (not yet acknowledged)."""
        out = []
        if after is None:
            start = self.head
        else:
            if not self._cursor_valid(after):
                self._cur = self.head
                self._need = {}
            start = self._cur
        if start >= self.size and not self._stale:
            return out
        f = self._open(start)
        if f is None:
            return out
        with f:
            if self._stale:
                self._advance_head(f)
                if start < self.head:
                    start = self.head
                    if after is not None:
                        self._cur = start
                f.seek(start)
            off = start
            while len(out) < limit:
                n, h = self._read(f)
                if not n:
                    break
                off += _FRAME + n
                unsent = self._unsent(h, after)
                if unsent:
                    out.append(bytes(self._mv[:n]))
                if after is not None:
                    self._cur = off
                    s = h[codec.H_STREAM]
                    last = codec.last_seq(h)
                    if last > self.acked.get(s, 0) and last > self._need.get(s, 0):
                        self._need[s] = last
        return out

    def _advance_head(self, f):
        """Move the read head past records whose rows are all acknowledged. The head only
        moves forward, so over a whole drain every record is passed once."""
        self._stale = False
        f.seek(self.head)
        self._head_id = (0, 0)
        while True:
            n, h = self._read(f, False)
            if not n:
                break
            if codec.last_seq(h) > self.acked.get(h[codec.H_STREAM], 0):
                self._head_id = (h[codec.H_STREAM], h[codec.H_SEQ])
                break
            self.head += _FRAME + n
            self.head_count += 1
        if self.head - self._saved_head >= _HEAD_SAVE_BYTES:
            self._save_state()  # acks and head survive a reboot without a rewrite per ack

    def ack(self, stream, hwm):
        """The cloud holds every row of `stream` up to seq hwm. The file is emptied once
        everything is acknowledged, and rewritten only when it is three-quarters full and a
        quarter of it is acknowledged, so flash is not worn by a rewrite per ack."""
        if hwm <= self.acked.get(stream, 0):
            return
        self.acked[stream] = hwm
        self._stale = True
        if self.all_acked():
            # The state first (head at 0, every ack), then the file: a power cut in between
            # leaves a state that is right for either.
            self._reset_head()
            self.size = 0
            self.count = 0
            self._save_state()
            try:
                os.remove(self.path)
            except OSError:
                pass
        elif self.size > self.capacity * 3 // 4 and self.head >= self.capacity // 4:
            self.compact()  # (the head moves on in pending(), once per pass, not per ack)

    def _reset_head(self):
        self.head = 0
        self.head_count = 0
        self._head_id = (0, 0)
        self._stale = False
        self._cur = 0
        self._need = {}

    def all_acked(self):
        for stream in self.last_seq:
            if self.last_seq[stream] > self.acked.get(stream, 0):
                return False
        return True

    def unacked(self):
        """How many records still wait for the cloud."""
        count = 0
        f = self._open(self.head)
        if f is None:
            return 0
        with f:
            while True:
                n, h = self._read(f)
                if not n:
                    return count
                if self._unsent(h, None):
                    count += 1

    def _note_dropped(self, stream, first, rows):
        """Remember a dropped record's seq range (merging neighbours) and count its rows."""
        self.drops[stream] = self.drops.get(stream, 0) + rows
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
        fit, drop the oldest unprotected records too, counting them per stream. Reads the
        records after the head once (twice when something may have to be dropped); nothing
        is held in RAM but one record."""
        if self._stale:
            f = self._open(self.head)
            if f is not None:
                with f:
                    self._advance_head(f)
        excess = 0
        if need:
            total, droppable = self._measure()
            excess = total + need - self.capacity
            if excess > droppable:
                raise OutboxFull("the outbox is full of records that may not be dropped")
        count = 0
        total = 0
        first = (0, 0)
        src = self._open(self.head)
        with open(self.tmp, "wb") as dst:
            if src is not None:
                with src:
                    while True:
                        n, h = self._read(src, not need)  # checked by _measure when need
                        if not n:
                            break
                        if not self._unsent(h, None):
                            continue
                        s = h[codec.H_STREAM]
                        if excess > 0 and s not in self.protected:
                            excess -= _FRAME + n
                            self._note_dropped(s, h[codec.H_SEQ], h[codec.H_COUNT])
                            continue
                        if not count:
                            first = (s, h[codec.H_SEQ])
                        dst.write(self._frame)
                        dst.write(self._mv[:n])
                        count += 1
                        total += _FRAME + n
        # The state (drops, head at 0) before the swap: a power cut in between leaves the old
        # file, which the state's head no longer names, so it is scanned from its start.
        self._reset_head()
        self._head_id = first
        self._save_state()
        os.rename(self.tmp, self.path)
        self.size = total
        self.count = count

    def _measure(self):
        """(bytes of unacknowledged records, bytes of those that may be dropped) after the
        head, every record checked by its CRC."""
        total = 0
        droppable = 0
        f = self._open(self.head)
        if f is None:
            return 0, 0
        with f:
            while True:
                n, h = self._read(f)
                if not n:
                    return total, droppable
                if self._unsent(h, None):
                    total += _FRAME + n
                    if h[codec.H_STREAM] not in self.protected:
                        droppable += _FRAME + n


def _entry(body, kind, stream, value):
    body.append(kind)
    body.append(stream)
    body.extend(value.to_bytes(4, "little"))
