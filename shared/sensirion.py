# Sensirion sensor framing (SHT4x, SCD4x) shared by the clock's and the edge's I2C drivers:
# every 16-bit word on the bus is followed by its CRC-8.


def crc8(data):
    """Sensirion CRC-8 (polynomial 0x31, initial value 0xFF, no reflection) of the bytes."""
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc
