"""Two `cm serve` replicas behind nginx configured by deploy/nginx/cm-serve.conf.

Checks that the balancer spreads generations over both replicas, that a request's images do not
depend on which replica answers (direct to each, and through nginx), that polled jobs stay on
the replica that took them (sticky routing), that a streamed job's events pass as they come and
closing its connection cancels it, and that /health and refusals pass through.
"""
import concurrent.futures
from http.client import HTTPConnection
import json
import time

import pytest

from cm_server import CmServer, Nginx, http, response_images

# -t 1 and --max-batch 1: every request of n=1 is computed alone, as cm generate computes it, so
# its pixels are exact whatever else the replica is doing (batched with others a value on a
# rounding boundary may move by one: docs/server.md).
REPLICA_ARGS = ["-t", "1", "--max-batch", "1"]
CLASSES = ["tshirt", "trouser", "sneaker", "bag"]


def request(i):
    return {"prompt": CLASSES[i % len(CLASSES)], "n": 1, "seed": 100 + i, "steps": 1 + i % 2}


@pytest.fixture(scope="module")
def cluster():
    if not Nginx.executable():
        pytest.skip("nginx is not installed (scripts/setup.sh installs it)")
    with CmServer(args=REPLICA_ARGS) as a, CmServer(args=REPLICA_ARGS) as b:
        with Nginx([f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]) as lb:
            yield a, b, lb


def images_total(server):
    status, _, body = server.get("/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith("cm_images_total "):
            return float(line.split()[1])
    raise AssertionError("no cm_images_total in /metrics")


def test_health_and_refusals_pass_through(cluster):
    _, _, lb = cluster
    status, _, body = http("GET", lb.url + "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    # cm serve's own error object, not an nginx page.
    status, _, body = http("POST", lb.url + "/v1/images/generations", {"n": 0})
    assert status == 400
    assert json.loads(body)["error"]["param"] == "n"


def test_both_replicas_answer_with_the_same_pixels(cluster):
    a, b, lb = cluster
    before = [images_total(a), images_total(b)]
    count = 12

    def through_nginx(i):
        status, _, body = http("POST", lb.url + "/v1/images/generations", request(i))
        assert status == 200, body
        return response_images(body)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        balanced = list(pool.map(through_nginx, range(count)))

    # Both replicas took a share: by nginx's access log and by each replica's own counter.
    answered = [u for u in lb.upstreams() if u != "-"]
    assert {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"} <= set(answered), answered
    taken = [images_total(a) - before[0], images_total(b) - before[1]]
    assert min(taken) >= 1 and sum(taken) == count, taken

    # The same request straight to each replica: byte-identical pixels everywhere.
    for i in range(count):
        direct = []
        for server in (a, b):
            status, _, body = server.post("/v1/images/generations", request(i))
            assert status == 200, body
            direct.append(response_images(body))
        assert direct[0] == direct[1], f"request {request(i)}: the replicas differ"
        assert balanced[i] == direct[0], f"request {request(i)}: through nginx differs"
        width, height, channels, _ = balanced[i][0]
        assert (width, height, channels) == (28, 28, 1)


def test_jobs_stay_on_their_replica(cluster):
    """Job ids are per replica (both replicas have a job-1): a poll routed to the other replica
    would find another job or none. Through nginx each job must come back as submitted."""
    _, _, lb = cluster
    submitted = {}
    for i in range(4):
        body = request(20 + i)
        status, headers, answer = http("POST", lb.url + "/v1/jobs", body)
        assert status == 202, answer
        submitted[json.loads(answer)["id"]] = body
    assert len(submitted) == 4, "two jobs got the same id: they went to different replicas"
    deadline = time.time() + 120
    pending = dict(submitted)
    while pending and time.time() < deadline:
        for job_id, body in list(pending.items()):
            # Twice in a row: a balancer alternating between the replicas (round robin,
            # least_conn) would send one of the two polls to the other replica, even where the
            # POSTs alternated the same way.
            for _ in range(2):
                status, _, answer = http("GET", f"{lb.url}/v1/jobs/{job_id}")
                assert status == 200, f"{job_id}: {status} {answer}"
                job = json.loads(answer)
                assert job["id"] == job_id
                assert job["seed"] == body["seed"], f"{job_id}: another replica's job: {job}"
                assert job["status"] in ("queued", "running", "done"), job
            if job["status"] == "done":
                assert [d["seed"] for d in job["data"]] == [body["seed"]], (job_id, body)
                direct = http("POST", lb.url + "/v1/images/generations", body)
                assert direct[0] == 200
                assert response_images(job) == response_images(direct[2])
                del pending[job_id]
        time.sleep(0.1)
    assert not pending, f"jobs not done within 120 s: {sorted(pending)}"


def test_event_stream_passes_unbuffered(cluster):
    """A streamed job through nginx: its first event arrives while the job is still running
    (a buffered stream would come at the end), and closing the connection cancels the job on the
    replica behind nginx. (The server's X-Accel-Buffering: no turns nginx's buffering off for the
    stream by itself: this passes with `proxy_buffering on` too.)"""
    _, _, lb = cluster
    # 16 images of 40 steps at --max-batch 1: 640 UNet calls, seconds of work even on a fast CPU.
    body = {"prompt": "bag", "n": 16, "seed": 7, "steps": 40, "stream": True}
    conn = HTTPConnection("127.0.0.1", lb.port, timeout=60)
    try:
        conn.request("POST", "/v1/jobs", json.dumps(body), {"Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == 200
        assert answer.getheader("Content-Type").startswith("text/event-stream")
        event = None
        while True:
            line = answer.readline().decode()
            assert line, "the stream ended before its first event"
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                job = json.loads(line.split(":", 1)[1])
                break
        assert event == "queued" and job["seed"] == 7, (event, job)
    finally:
        conn.close()  # the job's owner goes away
    deadline = time.time() + 60
    while time.time() < deadline:
        status, _, answer = http("GET", f"{lb.url}/v1/jobs/{job['id']}")
        assert status == 200, answer
        state = json.loads(answer)
        assert state["seed"] == 7, state  # this job, on the replica that took it
        if state["status"] not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert state["status"] == "cancelled", state
