"""1-bit framebuffers to PNG and back, with the standard library only (zlib, struct)."""

import struct
import zlib


def _chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def rows_from_vlsb(buf, width, height, ink=1):
    """Rows of 0/1 pixels (1 = dark) from a MONO_VLSB buffer where `ink` marks dark pixels."""
    rows = []
    for y in range(height):
        base = (y >> 3) * width
        bit = y & 7
        rows.append([1 if ((buf[base + x] >> bit) & 1) == ink else 0 for x in range(width)])
    return rows


def encode(rows):
    """PNG bytes (1-bit grayscale, black = dark) of rows of 0/1 pixels."""
    height = len(rows)
    width = len(rows[0]) if rows else 0
    raw = bytearray()
    for row in rows:
        raw.append(0)  # filter: none
        for i in range(0, width, 8):
            b = 0
            for j in range(8):
                if i + j < width and not row[i + j]:
                    b |= 0x80 >> j  # 1 = white in grayscale
            raw.append(b)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + _chunk(b"IEND", b""))


def decode(data):
    """Rows of 0/1 pixels (1 = dark) of a PNG written by encode()."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos = 8
    idat = b""
    width = height = 0
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            if depth != 1 or ctype != 0:
                raise ValueError("only 1-bit grayscale PNGs are read")
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = (width + 7) // 8
    rows = []
    for y in range(height):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        if line[0] != 0:
            raise ValueError("only unfiltered PNG rows are read")
        rows.append([0 if (line[1 + x // 8] >> (7 - x % 8)) & 1 else 1 for x in range(width)])
    return rows


def write(path, buf, width, height, ink=1):
    with open(path, "wb") as f:
        f.write(encode(rows_from_vlsb(buf, width, height, ink)))
