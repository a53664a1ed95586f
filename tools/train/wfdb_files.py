"""PhysioNet's WFDB files as the Apnea-ECG database publishes them, read without the `wfdb`
package: enough to score `eval breathing` on the database's recordings as downloaded.

- `<rec>.hea`: the header; its first line is `name signals frequency[/…] [samples …]`.
- `<rec>.qrs` (beats found by a QRS detector) and `<rec>.apn` (an expert's label at the start
  of each minute: `N` normal, `A` apnea): annotation files in the MIT format, a stream of
  16-bit little-endian words, each a 6-bit annotation code over a 10-bit count of samples
  since the one before; code 59 (SKIP) puts a 32-bit interval in the next two words (high
  word first), 60-62 (NUM, SUB, CHN) set fields without moving in time, 63 (AUX) is followed
  by that many bytes of text (padded to even), and a zero word ends the file.
- `event-2-answers` (with or without `.txt`): the test set's labels, withheld during the 2000
  challenge, one block per recording (its name, then per hour the hour's number and 60
  letters), blocks parted by an empty line.

`convert` writes them as the `<rec>_beats.csv` / `<rec>_apnea_minutes.csv` layout the rest of
the evaluation reads.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from nightlink.errors import NightlinkError

SKIP, NUM, SUB, CHN, AUX = 59, 60, 61, 62, 63
NORMAL, APC = 1, 8  # the codes of N and A in an .apn file
# Annotation codes that mark a beat (normal, bundle branch block, premature, escape, paced,
# fusion, aberrated, ...); the rest (noise, artefact, rhythm changes, comments) are not beats.
BEAT_CODES = frozenset((1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 25, 30, 34, 35, 38))
ANSWERS = ("event-2-answers", "event-2-answers.txt")


def annotations(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(sample number, code) of each annotation of an MIT-format annotation file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NightlinkError(f"Cannot read {path.name}: {exc.strerror or exc}.") from None
    words = np.frombuffer(data[:len(data) // 2 * 2], dtype="<u2")
    samples, codes = [], []
    t, i, n = 0, 0, words.size
    while i < n:
        word = int(words[i])
        code, count = word >> 10, word & 0x3FF
        i += 1
        if code == 0 and count == 0:
            break
        if code == SKIP:
            if i + 2 > n:
                break
            t += (int(words[i]) << 16) | int(words[i + 1])
            i += 2
        elif code == AUX:
            i += (count + 1) // 2
        elif code in (NUM, SUB, CHN):
            continue
        else:
            t += count
            samples.append(t)
            codes.append(code)
    if not samples:
        raise NightlinkError(f"{path.name} holds no annotation (not an MIT-format annotation "
                             "file?).")
    return np.array(samples, dtype=np.int64), np.array(codes, dtype=np.int64)


def frequency(header: Path) -> float:
    """Samples a second, from a WFDB header's first line."""
    try:
        first = next((line for line in header.read_text(errors="replace").splitlines()
                      if line.strip() and not line.startswith("#")), "")
    except OSError as exc:
        raise NightlinkError(f"Cannot read {header.name}: {exc.strerror or exc}.") from None
    fields = first.split()
    try:
        fs = float(fields[2].split("/")[0]) if len(fields) > 2 else 250.0  # WFDB's default
    except ValueError:
        fs = float("nan")
    if not 1 <= fs <= 100_000:
        raise NightlinkError(f"{header.name} names no sampling frequency on its first line "
                             f"({first[:60]!r}).")
    return fs


def answers(folder: Path) -> dict[str, str]:
    """The test set's labels by recording, `N`/`A` per minute, from the answers file if the
    folder holds one."""
    path = next((folder / name for name in ANSWERS if (folder / name).is_file()), None)
    if path is None:
        return {}
    out = {}
    for block in re.split(r"\n[ \t]*\n", path.read_text(errors="replace").replace("\r", "")):
        tokens = block.split()
        if tokens:  # the name, then hours' numbers and their letters (in groups or not)
            out[tokens[0].lower()] = "".join(t for t in tokens[1:] if not t.isdigit()).upper()
    return out


def records(folder: Path) -> list[str]:
    """The recordings of a folder of WFDB files: those with beats (`.qrs`) and a header."""
    return sorted(p.stem for p in folder.glob("*.qrs") if (folder / f"{p.stem}.hea").is_file())


def convert(folder: Path, into: Path, notes: list[str]) -> None:
    """Each recording of `folder` with beats and labels (its `.apn`, or its block of the
    answers file) written to `into` as `<rec>_beats.csv` and `<rec>_apnea_minutes.csv`; one
    without labels, or whose files cannot be read, is named in `notes`."""
    withheld = answers(folder)
    for rec in records(folder):
        try:
            fs = frequency(folder / f"{rec}.hea")
            beats, codes = annotations(folder / f"{rec}.qrs")
            beats = beats[np.isin(codes, list(BEAT_CODES))]
            if (folder / f"{rec}.apn").is_file():
                at, kinds = annotations(folder / f"{rec}.apn")
                minutes = np.rint(at / fs / 60).astype(np.int64)
                letters = {int(m): "A" if k == APC else "N" for m, k in zip(minutes, kinds,
                                                                           strict=True)
                           if k in (NORMAL, APC)}
                labels = [letters.get(m, "?") for m in range(max(letters) + 1)] if letters else []
                if "?" in labels or not labels:
                    raise NightlinkError(f"{rec}.apn has no label for minute "
                                         f"{labels.index('?') if labels else 0}.")
            elif rec.lower() in withheld:
                labels = list(withheld[rec.lower()])
            else:
                notes.append(f"{rec} left out: no {rec}.apn nor a block for it in an "
                             "event-2-answers file.")
                continue
        except NightlinkError as exc:
            notes.append(f"{rec} left out: {exc}")
            continue
        t = beats / fs
        rows = [f"{t[k] / 60:.6f},{t[k] - t[k - 1]:.4f}" for k in range(1, t.size)]
        (into / f"{rec}_beats.csv").write_text("t_min,rr_s\n" + "\n".join(rows) + "\n")
        (into / f"{rec}_apnea_minutes.csv").write_text(
            "minute,apnea\n" + "".join(f"{m},{a}\n" for m, a in enumerate(labels)))
