# Binary record codec for per-epoch feature vectors (layout in WIRE.md beside this file).
# Runs unchanged under CPython and MicroPython; no third-party imports.

import struct

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


from nightlink.shared import features

try:
    from binascii import crc32 as _crc32
except ImportError:  # a MicroPython build without binascii.crc32
    _crc32 = None

try:
    import zlib as _zlib  # noqa: TID251 - CPython; MicroPython falls back to deflate below

    if not hasattr(_zlib, "decompressobj"):  # MicroPython's reduced zlib: use deflate
        _zlib = None
except ImportError:  # MicroPython: the deflate module, where the build has it
    _zlib = None
try:
    import io as _io

    import deflate as _deflate
except ImportError:
    _deflate = None

VERSION = const(1)
HEADER_SIZE = const(24)
CRC_SIZE = const(4)
DEVICE_ID_SIZE = const(6)
MAX_COUNT = const(2880)  # one day of 30-s epochs per record at most

# Flag bits in the record header.
FLAG_LIVE = const(0x01)  # produced live, not backfill or replay
_KNOWN_FLAGS = const(0x01)

BATCH_MAGIC = b"NB"
BATCH_VERSION = const(1)
BATCH_HEADER_SIZE = const(6)
MAX_BATCH_RECORDS = const(1024)
MAX_BATCH_BYTES = const(4194304)  # 4 MiB of records, compressed or not
BATCH_ZLIB = const(0x01)  # batch flag: the records part is a zlib stream
# Epoch rows one message may carry, over all its records: the cloud stores a message in one
# go, so this bounds how long one device's message keeps every other one waiting (WIRE.md).
MAX_MESSAGE_ROWS = const(8192)

# version u8, stream u8, flags u8, nfeat u8, device 6s, boot u32, seq u32, epoch u32, count u16
_HEADER = "<BBBB6sIIIH"
# Positions of the fields in the tuple peek_header returns (the header's order on the wire).
H_VERSION = const(0)
H_STREAM = const(1)
H_FLAGS = const(2)
H_NFEAT = const(3)
H_DEVICE = const(4)
H_BOOT = const(5)
H_SEQ = const(6)
H_EPOCH = const(7)
H_COUNT = const(8)
_BATCH_HEADER = "<2sBBH"


class WireError(ValueError):
    """A buffer that is not a valid Nightlink record or batch."""


class VersionError(WireError):
    """The format version is not one this build reads."""


class CrcError(WireError):
    """The CRC32 does not match: the bytes were damaged on the way."""


class TruncatedError(WireError):
    """The buffer ends before the record or batch does."""


class RangeError(WireError):
    """A value lies outside its feature's valid range."""


class StreamError(WireError):
    """The stream id or its feature layout is unknown to this build."""


def crc32(data, crc=0):
    """CRC-32 (IEEE 802.3, as zlib) of data, continuing from crc."""
    if _crc32 is not None:
        return _crc32(data, crc) & 0xFFFFFFFF
    return crc32_soft(data, crc)


def crc32_soft(data, crc=0):
    """Bitwise CRC-32, for builds without binascii.crc32; same result as zlib."""
    crc = crc ^ 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xEDB88320
            else:
                crc >>= 1
    return crc ^ 0xFFFFFFFF


