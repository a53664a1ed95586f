# The clock's flash outbox, metered: what draining and filling it costs in record decodes, CRC
# checks, bytes read and written, file opens, rewrites and state writes. Runs under MicroPython
# (copied to /lib/outbox_meter.py by `nightlink bench clock-outbox` and the outbox tests) and
# under CPython. install() wraps the codec and the outbox module's file access; count holds
# the totals since the last reset().
import os

from nightlink.device import outbox as outbox_mod
from nightlink.shared import codec

count = {"decodes": 0, "crc_checks": 0, "read_bytes": 0, "write_bytes": 0, "opens": 0,
         "file_rewrites": 0, "state_writes": 0}

_decode = codec.decode
_crc32 = codec.crc32


def _counted_decode(*a):
    count["decodes"] += 1
    return _decode(*a)


def _counted_crc32(data, crc=0):
    count["crc_checks"] += 1
    return _crc32(data, crc)


class _File:
    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.f.close()

    def close(self):
        self.f.close()

    def read(self, n=-1):
        d = self.f.read(n)
        count["read_bytes"] += len(d)
        return d

    def readinto(self, b):
        n = self.f.readinto(b)
        count["read_bytes"] += n or 0
        return n

    def write(self, b):
        n = self.f.write(b)
        count["write_bytes"] += n
        return n

    def seek(self, off, whence=0):
        return self.f.seek(off, whence)

    def tell(self):
        return self.f.tell()

    def flush(self):
        self.f.flush()


def _open(path, mode="r"):
    count["opens"] += 1
    return _File(open(path, mode))


class _Os:
    def rename(self, a, b):
        if b.endswith(".state"):
            count["state_writes"] += 1
        else:
            count["file_rewrites"] += 1
        os.rename(a, b)

    def remove(self, p):
        os.remove(p)

    def stat(self, p):
        return os.stat(p)




def reset():
    for k in count:
        count[k] = 0


def install():
    codec.decode = _counted_decode
    codec.crc32 = _counted_crc32
    outbox_mod.open = _open
    outbox_mod.os = _Os()
