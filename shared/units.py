# Glucose units, thresholds and trend directions shared by clock, edge and cloud.
# mg/dL internally; mmol/L only for display, when the user chooses it.

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


MGDL = "mg/dL"
MMOLL = "mmol/L"
MGDL_PER_MMOLL = 18.016  # mmol/L = mg/dL / 18.016 (glucose: 180.16 g/mol)

# Consensus bands (Battelino et al., Diabetes Care 2019), mg/dL.
VERY_LOW = const(54)  # level 2 hypoglycemia below this
LOW = const(70)  # level 1 hypoglycemia below this; lower end of time in range
HIGH = const(180)  # upper end of time in range
VERY_HIGH = const(250)  # level 2 hyperglycemia above this
BAND_NAMES = ("very low", "low", "in range", "high", "very high")

# Nightscout: sgv values below 39 are sensor error codes, never glucose; 39 means "LOW" (<40).
SGV_MIN_VALID = const(39)
SGV_MAX_SHOWN = const(400)  # a sensor reads up to 400 mg/dL; above it shows HIGH
# Dexcom special values as Nightscout names them.
SENSOR_ERRORS = {
    0: "sensor error",
    1: "sensor not active",
    2: "minimal deviation",
    3: "no antenna",
    5: "sensor not calibrated",
    6: "counts deviation",
    9: "absolute deviation (wait)",
    10: "power deviation",
    12: "bad RF",
}

# A reading is current for 15 minutes; stale warning at 15, urgent at 30 (Nightscout).
STALE_MIN = const(15)
URGENT_STALE_MIN = const(30)

# Nightscout directions with their trend numbers (index = trend number).
DIRECTIONS = (
    "NONE",
    "DoubleUp",
    "SingleUp",
    "FortyFiveUp",
    "Flat",
    "FortyFiveDown",
    "SingleDown",
    "DoubleDown",
    "NOT COMPUTABLE",
    "RATE OUT OF RANGE",
)
ARROWS = ("", "^^", "^", "/", "->", "\\", "v", "vv", "?", "!")
TRIPLE_UP = "TripleUp"
TRIPLE_DOWN = "TripleDown"


def to_mmoll(mgdl):
    """mg/dL to mmol/L (unrounded)."""
    return mgdl / MGDL_PER_MMOLL


def from_mmoll(mmoll):
    """mmol/L to mg/dL, rounded to a whole mg/dL."""
    return int(mmoll * MGDL_PER_MMOLL + 0.5)


def is_sensor_error(sgv):
    """True when an sgv value is a sensor error code rather than glucose."""
    return sgv < SGV_MIN_VALID


def format_glucose(mgdl, unit=MGDL):
    """Display text of a glucose value: "98" in mg/dL, "5.4" in mmol/L, or the error name."""
    if mgdl is None:
        return "---"
    if mgdl < SGV_MIN_VALID:
        return SENSOR_ERRORS.get(int(mgdl), "sensor error %d" % mgdl)
    if mgdl == SGV_MIN_VALID:
        return "LOW"
    if mgdl > SGV_MAX_SHOWN:
        return "HIGH"  # past the sensor's range (401, or a corrupt 999): as a CGM shows it
    if unit == MMOLL:
        return "%.1f" % to_mmoll(mgdl)
    if unit != MGDL:
        raise ValueError("unit must be %r or %r, not %r" % (MGDL, MMOLL, unit))
    return "%d" % int(mgdl + 0.5)


def band(mgdl):
    """Consensus band index 0..4 (very low, low, in range, high, very high) of a reading."""
    if mgdl < VERY_LOW:
        return 0
    if mgdl < LOW:
        return 1
    if mgdl <= HIGH:
        return 2
    if mgdl <= VERY_HIGH:
        return 3
    return 4


def trend(rate_mgdl_min):
    """Nightscout trend number for a rate of change in mg/dL per minute.

    Dexcom's arrow bands: flat under 1, 45 degrees 1-2, single 2-3, double over 3
    mg/dL/min; None (no two readings) is NOT COMPUTABLE.
    """
    if rate_mgdl_min is None:
        return 8
    r = rate_mgdl_min
    if r > 3:
        return 1
    if r > 2:
        return 2
    if r > 1:
        return 3
    if r >= -1:
        return 4
    if r >= -2:
        return 5
    if r >= -3:
        return 6
    return 7


def direction(rate_mgdl_min):
    """Nightscout direction name for a rate of change in mg/dL per minute."""
    return DIRECTIONS[trend(rate_mgdl_min)]


def trend_of(direction_name):
    """Trend number of a Nightscout direction name; NONE (0) if unknown."""
    for i in range(len(DIRECTIONS)):
        if DIRECTIONS[i] == direction_name:
            return i
    if direction_name == TRIPLE_UP:
        return 1
    if direction_name == TRIPLE_DOWN:
        return 7
    return 0