class Record:
    """One stream's consecutive epochs from one device: header fields plus raw rows."""

    def __init__(self, stream, device, boot, seq, epoch, rows, flags=0, nfeat=-1):
        self.stream = stream
        self.device = device  # 6 bytes
        self.boot = boot
        self.seq = seq
        self.epoch = epoch  # index of the first epoch on the 30-s grid
        self.rows = rows  # one tuple of raw ints per epoch, sentinels for missing
        self.flags = flags
        self.nfeat = len(features.features(stream)) if nfeat < 0 else nfeat

    @property
    def count(self):
        return len(self.rows)

    def values(self):
        """Rows as physical values: a list per epoch, None where the feature was missing."""
        feats = features.features(self.stream)
        out = []
        bounds = features.bounds(self.stream)
        for row in self.rows:
            vals = []
            for i in range(len(feats)):
                if row[i] == bounds[i][0]:
                    vals.append(None)
                else:
                    vals.append(features.dequantize(feats[i], row[i]))
            out.append(vals)
        return out

    def __eq__(self, other):
        return (
            isinstance(other, Record)
            and self.stream == other.stream
            and self.device == other.device
            and self.boot == other.boot
            and self.seq == other.seq
            and self.epoch == other.epoch
            and self.flags == other.flags
            and self.nfeat == other.nfeat
            and [tuple(r) for r in self.rows] == [tuple(r) for r in other.rows]
        )

    def __repr__(self):
        return "Record(stream=%d, seq=%d, epoch=%d, count=%d)" % (
            self.stream,
            self.seq,
            self.epoch,
            len(self.rows),
        )


def quantize_row(stream, values):
    """Raw tuple for one epoch of physical values (None = missing); RangeError if out of range."""
    feats = features.features(stream)
    if not feats:
        raise StreamError("stream id %d is not in the feature registry" % stream)
    if len(values) != len(feats):
        raise StreamError(
            "stream %d takes %d features per epoch, got %d" % (stream, len(feats), len(values))
        )
    raw = []
    for i in range(len(feats)):
        feat = feats[i]
        v = values[i]
        if v is None:
            raw.append(features.MISSING[feat[features.F_TYPE]])
            continue
        if v != v or v < feat[features.F_LO] or v > feat[features.F_HI]:
            raise RangeError(
                "%s = %r is outside its valid range %r..%r %s"
                % (feat[features.F_NAME], v, feat[features.F_LO], feat[features.F_HI], feat[features.F_UNIT])
            )
        raw.append(features.quantize(feat, v))
    return tuple(raw)


def record_size(stream, count, nfeat=-1):
    """Bytes an encoded record of count epochs takes."""
    return HEADER_SIZE + count * struct.calcsize(features.row_format(stream, nfeat)) + CRC_SIZE


def encode_into(buf, offset, rec):
    """Write rec into buf at offset (a preallocated bytearray); return the bytes written."""
    feats = features.features(rec.stream)
    if not feats:
        raise StreamError("stream id %d is not in the feature registry" % rec.stream)
    if rec.nfeat != len(feats):
        raise StreamError("records are encoded with the full feature layout of this build")
    if len(rec.device) != DEVICE_ID_SIZE:
        raise WireError("device id must be %d bytes" % DEVICE_ID_SIZE)
    if not 0 < len(rec.rows) <= MAX_COUNT:
        raise WireError("a record holds 1..%d epochs, not %d" % (MAX_COUNT, len(rec.rows)))
    if rec.flags & ~_KNOWN_FLAGS:
        raise WireError("unknown flag bits 0x%02x" % (rec.flags & ~_KNOWN_FLAGS))
    _check_span(rec.seq, rec.epoch, len(rec.rows))
    fmt = features.row_format(rec.stream)
    step = struct.calcsize(fmt)
    total = HEADER_SIZE + len(rec.rows) * step + CRC_SIZE
    if offset + total > len(buf):
        raise WireError("buffer too small: record needs %d bytes" % total)
    struct.pack_into(
        _HEADER,
        buf,
        offset,
        VERSION,
        rec.stream,
        rec.flags,
        len(feats),
        rec.device,
        rec.boot,
        rec.seq,
        rec.epoch,
        len(rec.rows),
    )
    pos = offset + HEADER_SIZE
    for row in rec.rows:
        _check_raw_row(rec.stream, row, len(feats))
        struct.pack_into(fmt, buf, pos, *row)
        pos += step
    mv = memoryview(buf)
    struct.pack_into("<I", buf, pos, crc32(mv[offset:pos]))
    return total


def encode(rec):
    """Encoded bytes of one record."""
    buf = bytearray(record_size(rec.stream, len(rec.rows)))
    encode_into(buf, 0, rec)
    return bytes(buf)


