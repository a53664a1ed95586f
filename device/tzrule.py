# POSIX TZ strings ("CET-1CEST,M3.5.0,M10.5.0/3") for the clock: UTC seconds to local time.
# No zone database on the board; Mm.w.d rules only (see CONFIG.md).


class TzError(ValueError):
    pass


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(z):
    """(year, month, day) of days since 1970-01-01."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400
    return (y + 1 if m <= 2 else y, m, d)


def _name(s, i):
    if i < len(s) and s[i] == "<":
        j = s.find(">", i)
        if j < 0:
            raise TzError("unclosed <name>")
        return s[i + 1 : j], j + 1
    j = i
    while j < len(s) and s[j].isalpha():
        j += 1
    if j - i < 3:
        raise TzError("zone names need 3 or more letters")
    return s[i:j], j


def _offset(s, i, max_h=24):
    """[+-]hh[:mm[:ss]] at i -> (seconds, next index); hours up to max_h."""
    sign = 1
    if i < len(s) and s[i] in "+-":
        sign = -1 if s[i] == "-" else 1
        i += 1
    parts = [0, 0, 0]
    k = 0
    start = i
    while k < 3:
        j = i
        while j < len(s) and s[j].isdigit():
            j += 1
        if j == i:
            break
        parts[k] = int(s[i:j])
        k += 1
        i = j
        if i < len(s) and s[i] == ":" and k < 3:
            i += 1
        else:
            break
    if i == start or parts[0] > max_h or parts[1] > 59 or parts[2] > 59:
        raise TzError("bad offset")
    return sign * (parts[0] * 3600 + parts[1] * 60 + parts[2]), i


def _rule(s):
    """'M3.5.0/3' -> (month, week, weekday, seconds after local midnight)."""
    at = 7200
    if "/" in s:
        s, t = s.split("/", 1)
        at, end = _offset(t, 0, 167)  # POSIX allows -167..167 (Israel: M3.4.4/26)
        if end != len(t):
            raise TzError("bad rule time")
    if not s or s[0] != "M":
        raise TzError("only Mm.w.d rules are supported")
    p = s[1:].split(".")
    if len(p) != 3:
        raise TzError("a rule is Mm.w.d")
    m, w, d = int(p[0]), int(p[1]), int(p[2])
    if not (1 <= m <= 12 and 1 <= w <= 5 and 0 <= d <= 6):
        raise TzError("rule out of range")
    return (m, w, d, at)


class Tz:
    """parse once; `local(utc_s)` -> local Unix-like seconds (use its h:m for display)."""

    def __init__(self, spec):
        if not isinstance(spec, str) or not spec:
            raise TzError("empty")
        try:
            self.std, i = _name(spec, 0)
            off, i = _offset(spec, i)
            self.std_off = -off  # POSIX offsets are west of UTC
            self.dst = None
            self.dst_off = self.std_off + 3600
            self.rules = None
            if i < len(spec):
                self.dst, i = _name(spec, i)
                if i < len(spec) and spec[i] != ",":
                    off, i = _offset(spec, i)
                    self.dst_off = -off
                if i >= len(spec) or spec[i] != ",":
                    raise TzError("a DST zone needs ,start,end rules")
                r = spec[i + 1 :].split(",")
                if len(r) != 2:
                    raise TzError("a DST zone needs ,start,end rules")
                self.rules = (_rule(r[0]), _rule(r[1]))
        except (ValueError, IndexError) as e:
            raise TzError(str(e)) from None

    def _transition(self, year, rule, off_before):
        m, w, d, at = rule
        first = days_from_civil(year, m, 1)
        wd = (first + 4) % 7  # 1970-01-01 was a Thursday (4)
        day = 1 + (d - wd) % 7 + (w - 1) * 7
        mdays = days_from_civil(year + (m == 12), m % 12 + 1, 1) - first
        while day > mdays:
            day -= 7
        return (first + day - 1) * 86400 + at - off_before  # in UTC seconds

    def offset(self, utc_s):
        """Seconds east of UTC in force at utc_s."""
        if self.rules is None:
            return self.std_off
        year = civil_from_days(utc_s // 86400)[0]
        start = self._transition(year, self.rules[0], self.std_off)
        end = self._transition(year, self.rules[1], self.dst_off)
        if start < end:
            on = start <= utc_s < end
        else:  # southern hemisphere: DST across the new year
            on = not (end <= utc_s < start)
        return self.dst_off if on else self.std_off

    def local(self, utc_s):
        return utc_s + self.offset(utc_s)

    def hm(self, utc_s):
        """(hour, minute) local."""
        s = self.local(utc_s) % 86400
        return (s // 3600, (s // 60) % 60)
