# Clinical classes shared by the edge, the cloud and the clock.
# AHI severity per AASM: < 5 normal, 5-15 mild, 15-30 moderate, >= 30 severe.


def ahi_severity(ahi):
    """Severity class of an apnea-hypopnea index (events per hour of sleep); None for None."""
    if ahi is None:
        return None
    if ahi < 5:
        return "normal"
    if ahi < 15:
        return "mild"
    if ahi < 30:
        return "moderate"
    return "severe"


# Audio screening thresholds, the same on the edge (night summary) and in the cloud (fusion):
# an epoch whose low-band energy share exceeds SNORE_RATIO counts as snoring; a breathing
# pause of APNEA_SILENCE_S seconds or more is an apnea candidate (AASM: >= 10 s).
SNORE_RATIO = 0.4
APNEA_SILENCE_S = 10.0
