"""The official `openai` Python client against the real `cm serve`.

The server's OpenAI Images API as that client sends and reads it: the model list, generations
equal to `cm generate`'s pixels, the errors it maps to its exception classes, and image edits
(multipart) on POST /v1/images/edits.
"""
import base64

import openai
import pytest

import png
from cm_server import CmServer, cm_generate, decode_png, file_images

KEY = "test-key-0123456789"
SIZE = 28


@pytest.fixture(scope="module")
def server():
    # -t 1: a request served alone is computed as `cm generate -t 1` computes it, bit for bit.
    with CmServer(args=["--api-key", KEY, "-t", "1"]) as s:
        yield s


def client(server, key=KEY):
    # No retries: a refusal must come back as the exception, at once.
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=300)


def model_id(server):
    return client(server).models.list().data[0].id


def test_models_list(server):
    models = client(server).models.list().data
    assert len(models) == 1
    assert models[0].id  # the -m argument
    assert models[0].object == "model"


def test_generate_equals_cm_generate(server, tmp_path):
    answer = client(server).images.generate(
        model=model_id(server), prompt="sneaker", n=2, response_format="b64_json",
        extra_body={"seed": 3})
    assert len(answer.data) == 2
    got = [decode_png(base64.b64decode(d.b64_json)) for d in answer.data]
    want = file_images(cm_generate(str(tmp_path), "-s", "3", "--class", "sneaker", "-n", "2",
                                   "-t", "1"))
    assert [g[:3] for g in got] == [(SIZE, SIZE, 1)] * 2
    assert got == want
    # The server's extensions ride along as extra fields of each image.
    assert [getattr(d, "seed", None) for d in answer.data] == [3, 3]
    assert all(getattr(d, "class_label", None) == 7 for d in answer.data)  # sneaker


def test_wrong_key_is_authentication_error(server):
    with pytest.raises(openai.AuthenticationError) as e:
        client(server, key="wrong-key").images.generate(prompt="sneaker", n=1,
                                                        response_format="b64_json")
    assert e.value.status_code == 401


def test_bad_field_is_bad_request_error(server):
    with pytest.raises(openai.BadRequestError) as e:
        client(server).images.generate(prompt="sneaker", n=1, response_format="b64_json",
                                       extra_body={"seed": 3, "no_such_field": 1})
    assert e.value.status_code == 400
    assert e.value.param == "no_such_field"
    with pytest.raises(openai.BadRequestError) as e:
        client(server).images.generate(prompt="no-such-class", n=1, response_format="b64_json")
    assert e.value.param == "prompt"


def test_edit_keeps_the_unmasked_pixels(server, tmp_path):
    """POST /v1/images/edits (task inpaint, the default): the mask's white half is regenerated,
    its black half kept, so there the output equals the input up to the model's quantisation
    (uint8 -> [-1, 1] -> uint8)."""
    source = file_images(cm_generate(str(tmp_path), "-s", "11", "--class", "bag", "-n", "1",
                                     "-t", "1"))[0]
    width, height, channels, pixels = source
    assert (width, height, channels) == (SIZE, SIZE, 1)
    # White (255) = regenerate: the right half; black (0) = keep: the left half.
    mask = bytes(255 if x >= SIZE // 2 else 0 for y in range(SIZE) for x in range(SIZE))
    answer = client(server).images.edit(
        image=("bag.png", png.encode_gray(pixels, SIZE, SIZE), "image/png"),
        mask=("mask.png", png.encode_gray(mask, SIZE, SIZE), "image/png"),
        prompt="sneaker", n=1, response_format="b64_json", extra_body={"seed": 5})
    assert len(answer.data) == 1
    out_w, out_h, out_c, out = decode_png(base64.b64decode(answer.data[0].b64_json))
    assert (out_w, out_h) == (SIZE, SIZE)
    assert out_c == 1
    kept = [(i, pixels[i], out[i]) for i in range(SIZE * SIZE) if mask[i] == 0]
    worst = max(abs(a - b) for _, a, b in kept)
    assert worst <= 2, f"kept pixels moved by up to {worst}/255"
    assert getattr(answer.data[0], "seed", None) == 5
    assert getattr(answer.data[0], "class_label", None) == 7  # sneaker
