# The api-secret header of Nightscout: uploaders and readers send the SHA-1 hex digest of the
# site's secret (or of an access token), never the secret itself. One function for the clock,
# the edge and the cloud, so what a client sends and what a server checks cannot drift apart.

import binascii

try:
    from hashlib import sha1 as _sha1
except ImportError:  # a MicroPython build without SHA-1 in hashlib (the WebAssembly port)
    _sha1 = None


def _sha1_digest(data):
    """SHA-1 (FIPS 180-4) in plain Python, for builds whose hashlib lacks it."""
    h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]
    n = len(data)
    data = bytes(data) + b"\x80" + b"\x00" * ((55 - n) % 64) + (n * 8).to_bytes(8, "big")
    for off in range(0, len(data), 64):
        w = [int.from_bytes(data[off + 4 * i:off + 4 * i + 4], "big") for i in range(16)]
        for i in range(16, 80):
            x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]
            w.append(((x << 1) | (x >> 31)) & 0xFFFFFFFF)
        a, b, c, d, e = h
        for i in range(80):
            if i < 20:
                f, k = (b & c) | (~b & d), 0x5A827999
            elif i < 40:
                f, k = b ^ c ^ d, 0x6ED9EBA1
            elif i < 60:
                f, k = (b & c) | (b & d) | (c & d), 0x8F1BBCDC
            else:
                f, k = b ^ c ^ d, 0xCA62C1D6
            t = (((a << 5) | (a >> 27)) + f + e + k + w[i]) & 0xFFFFFFFF
            a, b, c, d, e = t, a, ((b << 30) | (b >> 2)) & 0xFFFFFFFF, c, d
        h = [(x + y) & 0xFFFFFFFF for x, y in zip(h, (a, b, c, d, e))]
    return b"".join(x.to_bytes(4, "big") for x in h)


def api_secret_hash(secret):
    """The api-secret header value for a secret or token: its SHA-1, 40 lowercase hex digits."""
    data = secret.encode()
    digest = _sha1(data).digest() if _sha1 is not None else _sha1_digest(data)
    return binascii.hexlify(digest).decode()
