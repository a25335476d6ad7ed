"""PNG in pure Python (zlib and the filters), for the server tests: no Pillow needed.

decode(data) -> Png(width, height, channels, bit_depth, pixels, text) where pixels is a bytes
object of height rows of width * channels samples (8-bit images; 16-bit samples are kept as two
bytes each, big-endian). Colour types: grayscale (0), RGB (2), palette (3, expanded to RGB or
RGBA), grayscale + alpha (4), RGBA (6); bit depths 1, 2, 4, 8 and 16; not interlaced (what cm and
browsers' canvases write). text holds the tEXt chunks (cm writes its `parameters` there).

encode_gray(pixels, width, height) -> bytes: an 8-bit grayscale PNG, for masks and test inputs.
"""
import struct
import zlib
from collections import namedtuple

Png = namedtuple("Png", "width height channels bit_depth pixels text")

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class PngError(ValueError):
    pass


def chunks(data):
    """(type, payload) for each chunk, CRCs checked."""
    if data[:8] != SIGNATURE:
        raise PngError("not a PNG (signature)")
    pos = 8
    while pos < len(data):
        if pos + 8 > len(data):
            raise PngError("truncated chunk header")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + length]
        if len(payload) != length or pos + 12 + length > len(data):
            raise PngError("truncated chunk %r" % kind)
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + payload) & 0xFFFFFFFF != crc:
            raise PngError("bad CRC in chunk %r" % kind)
        yield kind.decode("latin-1"), payload
        pos += 12 + length
        if kind == b"IEND":
            return
    raise PngError("no IEND chunk")


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def unfilter(raw, row_bytes, height, bpp):
    """Reverses the per-row filters (None, Sub, Up, Average, Paeth); bpp: bytes per pixel (>= 1)."""
    if len(raw) < (row_bytes + 1) * height:
        raise PngError("image data too short: %d bytes for %d rows of %d" %
                       (len(raw), height, row_bytes))
    out = bytearray(row_bytes * height)
    prev = bytearray(row_bytes)
    for y in range(height):
        start = y * (row_bytes + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1:start + 1 + row_bytes])
        if kind == 0:
            pass
        elif kind == 1:
            for i in range(bpp, row_bytes):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            for i in range(row_bytes):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif kind == 3:
            for i in range(row_bytes):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(row_bytes):
                left = line[i - bpp] if i >= bpp else 0
                up_left = prev[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, prev[i], up_left)) & 0xFF
        else:
            raise PngError("unknown filter type %d in row %d" % (kind, y))
        out[y * row_bytes:(y + 1) * row_bytes] = line
        prev = line
    return bytes(out)


def decode(data):
    header = None
    palette = None
    transparency = None
    idat = []
    text = {}
    for kind, payload in chunks(bytes(data)):
        if kind == "IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == "PLTE":
            palette = payload
        elif kind == "tRNS":
            transparency = payload
        elif kind == "IDAT":
            idat.append(payload)
        elif kind == "tEXt":
            key, _, value = payload.partition(b"\0")
            text[key.decode("latin-1")] = value.decode("latin-1")
    if header is None:
        raise PngError("no IHDR chunk")
    width, height, depth, colour, compression, filtering, interlace = header
    if colour not in CHANNELS:
        raise PngError("unknown colour type %d" % colour)
    if compression != 0 or filtering != 0:
        raise PngError("unknown compression or filter method")
    if interlace != 0:
        raise PngError("interlaced PNGs are not supported")
    channels = CHANNELS[colour]
    bits = depth * channels
    row_bytes = (width * bits + 7) // 8
    raw = zlib.decompress(b"".join(idat))
    pixels = unfilter(raw, row_bytes, height, max(1, bits // 8))
    if depth < 8:  # unpack to one byte per sample, gray scaled to 0..255 (palette indices kept)
        per_byte = 8 // depth
        mask = (1 << depth) - 1
        unpacked = bytearray()
        for y in range(height):
            row = pixels[y * row_bytes:(y + 1) * row_bytes]
            samples = [(row[i // per_byte] >> (8 - depth * (i % per_byte + 1))) & mask
                       for i in range(width)]
            if colour == 0:
                samples = [s * 255 // mask for s in samples]
            unpacked.extend(samples)
        pixels = bytes(unpacked)
        depth = 8
    if colour == 3:
        if palette is None:
            raise PngError("palette image without PLTE")
        alpha = transparency or b""
        out = bytearray()
        for index in pixels:
            out.extend(palette[3 * index:3 * index + 3])
            if alpha:
                out.append(alpha[index] if index < len(alpha) else 255)
        pixels = bytes(out)
        channels = 4 if alpha else 3
    return Png(width, height, channels, depth, pixels, text)


def encode_gray(pixels, width, height):
    """An 8-bit grayscale PNG of `pixels` (height rows of width bytes)."""
    pixels = bytes(pixels)
    if len(pixels) != width * height:
        raise PngError("%d bytes for %dx%d" % (len(pixels), width, height))
    raw = b"".join(b"\0" + pixels[y * width:(y + 1) * width] for y in range(height))

    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload +
                struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    return (SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def to_gray(png):
    """Gray 8-bit samples of a decoded 8-bit image (RGB by the Rec. 601 weights, alpha dropped)."""
    if png.bit_depth != 8:
        raise PngError("16-bit images are not converted")
    c = png.channels
    if c in (1, 2):
        return bytes(png.pixels[0::c])
    p = png.pixels
    return bytes((299 * p[i] + 587 * p[i + 1] + 114 * p[i + 2] + 500) // 1000
                 for i in range(0, len(p), c))


if __name__ == "__main__":
    import sys
    for path in sys.argv[1:]:
        with open(path, "rb") as f:
            img = decode(f.read())
        print(path, "%dx%d" % (img.width, img.height), "channels", img.channels,
              "depth", img.bit_depth, img.text)
