"""Host-port stand-in for MicroPython's `framebuf`: the MONO_VLSB / MONO_HLSB formats and the
drawing calls the clock uses (fill, pixel, hline, vline, line, rect, fill_rect, blit with a
key), bit-for-bit like the C module, so a screen rendered on CPython equals one rendered by
real MicroPython (tests/device/test_screens.py compares both with the committed PNGs).
`text()` (the built-in 8x8 font) is not provided: the clock draws only font-to-py fonts."""

MONO_VLSB = 0
MONO_HLSB = 3
MONO_HMSB = 4


class FrameBuffer:
    def __init__(self, buf, width, height, fmt, stride=None):
        if fmt not in (MONO_VLSB, MONO_HLSB, MONO_HMSB):
            raise ValueError("invalid format")
        self.buf = buf
        self.width = width
        self.height = height
        self.format = fmt
        self.stride = width if stride is None else stride
        if fmt != MONO_VLSB:
            self.stride = (self.stride + 7) & ~7

    def _index(self, x, y):
        if self.format == MONO_VLSB:
            return (y >> 3) * self.stride + x, y & 7
        i = (x + y * self.stride) >> 3
        return i, (7 - (x & 7)) if self.format == MONO_HLSB else (x & 7)

    def _set(self, x, y, c):
        i, b = self._index(x, y)
        if c:
            self.buf[i] |= 1 << b
        else:
            self.buf[i] &= ~(1 << b) & 0xFF

    def _get(self, x, y):
        i, b = self._index(x, y)
        return (self.buf[i] >> b) & 1

    def pixel(self, x, y, c=None):
        if not (0 <= x < self.width and 0 <= y < self.height):
            return None
        if c is None:
            return self._get(x, y)
        self._set(x, y, c)
        return None

    def fill_rect(self, x, y, w, h, c):
        if h < 1 or w < 1 or x + w <= 0 or y + h <= 0 or y >= self.height or x >= self.width:
            return
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, self.width), min(y + h, self.height)
        for yy in range(y0, y1):
            for xx in range(x0, x1):
                self._set(xx, yy, c)

    def fill(self, c):
        v = 0xFF if c else 0
        for i in range(len(self.buf)):
            self.buf[i] = v

    def hline(self, x, y, w, c):
        self.fill_rect(x, y, w, 1, c)

    def vline(self, x, y, h, c):
        self.fill_rect(x, y, 1, h, c)

    def rect(self, x, y, w, h, c, f=False):
        if f:
            self.fill_rect(x, y, w, h, c)
            return
        self.fill_rect(x, y, w, 1, c)
        self.fill_rect(x, y + h - 1, w, 1, c)
        self.fill_rect(x, y, 1, h, c)
        self.fill_rect(x + w - 1, y, 1, h, c)

    def line(self, x1, y1, x2, y2, c):
        # Bresenham exactly as extmod/modframebuf.c draws it (steep swap, end point included).
        dx = x2 - x1
        if dx > 0:
            sx = 1
        else:
            dx = -dx
            sx = -1
        dy = y2 - y1
        if dy > 0:
            sy = 1
        else:
            dy = -dy
            sy = -1
        steep = dy > dx
        if steep:
            x1, y1 = y1, x1
            dx, dy = dy, dx
            sx, sy = sy, sx
        e = 2 * dy - dx
        for _ in range(dx):
            if steep:
                if 0 <= y1 < self.width and 0 <= x1 < self.height:
                    self._set(y1, x1, c)
            elif 0 <= x1 < self.width and 0 <= y1 < self.height:
                self._set(x1, y1, c)
            while e >= 0:
                y1 += sy
                e -= 2 * dx
            x1 += sx
            e += 2 * dy
        if 0 <= x2 < self.width and 0 <= y2 < self.height:
            self._set(x2, y2, c)

    def blit(self, src, x, y, key=-1, palette=None):
        if palette is not None:
            raise NotImplementedError("blit palettes are not used by the clock")
        if (x >= self.width or y >= self.height or -x >= src.width or -y >= src.height):
            return
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = max(0, -x), max(0, -y)
        x0end = min(self.width, x + src.width)
        y0end = min(self.height, y + src.height)
        for cy in range(y0, y0end):
            cx1 = x1
            for cx0 in range(x0, x0end):
                col = src._get(cx1, y1)
                if col != key:
                    self._set(cx0, cy, col)
                cx1 += 1
            y1 += 1
