"""Regenerate the clock's fonts (device/font_*.py) from DejaVu with font-to-py.

    pip install font-to-py freetype-py
    python tools/device/hostport/make_fonts.py

The generated modules are committed; the tests never regenerate them.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DEJAVU = Path("/usr/share/fonts/truetype/dejavu")
FONTS = (  # module, ttf, height in pixels, charset (None = ASCII 32-126)
    ("font_big", "DejaVuSans-Bold.ttf", 64, "0123456789.-LOWHIG?"),
    ("font_mid", "DejaVuSans-Bold.ttf", 24, None),
    ("font_small", "DejaVuSans.ttf", 14, None),
)
HEADER = "# ruff: noqa: E731, E741\n"


def main():
    exe = Path(sys.executable).with_name("font_to_py")
    for name, ttf, height, charset in FONTS:
        out = ROOT / "device" / (name + ".py")
        cmd = [str(exe), "-x"] + (["-c", charset] if charset else [])
        subprocess.run(cmd + [str(DEJAVU / ttf), str(height), "device/" + name + ".py"],
                       check=True, cwd=ROOT)
        text = out.read_text()
        # The command line inside the file would name this machine's paths: keep it generic.
        cmd_line = "# Cmd: tools/device/hostport/make_fonts.py"
        lines = [ln if not ln.startswith("# Cmd:") else cmd_line for ln in text.splitlines()]
        out.write_text(HEADER + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
