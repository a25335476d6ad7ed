"""tests/server/png.py against PNGs written here with each filter, colour type and bit depth."""
import os
import random
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import png  # noqa: E402

import pytest  # noqa: E402


def filtered(rows, bpp, kind):
    """The rows filtered with one filter type (the encoder's side of png.unfilter)."""
    out = b""
    prev = bytes(len(rows[0]))
    for row in rows:
        line = bytearray()
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            predictor = [0, a, b, (a + b) >> 1, png._paeth(a, b, c)][kind]
            line.append((x - predictor) & 0xFF)
        out += bytes([kind]) + bytes(line)
        prev = row
    return out


def write(width, height, depth, colour, raw, extra=b""):
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload +
                struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    return (png.SIGNATURE +
            chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)) +
            extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind", range(5))
@pytest.mark.parametrize("colour,channels", [(0, 1), (2, 3), (4, 2), (6, 4)])
def test_filters_and_colour_types(kind, colour, channels):
    rng = random.Random(kind * 10 + colour)
    width, height = 7, 5
    rows = [bytes(rng.randrange(256) for _ in range(width * channels)) for _ in range(height)]
    img = png.decode(write(width, height, 8, colour, filtered(rows, channels, kind)))
    assert (img.width, img.height, img.channels, img.bit_depth) == (width, height, channels, 8)
    assert img.pixels == b"".join(rows)


def test_low_bit_depth_gray_and_palette():
    # 1-bit gray, 3 pixels a row: 1 0 1 then 0 1 1.
    raw = b"\0" + bytes([0b10100000]) + b"\0" + bytes([0b01100000])
    img = png.decode(write(3, 2, 1, 0, raw))
    assert img.pixels == bytes([255, 0, 255, 0, 255, 255])
    # 2-bit palette, indices 0 then 1; tRNS gives entry 0 alpha 0x80 (entry 1: opaque).
    plte = bytes([10, 20, 30, 40, 50, 60])
    extra = (struct.pack(">I", 6) + b"PLTE" + plte + struct.pack(">I", zlib.crc32(b"PLTE" + plte)) +
             struct.pack(">I", 1) + b"tRNS\x80" + struct.pack(">I", zlib.crc32(b"tRNS\x80")))
    img = png.decode(write(2, 1, 2, 3, b"\0" + bytes([0b00010000]), extra))
    assert img.channels == 4 and img.pixels == bytes([10, 20, 30, 0x80, 40, 50, 60, 255])


def test_encode_gray_round_trip_and_text():
    pixels = bytes(range(256)) * 3
    data = png.encode_gray(pixels, 32, 24)
    img = png.decode(data)
    assert (img.width, img.height, img.channels) == (32, 24, 1) and img.pixels == pixels
    assert png.to_gray(img) == pixels


def test_corrupt_files_are_refused():
    data = bytearray(png.encode_gray(bytes(4), 2, 2))
    with pytest.raises(png.PngError):
        png.decode(b"GIF89a" + bytes(data[6:]))
    data[20] ^= 1  # inside IHDR: its CRC no longer matches
    with pytest.raises(png.PngError):
        png.decode(bytes(data))
