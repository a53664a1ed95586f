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


# A microphone that recorded no usable sound, judged on a night's audio epoch features the
# same way on the edge (closing a night) and in the cloud (a night without classifier rows):
# DEAD_AUDIO_SHARE of the epochs with audio are digital silence (a muted or unplugged input:
# the peak at the extractor's -120 dBFS floor), one stuck value (a level that never moves,
# with no spread of frequencies), or noise clipped at full scale (gain far too high, a
# shorted input: a 30-s mean at CLIPPED_DBFS or louder).
DEAD_AUDIO_SHARE = 0.9
SILENT_DBFS = -119.5
CLIPPED_DBFS = -1.0
NO_SOUND = "no usable sound"  # how the gap's reason begins


def unusable_audio(epochs):
    """(sentence, gap reason) when 90 % of the epochs in `epochs`, an iterable of
    (loud_mean_dbfs, loud_max_dbfs, flatness) with None or NaN where there was no audio,
    carry no usable sound; else None."""
    n = silent = clipped = 0
    for mean, peak, flat in epochs:
        if mean is None or mean != mean or peak is None or peak != peak:
            continue
        n += 1
        if flat is None or flat != flat:  # a source under 16 kHz has no full-band flatness:
            stuck = peak - mean < 0.25  # one stuck value is the same in every frame
        else:
            stuck = peak - mean < 0.6 and flat < 0.01
        if peak <= SILENT_DBFS or stuck:
            silent += 1
        elif mean >= CLIPPED_DBFS:
            clipped += 1
    if not n or silent + clipped < DEAD_AUDIO_SHARE * n:
        return None
    parts = []
    if silent:
        parts.append("silent (digital silence or one stuck value) in %d" % silent)
    if clipped:
        parts.append("clipped at full scale in %d" % clipped)
    return ("The audio is %s of %d epochs: the microphone recorded no usable sound, so the "
            "night's figures leave audio out." % (" and ".join(parts), n),
            NO_SOUND + ": " + ("silent" if silent >= clipped else "clipped at full scale"))
