#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpus (corpus/<target>/seed_*): small valid inputs of each
format, so libFuzzer starts from the parsers' deep paths. Standard library only. The JPEG seeds
are not made here (no encoder in Python's standard library): they were written by cm's own
write_jpeg (cm::write_jpeg(path, image, quality) on an 8x8 gray ramp and a 17x5 RGB pattern).
Inputs that once crashed a target go beside the seeds as corpus/<target>/crash_*; keep them."""
import json
import os
import struct
import sys
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def put(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "seed_" + name), "wb") as f:
        f.write(data)


def png(width, height, color_type, depth, rows, text=None):
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff))
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth,
                                                             color_type, 0, 0, 0))
    if color_type == 3:
        out += chunk(b"PLTE", bytes(range(12)))
    for key, value in (text or {}).items():
        out += chunk(b"tEXt", key.encode() + b"\0" + value.encode())
    out += chunk(b"IDAT", zlib.compress(b"".join(b"\0" + r for r in rows)))
    return out + chunk(b"IEND", b"")


def npy(descr, shape, data):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (
        descr, "(%s)" % "".join("%d," % d for d in shape) if shape else "()")
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data


def npz(arrays):
    import io
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        for name, data in arrays:
            z.writestr(name + ".npy", data)
    return buffer.getvalue()


def safetensors(tensors, metadata=None):
    header, blob = {}, b""
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + blob


def pt_checkpoint(numel, size, stride):
    """A torch.save zip holding OrderedDict({"w": tensor}) over one FloatStorage, as protocol-2
    pickle opcodes: GLOBAL, EMPTY_TUPLE, REDUCE, MARK, BINUNICODE, BINPERSID, TUPLE, SETITEMS."""
    def s(text):
        return b"X" + struct.pack("<I", len(text)) + text.encode()

    def g(module, name):
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def ints(values):
        return b"(" + b"".join(b"K" + bytes([v]) for v in values) + b"t"
    p = b"\x80\x02" + g("collections", "OrderedDict") + b")R(" + s("w")
    p += g("torch._utils", "_rebuild_tensor_v2") + b"((" + s("storage") + g("torch", "FloatStorage")
    p += s("0") + s("cpu") + b"K" + bytes([numel]) + b"tQ" + b"K\x00" + ints(size) + ints(stride)
    p += b"\x89" + g("collections", "OrderedDict") + b")Rt" + b"R" + b"u."
    import io
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", p)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", struct.pack("<%df" % numel, *range(numel)))
        z.writestr("archive/version", "3\n")
    return buffer.getvalue()


def main():
    put("png", "gray_4x4.png", png(4, 4, 0, 8, [bytes(range(i, i + 4)) for i in range(4)]))
    put("png", "rgb_3x2_text.png", png(3, 2, 2, 8, [bytes(9), bytes(range(9))],
                                       {"parameters": "seed: 1, steps: 1"}))
    put("png", "rgba_2x2.png", png(2, 2, 6, 8, [bytes(8), bytes(range(8))]))
    put("png", "palette_2x2.png", png(2, 2, 3, 8, [b"\0\1", b"\2\3"]))
    put("png", "gray16_2x1.png", png(2, 1, 0, 16, [b"\0\1\2\3"]))

    put("npy", "f4_2x3.npy", npy("<f4", [2, 3], struct.pack("<6f", *range(6))))
    put("npy", "u1_4.npy", npy("|u1", [4], bytes(range(4))))
    put("npy", "i8_scalar.npy", npy("<i8", [], struct.pack("<q", 7)))
    put("npz", "two.npz", npz([("images", npy("|u1", [1, 2, 2, 1], bytes(4))),
                               ("labels", npy("<i8", [1], struct.pack("<q", 3)))]))

    put("safetensors", "two.safetensors", safetensors(
        {"a.weight": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
         "b.bias": ("BF16", [3], bytes(6))}, {"format": "pt"}))
    put("safetensors", "empty.safetensors", safetensors({}))
    put("weights_index", "index.json", json.dumps({
        "metadata": {"total_size": 16},
        "weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors",
                       "b": "diffusion_pytorch_model-00002-of-00002.safetensors"}}).encode())

    for name, path in [("unet.json", "models/fmnist-cm/unet/config.json"),
                       ("scheduler.json", "models/fmnist-cm/scheduler/scheduler_config.json")]:
        with open(os.path.join(ROOT, path), "rb") as f:
            put("config", name, f.read())

    put("pt_archive", "one_tensor.pt", pt_checkpoint(6, [2, 3], [3, 1]))
    put("pt_archive", "strided.pt", pt_checkpoint(6, [3, 2], [1, 3]))

    sha = "0123456789abcdef0123456789abcdef01234567"
    put("hub", "info.txt", json.dumps(
        {"sha": sha, "siblings": [{"rfilename": "model_index.json"},
                                  {"rfilename": "unet/config.json"}]}).encode())
    put("hub", "headers.txt", ("https://huggingface.co/org/m/resolve/main/x\n../y\n"
                               "HTTP/1.1 302 Found\r\nLocation: https://cdn/x\r\n"
                               "X-Linked-Etag: \"" + "a" * 64 + "\"\r\nX-Linked-Size: 123\r\n"
                               "X-Repo-Commit: " + sha + "\r\nRetry-After: 2\r\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
