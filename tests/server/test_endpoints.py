"""The real `cm serve` on a free loopback port: the endpoints beyond plain generation (edits,
AUTOMATIC1111's API, event streams, expired jobs, CORS, the page and OpenAPI document), and the
faults: a client that disconnects, --request-timeout, SIGTERM with a grace period and a second
signal. Images are compared with what `cm generate` / `cm edit` write for the same arguments."""
import base64
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid

import pytest

import png
from cm_server import CmServer, binary, cm_generate, http, shipped_model

CLASSES = json.load(open(os.path.join(shipped_model(), "class_names.json")))


def pixels(png_bytes):
    """(width, height, channels, pixel bytes) of a PNG."""
    p = png.decode(png_bytes)
    return p.width, p.height, p.channels, p.pixels


def b64_pixels(text):
    return pixels(base64.b64decode(text))


def multipart(fields, files):
    """(body, content type) of a multipart/form-data request."""
    boundary = uuid.uuid4().hex
    out = b""
    for name, value in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                f"{value}\r\n").encode()
    for name, (filename, data) in files.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; "
                f"filename=\"{filename}\"\r\nContent-Type: image/png\r\n\r\n").encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, "multipart/form-data; boundary=" + boundary


def metric(server, name):
    _, _, body = server.get("/metrics")
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", body.decode(), re.M)
    return float(m.group(1))


@pytest.fixture(scope="module")
def server():
    with CmServer(args=["--sse-keep-alive", "1"]) as s:
        yield s