def _check_raw_row(stream, row, nfeat):
    if len(row) != nfeat:
        raise StreamError("a row has %d values, the layout %d" % (len(row), nfeat))
    bounds = features.bounds(stream)
    for i in range(nfeat):
        missing, lo, hi = bounds[i]
        raw = row[i]
        if raw != missing and (raw < lo or raw > hi):
            feat = features.features(stream)[i]
            raise RangeError(
                "%s raw value %d is outside %d..%d (%r..%r %s)"
                % (feat[features.F_NAME], raw, lo, hi, feat[features.F_LO], feat[features.F_HI], feat[features.F_UNIT])
            )


def peek_header(buf, offset=0):
    """The header of the record starting at offset, read without its rows or CRC: the tuple
    (version, stream, flags, nfeat, device, boot, seq, epoch, count), indexed by H_VERSION ..
    H_COUNT. Raises TruncatedError for a short buffer, VersionError for another format."""
    if len(buf) - offset < HEADER_SIZE:
        raise TruncatedError(
            "record header needs %d bytes, %d left" % (HEADER_SIZE, len(buf) - offset)
        )
    h = struct.unpack_from(_HEADER, buf, offset)
    if h[0] != VERSION:
        raise VersionError("record format version %d, this build reads %d" % (h[0], VERSION))
    return h


def last_seq(header):
    """Sequence number of the last row of a record, from its peek_header tuple."""
    return header[H_SEQ] + header[H_COUNT] - 1


def peek_length(buf, offset=0):
    """Total length of the record starting at offset, from its header alone."""
    h = peek_header(buf, offset)
    return _length(h[H_STREAM], h[H_NFEAT], h[H_COUNT])


def _length(stream, nfeat, count):
    feats = features.features(stream)
    if not feats:
        raise StreamError("stream id %d is not in the feature registry" % stream)
    if nfeat == 0 or nfeat > len(feats):
        raise StreamError(
            "stream %s carries %d features, this build knows %d"
            % (features.stream(stream)[features.S_NAME], nfeat, len(feats))
        )
    if count == 0 or count > MAX_COUNT:
        raise WireError("record epoch count %d is outside 1..%d" % (count, MAX_COUNT))
    return HEADER_SIZE + count * struct.calcsize(features.row_format(stream, nfeat)) + CRC_SIZE


def check(buf, offset=0, length=-1):
    """Check the record filling buf[offset:offset + length] (length: the rest of buf) as
    decode does — header, length, CRC32, flags — without reading its rows; return its header
    (the tuple of peek_header)."""
    h = peek_header(buf, offset)
    total = _length(h[H_STREAM], h[H_NFEAT], h[H_COUNT])
    avail = len(buf) - offset if length < 0 else length
    if avail < total:
        raise TruncatedError("record needs %d bytes, %d present" % (total, avail))
    if avail > total:
        raise WireError("record is %d bytes but %d were given" % (total, avail))
    if offset + total > len(buf):
        raise TruncatedError("record needs %d bytes, the buffer ends first" % total)
    check_crc(buf, offset, total)
    if h[H_FLAGS] & ~_KNOWN_FLAGS:
        raise WireError("unknown flag bits 0x%02x" % (h[H_FLAGS] & ~_KNOWN_FLAGS))
    _check_span(h[H_SEQ], h[H_EPOCH], h[H_COUNT])
    return h


def _check_span(seq, epoch, count):
    """A record's rows number seq, seq + 1, ... and lie in epoch, epoch + 1, ...: all u32."""
    if seq > 0xFFFFFFFF - (count - 1) or epoch > 0xFFFFFFFF - (count - 1):
        raise WireError("record of %d rows from seq %d, epoch %d runs past 2**32 - 1"
                        % (count, seq, epoch))


