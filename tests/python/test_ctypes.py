"""python/consistency_cpp.py (ctypes over libcm.so) against the cm binary's own output.

Run by CTest with CM_LIBRARY (libcm.so), CM_BINARY (cm) and CM_MODEL_DIR (the shipped model)."""
import ast
import os
import subprocess
import sys
import zipfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import consistency_cpp as cm  # noqa: E402

MODEL = os.environ["CM_MODEL_DIR"]
CM = os.environ["CM_BINARY"]


def npz_uint8(path, member="arr_0"):
    """A uint8 array of an .npz as (bytes, shape), with the standard library only."""
    raw = zipfile.ZipFile(path).read(member + ".npy")
    assert raw[:6] == b"\x93NUMPY"
    header_len = int.from_bytes(raw[8:10], "little")
    header = ast.literal_eval(raw[10:10 + header_len].decode())
    assert header["descr"] == "|u1" and not header["fortran_order"]
    return raw[10 + header_len:], header["shape"]


@pytest.fixture(scope="module")
def pipe():
    with cm.Pipeline(MODEL) as p:
        yield p


def test_version_is_the_binary_s():
    out = subprocess.run([CM, "--version"], capture_output=True, text=True, check=True).stdout
    assert f"cm {cm.version()} " in out


def test_generate_gives_cm_generate_s_pixels(pipe, tmp_path):
    assert (pipe.sample_size, pipe.channels, pipe.num_classes) == (28, 1, 10)
    for steps in (1, 2):
        ref = tmp_path / f"ref{steps}.npz"
        subprocess.run([CM, "generate", "-m", MODEL, "-n", "3", "--class", "3", "-s", "7",
                        "--steps", str(steps), "-q", "-o", str(ref)], check=True)
        expected, shape = npz_uint8(ref)
        images = pipe.generate(batch_size=3, steps=steps, class_labels=[3], seed=7)
        assert shape == (3, 28, 28, 1)
        assert [(i.height, i.width, i.channels, i.class_label) for i in images] == [(28, 28, 1, 3)] * 3
        assert b"".join(i.pixels for i in images) == expected


def test_errors_name_what_was_wrong(pipe):
    with pytest.raises(cm.CmError, match="/nonexistent/model"):
        cm.Pipeline("/nonexistent/model")
    with pytest.raises(cm.CmError, match="batch"):
        pipe.generate(batch_size=0)
    with pytest.raises(cm.CmError, match="sharpen"):
        pipe.edit("sharpen", image=pipe.generate()[0])


def test_progress_reports_and_stops(pipe):
    seen = []
    pipe.generate(steps=2, progress=lambda step, total: seen.append((step, total)) and False)
    assert seen == [(1, 2), (2, 2)]
    with pytest.raises(cm.Cancelled):
        pipe.generate(steps=2, progress=lambda step, total: True)


def test_inpainting_with_nothing_masked_keeps_the_image(pipe):
    image = pipe.generate(class_labels=[5], seed=1)[0]
    black = cm.Image(bytes(28 * 28), 28, 28, 1)
    out = pipe.edit("inpaint", image=image, mask=black, class_labels=[5])
    assert len(out) == 1
    assert max(abs(a - b) for a, b in zip(out[0].pixels, image.pixels)) <= 1
    # With everything masked, the model draws a new image.
    white = cm.Image(bytes([255]) * (28 * 28), 28, 28, 1)
    assert pipe.edit("inpaint", image=image, mask=white, class_labels=[5])[0].pixels != image.pixels
