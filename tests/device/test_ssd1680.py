"""SSD1680 driver: the command stream it sends, replayed into a model of the controller's RAM
addressing (datasheet: data entry mode 0x11, RAM windows 0x44/0x45, counters 0x4E/0x4F), lands
every framebuf pixel on the right gate and source. Also the refresh policy and the annunciator.
The SPI bus and the pins are doubles (tools/device/hostport/machine.py); no panel here."""

import sys

from tests.support.mpy_board import HOSTPORT

_SAVED = list(sys.path)
sys.path.insert(0, str(HOSTPORT))

import board  # noqa: E402

board.install()

import machine  # noqa: E402

from nightlink.device import annunciator, render, ssd1680  # noqa: E402

sys.path[:] = _SAVED  # the board-only names stay out of other tests' way


class Recorder:
    """SPI + D/C double that groups bytes by command the way the controller sees them."""

    def __init__(self):
        self.dc = 0
        self.cmds = []

    def write(self, buf):
        if self.dc == 0:
            for b in bytes(buf):
                self.cmds.append([b, bytearray()])
        else:
            self.cmds[-1][1] += bytes(buf)


def _ram_image(cmds):
    """Model of the SSD1680's BW RAM after the commands: ram[gate][source byte]."""
    ram = [[0] * 16 for _ in range(296)]
    mode = 0x03
    xs, xe, ys, ye = 0, 15, 0, 295
    x = y = 0
    inverse = False
    for c, data in cmds:
        if c == 0x11:
            mode = data[0]
        elif c == 0x44:
            xs, xe = data[0], data[1]
        elif c == 0x45:
            ys, ye = data[0] | (data[1] << 8), data[2] | (data[3] << 8)
        elif c == 0x4E:
            x = data[0]
        elif c == 0x4F:
            y = data[0] | (data[1] << 8)
        elif c == 0x21:
            inverse = bool(data[0] & 0x08)
        elif c == 0x24:
            xinc, yinc, yfirst = mode & 1, mode & 2, mode & 4
            for b in data:
                ram[y][x] = b
                if yfirst:
                    y = y + 1 if yinc else y - 1
                    if y > max(ys, ye) or y < min(ys, ye):
                        y = ys
                        x = x + 1 if xinc else x - 1
                else:
                    x = x + 1 if xinc else x - 1
                    if x > max(xs, xe) or x < min(xs, xe):
                        x = xs
                        y = y + 1 if yinc else y - 1
    return ram, inverse


def test_ssd1680__framebuf_lands_on_the_right_pixels():
    rec = Recorder()
    busy = machine.Pin(4, machine.Pin.IN)
    panel = ssd1680.SSD1680(rec, lambda v: None, lambda v: setattr(rec, "dc", v),
                            machine.Pin(16, machine.Pin.OUT), busy)
    panel.init()
    buf, fb = render.new_buffer()
    v = render.View()
    v.sgv, v.trend, v.delta, v.age_min, v.now_hm = 112, 4, 3, 2, (2, 14)
    render.draw(fb, buf, v)
    panel.show(buf, full=True)
    ram, inverse = _ram_image(rec.cmds)
    assert inverse  # RAM 1 shows as ink, like the renderer's 1
    wrong = 0
    for lx in range(296):  # landscape x is the gate
        for ly in range(128):  # landscape y runs against the source direction
            s = 127 - ly
            bit = (ram[lx][s // 8] >> (7 - s % 8)) & 1
            wrong += bit != fb.pixel(lx, ly)
    assert wrong == 0
    assert sum(map(sum, ram)) > 0
    # the RAM write is the buffer itself: no copy, no rotation on the board
    writes = [d for c, d in rec.cmds if c == 0x24]
    assert writes == [bytearray(buf)]
    upd = [d for c, d in rec.cmds if c == 0x22]
    assert upd == [bytearray((ssd1680.FULL,))]  # a full refresh, as asked


def test_refresh_policy__full_every_n_and_never_unchanged():
    p = ssd1680.RefreshPolicy(60000, full_every=3)
    got = [p.decide(crc, t) for crc, t in
           [(1, 0), (1, 70000), (2, 10000 + 60000), (3, 100000), (3, 200000), (4, 200000),
            (5, 260000), (6, 320000)]]
    assert got == [ssd1680.FULL, None, ssd1680.PARTIAL, None, ssd1680.PARTIAL, None,
                   ssd1680.FULL, ssd1680.PARTIAL]
    assert p.skipped == 2  # changed within the minute of the last refresh: waits


def test_annunciator__patterns_at_pin_level():
    buzz, led = [], []
    a = annunciator.Annunciator(buzz.append, led.append)
    a.set(2, 0)  # warning: three 200 ms beeps every minute
    for t in range(0, 120000, 50):
        a.tick(t)
    assert a.beeps == 6 and led == [1]
    a.set(0, 120000)
    a.tick(120050)
    assert buzz[-1] == 0 and led == [1, 0]
    a.set(4, 200000)  # siren: keeps going
    for t in range(200000, 206000, 50):
        a.tick(t)
    assert a.beeps == 6 + 10