def decode(buf, offset=0, length=-1):
    """Decode the record filling buf[offset:offset + length] (length: the rest of buf).

    To read a record out of a longer buffer, pass length=peek_length(buf, offset).
    """
    _v, stream, flags, nfeat, device, boot, seq, epoch, count = check(buf, offset, length)
    feats = features.features(stream)
    fmt = features.row_format(stream, nfeat)
    step = struct.calcsize(fmt)
    rows = []
    pos = offset + HEADER_SIZE
    for _ in range(count):
        row = struct.unpack_from(fmt, buf, pos)
        _check_raw_row(stream, row, nfeat)
        if nfeat < len(feats):  # older layout: newer features are missing, not zero
            row = row + tuple(features.MISSING[feats[i][features.F_TYPE]] for i in range(nfeat, len(feats)))
        rows.append(row)
        pos += step
    rec = Record(stream, bytes(device), boot, seq, epoch, rows, flags, len(feats))
    return rec


def check_crc(buf, offset, total):
    """Raise CrcError unless the record's CRC32 (its last 4 of `total` bytes at offset)
    matches its bytes; the rows are not read."""
    end = offset + total - CRC_SIZE
    want = struct.unpack_from("<I", buf, end)[0]
    got = crc32(memoryview(buf)[offset:end])
    if want != got:
        raise CrcError("record CRC32 is %08x, the bytes give %08x" % (want, got))


def split(rec):
    """One record per epoch row: row i of rec is the row with sequence number rec.seq + i."""
    out = []
    for i in range(len(rec.rows)):
        out.append(
            Record(rec.stream, rec.device, rec.boot, rec.seq + i, rec.epoch + i, [rec.rows[i]],
                   rec.flags, rec.nfeat)
        )
    return out


def pack_runs(records, max_count=120):
    """Merge records whose rows continue one another (same device, stream, boot and flags,
    next seq and next epoch) into multi-epoch records of at most max_count rows.

    Sequence numbers count rows, so packing changes the bytes on the wire but not the
    identity of any row. Records are taken in the order given.
    """
    out = []
    cur = None
    for rec in records:
        if (
            cur is not None
            and rec.stream == cur.stream
            and rec.device == cur.device
            and rec.boot == cur.boot
            and rec.flags == cur.flags
            and rec.seq == cur.seq + len(cur.rows)
            and rec.epoch == cur.epoch + len(cur.rows)
            and len(cur.rows) + len(rec.rows) <= max_count
        ):
            cur.rows.extend(rec.rows)
            continue
        cur = Record(rec.stream, rec.device, rec.boot, rec.seq, rec.epoch, list(rec.rows),
                     rec.flags, rec.nfeat)
        out.append(cur)
    return out


def encode_batch(records, compress=False):
    """One message holding several records: batch header, then length-prefixed records,
    the records part zlib-compressed when compress is True (backfill)."""
    if not 0 < len(records) <= MAX_BATCH_RECORDS:
        raise WireError("a batch holds 1..%d records, not %d" % (MAX_BATCH_RECORDS, len(records)))
    parts = []
    for rec in records:
        enc = encode(rec)
        parts.append(struct.pack("<I", len(enc)))
        parts.append(enc)
    body = b"".join(parts)
    if len(body) > MAX_BATCH_BYTES:
        raise WireError("a batch holds at most %d bytes of records" % MAX_BATCH_BYTES)
    flags = 0
    if compress:
        body = _compress(body)
        flags = BATCH_ZLIB
    return struct.pack(_BATCH_HEADER, BATCH_MAGIC, BATCH_VERSION, flags, len(records)) + body


def _compress(body):
    if _zlib is not None:
        return _zlib.compress(body, 9)
    if _deflate is not None:
        out = _io.BytesIO()
        try:
            with _deflate.DeflateIO(out, _deflate.ZLIB) as f:
                f.write(body)
        except (OSError, AttributeError):
            raise WireError("this build cannot compress batches") from None
        return out.getvalue()
    raise WireError("this build cannot compress batches")


