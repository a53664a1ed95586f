# device/main.py _set_time on the host port: an RTC never set (a power cut) and no NTP answer
# is "time not known", so the loop tries again; an answer sets it. Prints one JSON line.
import json
import sys
import types

calls = []
nt = types.ModuleType("ntptime")


def refuse():
    calls.append("no answer")
    raise OSError(110)


nt.settime = refuse
sys.modules["ntptime"] = nt
from nightlink.device import main  # noqa: E402
from nightlink.shared import epoch  # noqa: E402

epoch.unix_now = lambda: 946684800  # the RTC after a power cut: 2000-01-01
out = [main._set_time()]
nt.settime = lambda: calls.append("set")
out.append(main._set_time())
print(json.dumps({"results": out, "calls": calls}))