@pytest.fixture(scope="module")
def edit_inputs(tmp_path_factory):
    """A 28x28 sneaker from cm generate, and a mask regenerating its left half."""
    d = tmp_path_factory.mktemp("edit")
    image_path = cm_generate(str(d / "gen"), "-s", "1", "--class", "sneaker", "-n", "1")[0]
    w, h, c, px = pixels(open(image_path, "rb").read())
    mask = bytes(255 if x < w // 2 else 0 for y in range(h) for x in range(w))
    mask_path = str(d / "mask.png")
    open(mask_path, "wb").write(png.encode(mask, w, h, 1))
    return image_path, mask_path, str(d)


def test_page_and_openapi(server):
    status, headers, body = server.get("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert not re.search(rb"(src|href)=\"https?://", body), "the page must not load other sites"
    status, headers, body = server.get("/openapi.json")
    doc = json.loads(body)
    assert status == 200 and doc["openapi"].startswith("3.")
    for path in ["/health", "/v1/models", "/v1/images/generations", "/v1/images/edits",
                 "/v1/jobs", "/v1/jobs/{id}", "/v1/jobs/{id}/cancel", "/metrics",
                 "/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/progress",
                 "/sdapi/v1/interrupt", "/sdapi/v1/options", "/sdapi/v1/sd-models"]:
        assert path in doc["paths"], path


def test_models_list_class_names(server):
    model = json.loads(server.get("/v1/models")[2])["data"][0]
    assert model["class_names"] == CLASSES and model["num_classes"] == len(CLASSES)
    assert model["size"] == "28x28" and model["num_train_timesteps"] > 1


def test_edit_equals_cm_edit(server, edit_inputs):
    image_path, mask_path, d = edit_inputs
    body, ctype = multipart({"prompt": "sneaker", "seed": "5", "steps": "4"},
                            {"image": ("in.png", open(image_path, "rb").read()),
                             "mask": ("mask.png", open(mask_path, "rb").read())})
    status, _, answer = server.post("/v1/images/edits", body, headers={"Content-Type": ctype})
    assert status == 200, answer
    data = json.loads(answer)["data"]
    assert len(data) == 1 and data[0]["seed"] == 5 and data[0]["class_label"] == 7
    out = os.path.join(d, "cm_edit.png")
    subprocess.run([binary(), "edit", "-m", shipped_model(), "--task", "inpaint", "--image",
                    image_path, "--mask", mask_path, "-s", "5", "--class", "sneaker", "--steps",
                    "4", "-o", out, "-q"], check=True, capture_output=True)
    assert b64_pixels(data[0]["b64_json"]) == pixels(open(out, "rb").read())
    # OpenAI's convention for a mask with alpha: transparent = regenerate. The same mask so.
    w, h, _, m = pixels(open(mask_path, "rb").read())
    rgba = bytes(v for x in m for v in (0, 0, 0, 0 if x else 255))
    body, ctype = multipart({"prompt": "sneaker", "seed": "5", "steps": "4"},
                            {"image": ("in.png", open(image_path, "rb").read()),
                             "mask": ("mask.png", png.encode(rgba, w, h, 4))})
    status, _, answer = server.post("/v1/images/edits", body, headers={"Content-Type": ctype})
    assert status == 200, answer
    assert b64_pixels(json.loads(answer)["data"][0]["b64_json"]) == pixels(open(out, "rb").read())


def test_edit_errors_name_the_part(server, edit_inputs):
    image_path, mask_path, _ = edit_inputs
    image = ("in.png", open(image_path, "rb").read())
    cases = [
        ({}, {"mask": ("m.png", open(mask_path, "rb").read())}, "image"),
        ({"task": "sharpen"}, {"image": image}, "task"),
        ({}, {"image": image}, "mask"),  # inpaint without a mask or transparency
        ({"steps": "0"}, {"image": image}, "steps"),
        ({"colour": "red"}, {"image": image}, "colour"),
        ({}, {"image": ("bad.png", b"not an image")}, "image"),
        ({}, {"image": image, "mask": ("m.png", png.encode(bytes(16), 4, 4, 1))}, "mask"),
    ]
    for fields, files, param in cases:
        body, ctype = multipart(fields, files)
        status, _, answer = server.post("/v1/images/edits", body,
                                        headers={"Content-Type": ctype})
        error = json.loads(answer)["error"]
        assert status == 400 and error["param"] == param, (fields, answer)
    status, _, answer = server.post("/v1/images/edits", {"prompt": "x"})
    assert status == 400 and json.loads(answer)["error"]["param"] == "body"


def test_sdapi_txt2img_equals_generations(server):
    status, _, answer = server.post("/sdapi/v1/txt2img", {
        "prompt": "sneaker", "seed": 3, "steps": 2, "batch_size": 2, "width": 28, "height": 28,
        "negative_prompt": "", "cfg_scale": 7, "sampler_name": "Euler"})
    assert status == 200, answer
    sd = json.loads(answer)
    info = json.loads(sd["info"])
    assert info["seed"] == 3 and info["class_labels"] == [7, 7] and len(sd["images"]) == 2
    status, _, answer = server.post("/v1/images/generations",
                                    {"prompt": "sneaker", "seed": 3, "steps": 2, "n": 2})
    openai = json.loads(answer)["data"]
    for a, b in zip(sd["images"], openai):
        assert b64_pixels(a) == b64_pixels(b["b64_json"])
    for body, param in [({"prompt": "sneaker", "width": 512}, "width"),
                        ({"prompt": "sneaker", "wobble": 1}, "wobble"),
                        ({"prompt": "dragon"}, "prompt"),
                        ({"batch_size": 99}, "batch_size")]:
        status, _, answer = server.post("/sdapi/v1/txt2img", body)
        assert status == 400 and json.loads(answer)["error"]["param"] == param, answer


def test_sdapi_img2img(server, edit_inputs):
    image_path, mask_path, d = edit_inputs
    image = base64.b64encode(open(image_path, "rb").read()).decode()
    mask = base64.b64encode(open(mask_path, "rb").read()).decode()
    status, _, answer = server.post("/sdapi/v1/img2img", {
        "init_images": ["data:image/png;base64," + image], "mask": mask, "prompt": "sneaker",
        "seed": 5, "steps": 4, "denoising_strength": 0.75, "mask_blur": 4})
    assert status == 200, answer
    body, ctype = multipart({"prompt": "sneaker", "seed": "5", "steps": "4"},
                            {"image": ("in.png", open(image_path, "rb").read()),
                             "mask": ("mask.png", open(mask_path, "rb").read())})
    _, _, edit = server.post("/v1/images/edits", body, headers={"Content-Type": ctype})
    assert b64_pixels(json.loads(answer)["images"][0]) == \
        b64_pixels(json.loads(edit)["data"][0]["b64_json"])
    # Without a mask: SDEdit, an image of the model's size.
    status, _, answer = server.post("/sdapi/v1/img2img", {
        "init_images": [image], "prompt": "sneaker", "seed": 5, "denoising_strength": 0.5})
    assert status == 200, answer
    assert b64_pixels(json.loads(answer)["images"][0])[:3] == (28, 28, 1)
    status, _, answer = server.post("/sdapi/v1/img2img", {"init_images": ["%%%"]})
    assert status == 400 and json.loads(answer)["error"]["param"] == "init_images"


def test_sdapi_progress_options_models(server):
    progress = json.loads(server.get("/sdapi/v1/progress")[2])
    assert 0 <= progress["progress"] <= 1 and "sampling_steps" in progress["state"]
    assert json.loads(server.post("/sdapi/v1/interrupt", {})[2])["interrupted"] == 0
    options = json.loads(server.get("/sdapi/v1/options")[2])
    assert options["sd_model_checkpoint"] == shipped_model()
    assert server.post("/sdapi/v1/options", {"jpeg_quality": 80})[0] == 200
    assert json.loads(server.get("/sdapi/v1/options")[2])["jpeg_quality"] == 80
    status, _, answer = server.post("/sdapi/v1/options", {"sd_model_checkpoint": "other"})
    assert status == 400 and json.loads(answer)["error"]["param"] == "sd_model_checkpoint"
    models = json.loads(server.get("/sdapi/v1/sd-models")[2])
    assert models[0]["title"] == shipped_model()


def read_events(response, on_comment=None):
    """Server-sent events as (name, data) pairs, and the count of keep-alive comments;
    on_comment(count) is called as each comment arrives."""
    events, comments, name, data = [], 0, None, []
    for raw in response:
        line = raw.decode().rstrip("\r\n")
        if line.startswith(":"):
            comments += 1
            if on_comment:
                on_comment(comments)
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and name:
            events.append((name, json.loads("\n".join(data))))
            name, data = None, []
    return events, comments


def test_job_stream(server):
    import urllib.request
    body = {"prompt": "coat", "seed": 9, "steps": 3, "n": 2, "stream": True}
    req = urllib.request.Request(server.url + "/v1/jobs", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events, _ = read_events(r)
    names = [n for n, _ in events]
    assert names[0] == "queued" and names[-1] == "done", names
    steps = [d["step"] for n, d in events if n == "step"]
    assert steps == sorted(steps) and steps[-1] == 3, events
    done = events[-1][1]
    _, _, sync = server.post("/v1/images/generations",
                             {"prompt": "coat", "seed": 9, "steps": 3, "n": 2})
    for a, b in zip(done["data"], json.loads(sync)["data"]):
        assert b64_pixels(a["b64_json"]) == b64_pixels(b["b64_json"])
    # Watching a job that is already done: its final event.
    with urllib.request.urlopen(server.url + "/v1/jobs/" + done["id"] + "?stream=true",
                                timeout=60) as r:
        events, _ = read_events(r)
    assert [n for n, _ in events] == ["queued", "done"]


def test_stream_keep_alive_and_position():
    import urllib.request
    with CmServer(args=["--max-batch", "1", "--sse-keep-alive", "1", "--max-n", "64"]) as s:
        # A long request running and a short one queued keep the streamed one waiting, first
        # with one request ahead of it in the queue (the running one does not count), then none.
        # The long one (64 images x 160 steps, one image per call) would run for many seconds on
        # any machine; it is cancelled once a keep-alive comment has arrived, so the test waits
        # for the comment itself, never for a guess of how fast the machine is.
        status, _, answer = s.post("/v1/jobs", {"seed": 1, "n": 64, "steps": 160})
        assert status == 202
        long_id = json.loads(answer)["id"]
        # Accepted is not yet running: until the engine takes it, it counts in the queue too.
        while json.loads(s.get("/v1/jobs/" + long_id)[2])["status"] != "running":
            time.sleep(0.01)
        assert s.post("/v1/jobs", {"seed": 3})[0] == 202
        body = {"seed": 2, "steps": 1, "stream": True}
        # Browsers accept compressed answers; an event stream must not be compressed (held back).
        req = urllib.request.Request(s.url + "/v1/jobs", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Accept-Encoding": "gzip, br"})

        def cancel_long_job(count):
            if count == 1:
                assert s.post("/v1/jobs/" + long_id + "/cancel")[0] == 200

        with urllib.request.urlopen(req, timeout=120) as r:
            assert "Content-Encoding" not in r.headers
            events, comments = read_events(r, cancel_long_job)
        assert comments >= 1, events
        assert events[0][0] == "queued" and events[0][1]["position"] == 1
        assert ("position", {"id": events[0][1]["id"], "position": 0}) in events
        assert events[-1][0] == "done", events
        status, _, answer = s.get("/v1/jobs/" + long_id)
        assert json.loads(answer)["status"] == "cancelled", answer


def test_expired_job_is_410():
    with CmServer(args=["--keep-jobs", "1"]) as s:
        first = json.loads(s.post("/v1/jobs", {"seed": 1})[2])["id"]
        while json.loads(s.get("/v1/jobs/" + first)[2])["status"] != "done":
            time.sleep(0.05)
        second = json.loads(s.post("/v1/jobs", {"seed": 2})[2])["id"]
        while json.loads(s.get("/v1/jobs/" + second)[2])["status"] != "done":
            time.sleep(0.05)
        status, _, answer = s.get("/v1/jobs/" + first)
        assert status == 410 and "--keep-jobs" in json.loads(answer)["error"]["message"]
        assert s.get("/v1/jobs/job-999")[0] == 404
        assert s.post("/v1/jobs/" + first + "/cancel")[0] == 410


def test_cors():
    with CmServer(args=["--cors-origins", "http://a.example,http://b.example"]) as s:
        status, headers, _ = http("OPTIONS", s.url + "/v1/images/generations", headers={
            "Origin": "http://a.example", "Access-Control-Request-Method": "POST"})
        assert status == 204 and headers["Access-Control-Allow-Origin"] == "http://a.example"
        assert "POST" in headers["Access-Control-Allow-Methods"]
        _, headers, _ = s.get("/health", headers={"Origin": "http://b.example"})
        assert headers["Access-Control-Allow-Origin"] == "http://b.example"
        _, headers, _ = s.get("/health", headers={"Origin": "http://evil.example"})
        assert "Access-Control-Allow-Origin" not in headers
    with CmServer() as s:  # none by default
        status, headers, _ = http("OPTIONS", s.url + "/v1/images/generations",
                                  headers={"Origin": "http://a.example"})
        assert "Access-Control-Allow-Origin" not in headers


def test_api_key_file(tmp_path):
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    with CmServer(args=["--api-key-file", str(key)]) as s:
        assert s.post("/v1/images/generations", {"seed": 1})[0] == 401
        assert s.post("/v1/images/generations", {"seed": 1},
                      headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert s.get("/health")[0] == 200 and s.get("/")[0] == 200


def long_request_socket(port, body):
    """A raw connection that has sent a generation request and not read the answer."""
    sock = socket.create_connection(("127.0.0.1", port))
    data = json.dumps(body).encode()
    sock.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: " +
                 str(len(data)).encode() + b"\r\n\r\n" + data)
    return sock


def test_disconnect_drops_the_work():
    with CmServer(args=["--max-batch", "1"]) as s:
        sock = long_request_socket(s.port, {"seed": 1, "n": 16, "steps": 40})  # 640 calls
        deadline = time.time() + 30
        while metric(s, "cm_network_evaluations_total") < 2 and time.time() < deadline:
            time.sleep(0.02)
        sock.close()
        while time.time() < deadline:
            if metric(s, 'cm_generation_requests_total{outcome="cancelled"}') == 1:
                break
            time.sleep(0.05)
        assert metric(s, 'cm_generation_requests_total{outcome="cancelled"}') == 1
        assert metric(s, "cm_network_evaluations_total") < 640
        # Others are not disturbed.
        assert s.post("/v1/images/generations", {"seed": 2})[0] == 200


def test_request_timeout():
    with CmServer(args=["--max-batch", "1", "--request-timeout", "0.3"]) as s:
        status, _, answer = s.post("/v1/images/generations", {"seed": 1, "n": 16, "steps": 40})
        assert status == 504 and "--request-timeout" in json.loads(answer)["error"]["message"]
        assert s.post("/v1/images/generations", {"seed": 2})[0] == 200


def test_sigterm_grace_then_second_signal():
    # The grace period ends: the request in flight is cancelled (503) and the process exits 0.
    s = CmServer(args=["--max-batch", "1", "--shutdown-grace", "0.5"]).start()
    answers = []
    t = threading.Thread(target=lambda: answers.append(
        s.post("/v1/images/generations", {"seed": 1, "n": 16, "steps": 40})))
    t.start()
    while metric(s, "cm_network_evaluations_total") < 1:
        time.sleep(0.02)
    started = time.time()
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=30) == 0
    t.join()
    assert answers[0][0] == 503 and time.time() - started < 20
    # A second signal exits at once, with the signal's status.
    s = CmServer(args=["--max-batch", "1", "--shutdown-grace", "600"]).start()
    sock = long_request_socket(s.port, {"seed": 1, "n": 16, "steps": 40})
    while metric(s, "cm_network_evaluations_total") < 1:
        time.sleep(0.02)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert s.proc.poll() is None  # draining
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=10) == 128 + signal.SIGTERM
    sock.close()


def test_kept_alive_connection_serves_many_requests(server):
    # httplib's default closes a connection after its fifth request; closed-loop clients then
    # reconnect every fifth image, and one that sends as the server closes gets a read error.
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.connect()
    first = conn.sock
    for seed in range(12):
        conn.request("POST", "/v1/images/generations", json.dumps({"seed": seed}),
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        assert (r.getheader("Connection") or "").lower() != "close", seed
        assert conn.sock is first, seed
    conn.close()


def test_winograd_matches_cm_generate_winograd(tmp_path):
    """--winograd: a request's image is `cm generate --winograd`'s for the same arguments (to one
    level: the kernels' blocking may follow the thread count), and both PNG texts say whether
    Winograd ran (only on AVX-512 CPUs, in the LibTorch 1.13 build)."""
    reference = cm_generate(str(tmp_path / "gen"), "-s", "4", "--class", "3", "--winograd")
    with open(reference[0], "rb") as f:
        ref = png.decode(f.read())
    with CmServer(args=["--winograd"]) as s:
        status, _, answer = s.post("/v1/images/generations", {"prompt": "3", "seed": 4, "n": 1})
        assert status == 200, answer
        got = png.decode(base64.b64decode(json.loads(answer)["data"][0]["b64_json"]))
    assert (got.width, got.height, got.channels) == (ref.width, ref.height, ref.channels)
    assert max(abs(a - b) for a, b in zip(got.pixels, ref.pixels)) <= 1
    ran = "convolution: winograd" in ref.text["parameters"]
    assert ("convolution: winograd" in got.text["parameters"]) == ran, got.text