def _inflate(data):
    """The records part of a compressed batch, at most MAX_BATCH_BYTES long."""
    if _zlib is not None:
        d = _zlib.decompressobj()
        try:
            out = d.decompress(data, MAX_BATCH_BYTES)
        except _zlib.error as exc:
            raise CrcError("compressed batch is damaged (%s)" % exc) from None
        if d.unconsumed_tail:
            raise WireError("compressed batch expands beyond %d bytes" % MAX_BATCH_BYTES)
        if not d.eof or d.unused_data:
            raise TruncatedError("compressed batch is cut short or has bytes after its end")
        return out
    if _deflate is not None:
        try:
            out = _deflate.DeflateIO(_io.BytesIO(data), _deflate.ZLIB).read(MAX_BATCH_BYTES + 1)
        except EOFError:
            raise TruncatedError("compressed batch is cut short") from None
        except (OSError, ValueError) as exc:
            raise CrcError("compressed batch is damaged (%s)" % exc) from None
        if len(out) > MAX_BATCH_BYTES:
            raise WireError("compressed batch expands beyond %d bytes" % MAX_BATCH_BYTES)
        return out
    raise WireError("this build cannot read compressed batches")


def decode_batch(buf):
    """Decode a batch: (records, errors) where errors lists (index, WireError) per bad record.

    A damaged record does not cost the others; a damaged batch header, length
    prefix or compressed body raises, since nothing after it can be trusted.
    """
    if len(buf) < BATCH_HEADER_SIZE:
        raise TruncatedError(
            "batch header needs %d bytes, %d present" % (BATCH_HEADER_SIZE, len(buf))
        )
    magic, version, flags, n = struct.unpack_from(_BATCH_HEADER, buf, 0)
    if magic != BATCH_MAGIC:
        raise WireError("not a Nightlink batch (magic %r)" % (magic,))
    if version != BATCH_VERSION:
        raise VersionError("batch format version %d, this build reads %d" % (version, BATCH_VERSION))
    if flags & ~BATCH_ZLIB:
        raise WireError("unknown batch flag bits 0x%02x" % (flags & ~BATCH_ZLIB))
    if n == 0 or n > MAX_BATCH_RECORDS:
        raise WireError("batch record count %d is outside 1..%d" % (n, MAX_BATCH_RECORDS))
    body = memoryview(buf)[BATCH_HEADER_SIZE:]
    if flags & BATCH_ZLIB:
        body = _inflate(bytes(body))
    records = []
    errors = []
    pos = 0
    for i in range(n):
        if pos + 4 > len(body):
            raise TruncatedError("batch ends before record %d of %d" % (i + 1, n))
        size = struct.unpack_from("<I", body, pos)[0]
        pos += 4
        if pos + size > len(body):
            raise TruncatedError(
                "batch record %d claims %d bytes, %d left" % (i + 1, size, len(body) - pos)
            )
        try:
            records.append(decode(body, pos, size))
        except WireError as exc:
            errors.append((i, exc))
        pos += size
    if pos != len(body):
        raise WireError("batch has %d bytes after its last record" % (len(body) - pos))
    return records, errors


def is_batch(buf):
    """True if buf starts like a batch rather than a single record."""
    return len(buf) >= 2 and bytes(buf[0:2]) == BATCH_MAGIC


def device_id(name):
    """The 6-byte device id for its topic name (12 lowercase hex digits)."""
    if len(name) != 2 * DEVICE_ID_SIZE:
        raise WireError("device name %r is not %d hex digits" % (name, 2 * DEVICE_ID_SIZE))
    out = bytearray(DEVICE_ID_SIZE)
    for i in range(DEVICE_ID_SIZE):
        pair = name[2 * i : 2 * i + 2]
        for ch in pair:
            if ch not in "0123456789abcdef":
                raise WireError("device name %r is not lowercase hex" % (name,))
        out[i] = int(pair, 16)
    return bytes(out)


def device_name(dev):
    """The topic name (12 lowercase hex digits) of a 6-byte device id."""
    return "".join("%02x" % b for b in dev)
