"""Per-patient report settings (time zone, targets preset, report length), per-user glucose
units, and the fused-night cache that is recomputed when late data arrives (migration 6)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nightlink.cloud import fusion, zones
from nightlink.cloud.store import Store, TenantStore
from nightlink.nights import Sleep, boundary_of, night_ending_on, parse_schedule, sleep_span
from nightlink.nightscout.times import zone_named
from nightlink.shared import lowrisk, units
from nightlink.shared.epoch import EPOCH_S

# Targets per the International Consensus on Time in Range (Battelino et al., Diabetes Care
# 2019): share of readings (%) per band, "<" a ceiling and ">" a floor. in_range, low_total
# (below the range) and high_total (above it) use the preset's range; very_low is < 54 and
# very_high > 250 mg/dL. Pregnancy (type 1) uses its own range 63-140 mg/dL.
PRESETS = {
    "standard": {
        "label": "Most adults with type 1 or type 2 diabetes",
        "range": (70, 180),
        "targets": {"in_range": (">", 70), "low_total": ("<", 4), "very_low": ("<", 1),
                    "high_total": ("<", 25), "very_high": ("<", 5)},
    },
    "older": {
        "label": "Older or high-risk adults",
        "range": (70, 180),
        "targets": {"in_range": (">", 50), "low_total": ("<", 1), "very_high": ("<", 10)},
    },
    "pregnancy": {
        "label": "Pregnancy (type 1 diabetes)",
        "range": (63, 140),
        "targets": {"in_range": (">", 70), "low_total": ("<", 4), "very_low": ("<", 1),
                    "high_total": ("<", 25)},
    },
}
UNITS = (units.MGDL, units.MMOLL)
# Where a night without a schedule meets one with (PatientSettings.window_of): its sleep taken
# as 22:00-07:00.
NOMINAL_SLEEP = (22 * 60, 7 * 60)
MAX_REPORT_DAYS = 90


class SettingsError(ValueError):
    """A setting that cannot be used; the message is the sentence to show."""


@dataclass(frozen=True)
class PatientSettings:
    # a ZoneInfo, or (tz_source "edge", the node having moved) a zones.ZoneHistory: each
    # moment in the zone the node was in then; `.key` names the current zone
    tz: tzinfo
    targets: str
    report_days: int
    # where the zone comes from: "set" (the patient's settings), "edge" (what the bedside
    # node reported, until someone sets it), "profile" (the Nightscout profile's, without
    # either), "default" (UTC: none of them)
    tz_source: str = "set"
    # false predicted-low alarms a week the person accepts; None: the model's default
    # (cloud/alert_calibration.py calibrates the threshold to it without a bedside node)
    alarm_budget: float | None = None
    # the sleep schedule the bedside node reported ("08:00-16:00")
    schedule: str | None = None
    # the schedules it reported before, for the nights slept by them (shift work): ((since
    # Unix s, schedule), ...), oldest first (the first since forever), the last `schedule`;
    # empty: `schedule` for every night
    schedules: tuple = ()

    @property
    def sleep(self) -> Sleep | None:
        """(bedtime, wake) minutes of the local day, None without a schedule."""
        return parse_schedule(self.schedule)

    def sleep_of(self, night: str) -> Sleep | None:
        """The schedule a night was slept by: the one the node reported at the middle of
        that night's sleep by it (a night sleeper's without one: 03:00 after the night's
        evening). A shift worker's day sleeps before a change to nights stay whole, windowed
        by the day schedule, not cut at noon."""
        if not self.schedules:
            return self.sleep
        for i in range(len(self.schedules) - 1, -1, -1):
            since, text = self.schedules[i]
            until = self.schedules[i + 1][0] if i + 1 < len(self.schedules) else float("inf")
            sleep = parse_schedule(text)
            if sleep is None:
                d = date.fromisoformat(night) + timedelta(days=1)
                middle = datetime.combine(d, time(3), self.tz).timestamp()
            else:
                middle = sum(sleep_span(night, sleep, self.tz)) / 2
            if since <= middle < until:
                return sleep
        return self.sleep

    def nights_ending_on(self, day: str) -> list[str]:
        """The nights whose sleep ends on local date `day` (nights.night_ending_on), each by
        the schedule it was slept by: one, or two on the day a change from nights to days
        takes effect (the last night's sleep and the first day sleep)."""
        if not self.schedules:
            return [night_ending_on(day, self.sleep)]
        before = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
        return [n for n in (before, day) if night_ending_on(day, self.sleep_of(n)) == n]

    def night_ending_on(self, day: str) -> str:
        """The last night whose sleep ends on `day` (the night before, without one)."""
        found = self.nights_ending_on(day)
        return found[-1] if found else (date.fromisoformat(day) - timedelta(days=1)).isoformat()

    def window_of(self, night: str) -> tuple[int, int] | None:
        """[first, end) epochs of a night next to a change of schedule: it meets the night
        before and the night after halfway from one's wake time to the other's bedtime, so
        the two schedules' windows neither overlap (a sleep counted twice) nor leave hours
        between them. None: the night's own window (fusion.night_window)."""
        if not self.schedules:
            return None
        sleep = self.sleep_of(night)
        d = date.fromisoformat(night)
        prev, nxt = ((d + timedelta(days=k)).isoformat() for k in (-1, 1))
        before, after = self.sleep_of(prev), self.sleep_of(nxt)
        if before == sleep and after == sleep:
            return None
        a, b = fusion.night_window(night, self.tz, boundary_of(sleep))
        if before != sleep:
            a = self._meet(prev, before, night, sleep)
        if after != sleep:
            b = self._meet(night, sleep, nxt, after)
        return a, max(a, b)

    def _meet(self, first: str, slept: Sleep | None, second: str, then: Sleep | None) -> int:
        end = sleep_span(first, slept or NOMINAL_SLEEP, self.tz)[1]
        start = sleep_span(second, then or NOMINAL_SLEEP, self.tz)[0]
        return int((end + start) / 2) // EPOCH_S

    @property
    def boundary(self) -> int:
        """Where one night ends and the next begins, minutes of the local day: noon, unless
        the schedule holds noon (a day sleeper's; shared.epoch.night_boundary)."""
        return boundary_of(self.sleep)

    @property
    def preset(self) -> dict:
        return PRESETS[self.targets]


def zone(name: str) -> ZoneInfo:
    try:
        return zone_named(name)  # not "localtime", which would be this server's
    except ZoneInfoNotFoundError:
        raise SettingsError(f"{name!r} is not a time zone; use an IANA name such as "
                            "Europe/Berlin.") from None


def patient_settings(data: TenantStore) -> PatientSettings:
    """The patient's settings; the zone is the patient's own when set, else the one the
    bedside node reports, else the Nightscout profile's, else UTC (`tz_source` says which);
    the nights' boundary follows the sleep schedule the bedside node reports."""
    current = data.reported_schedule()
    held = zones.segments([(ms / 1000, text) for ms, text in
                           data.reported_changes("night_schedule")], current,
                          key=parse_schedule)
    return replace(_zoned_settings(data), schedule=current,
                   schedules=tuple(held) if len(held) > 1 else ())


def _zoned_settings(data: TenantStore) -> PatientSettings:
    row = data.report_settings()
    targets, days = (row["targets"], int(row["report_days"])) if row else ("standard", 14)
    budget = None if not row or row["alarm_budget"] is None else float(row["alarm_budget"])
    if row and row["tz"]:
        return PatientSettings(zone(row["tz"]), targets, days, alarm_budget=budget)
    for reported in data.reported_timezones():
        try:
            current = zone(reported)
        except SettingsError:  # a zone this server does not know: as if not reported
            continue
        return PatientSettings(_reported_history(data, current), targets, days, "edge", budget)
    named = _profile_zone(data)
    if named is not None:
        return PatientSettings(named, targets, days, "profile", budget)
    return PatientSettings(ZoneInfo("UTC"), targets, days, "default", budget)


def _reported_history(data: TenantStore, current: ZoneInfo) -> tzinfo:
    """The reported zone with the zones the bedside node reported before it, each for the
    time it was in effect (cloud/zones.py): a night recorded before a trip stays in the zone
    it was recorded in. A zone this server does not know is left out (the one before it
    holds on)."""
    changes = []
    for since_ms, name in data.reported_changes("timezone"):
        try:
            changes.append((since_ms / 1000, zone(name)))
        except SettingsError:
            continue
    return zones.history(changes, current)


def _profile_zone(data: TenantStore) -> ZoneInfo | None:
    """The time zone of the newest Nightscout profile's default profile (what AndroidAPS,
    Loop, Trio or the careportal upload), None without one this server knows."""
    rows = data.docs.find("profile", None, count=1)
    doc = rows[0].v1() if rows else None
    store = doc.get("store") if isinstance(doc, dict) else None
    if not isinstance(store, dict):
        return None
    name = doc.get("defaultProfile")
    active = store.get(name) if isinstance(name, str) else None  # a list names nothing
    if not isinstance(active, dict):
        active = next((p for p in store.values() if isinstance(p, dict)), {})
    name = active.get("timezone")
    try:
        return zone(name) if isinstance(name, str) and name else None
    except SettingsError:
        return None


_KEEP = object()


def set_patient_settings(data: TenantStore, *, tz: str | None = None,
                         targets: str | None = None, report_days: int | None = None,
                         alarm_budget=_KEEP) -> None:
    """Change what is given; a zone not given stays as it was (unset: "" in the store, so
    the reported or default zone keeps following the bedside node). `alarm_budget`: false
    predicted-low alarms a week, 0 to lowrisk.MAX_BUDGET_PER_WEEK, or None for the model's
    default; not given, it stays."""
    cur = patient_settings(data)
    row = data.report_settings()
    new_tz = zone(tz).key if tz else (row["tz"] if row else "")
    new_targets = targets or cur.targets
    if new_targets not in PRESETS:
        raise SettingsError(f"targets must be one of {', '.join(PRESETS)}, not {new_targets!r}.")
    days = cur.report_days if report_days is None else int(report_days)
    if not 1 <= days <= MAX_REPORT_DAYS:
        raise SettingsError(f"report_days must lie between 1 and {MAX_REPORT_DAYS}, not {days}.")
    budget = cur.alarm_budget if alarm_budget is _KEEP else alarm_budget
    if budget is not None:
        try:
            budget = float(budget)
        except (TypeError, ValueError):
            budget = float("nan")
        if not 0 <= budget <= lowrisk.MAX_BUDGET_PER_WEEK:  # NaN fails too
            raise SettingsError("false alarms a week must lie between 0 and "
                                f"{lowrisk.MAX_BUDGET_PER_WEEK:g} (two a night), not "
                                f"{alarm_budget!r}.")
    data.set_report_settings(new_tz, new_targets, days, budget)


def user_units(store: Store, user_id: int | None) -> str:
    if user_id is None:
        return units.MGDL
    return store.units(user_id) or units.MGDL


def set_user_units(store: Store, user_id: int, unit: str) -> None:
    if unit not in UNITS:
        raise SettingsError(f"units must be {units.MGDL} or {units.MMOLL}, not {unit!r}.")
    store.set_units(user_id, unit)


# -- the fused-night cache ----------------------------------------------------------------


def fused_night(data: TenantStore, night: str, tz: ZoneInfo, sleep: Sleep | None = None,
                window: tuple[int, int] | None = None) -> dict:
    """The night's fusion, from the cache while nothing it depends on changed; recomputed
    (and the cache replaced) when rows or readings arrived late, or the time zone or a day
    sleeper's schedule changed (`sleep`: the person's schedule, PatientSettings.sleep;
    `window`: PatientSettings.window_of)."""
    st = fusion.stamp(data, night, tz, sleep, window)
    doc = data.cached_fusion(night, st)
    if doc is None:
        doc = fusion.fuse(fusion.load_night(data, night, tz, sleep, window))
        data.cache_fusion(night, st, doc)
    return doc


def patient_night(data: TenantStore, ps: PatientSettings, night: str) -> dict:
    """fused_night of a patient's night, by the schedule and window it was slept by."""
    return fused_night(data, night, ps.tz, ps.sleep_of(night), ps.window_of(night))


def loaded_night(data: TenantStore, ps: PatientSettings, night: str) -> fusion.NightData:
    """fusion.load_night of a patient's night, as patient_night fuses it."""
    return fusion.load_night(data, night, ps.tz, ps.sleep_of(night), ps.window_of(night))


def cache_info(data: TenantStore, night: str) -> dict | None:
    """When the cached fusion of a night was computed (tests and the night page)."""
    return data.fusion_cache_info(night)
