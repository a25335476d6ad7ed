"""Starts the real `cm serve` on a free loopback port for the server's Python tests.

The tests find the binary and the model through the environment CTest sets (CM_BINARY,
CM_MODEL); run by hand:
  CM_BINARY=build/cm CM_MODEL=models/fmnist-cm .venv/bin/python -m pytest tests/server -q
"""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def binary():
    return os.environ.get("CM_BINARY", os.path.join(ROOT, "build", "cm"))


def shipped_model():
    return os.environ.get("CM_MODEL", os.path.join(ROOT, "models", "fmnist-cm"))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=120):
    """(status, headers, body bytes); HTTP errors are answers, not exceptions."""
    data = body
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class CmServer:
    """`with CmServer(args=[...]) as s:` runs `cm serve` until the block ends (SIGTERM, then a
    check that it exited 0). s.url is its base URL."""

    def __init__(self, model=None, args=(), port=None, ready_timeout=120):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [binary(), "serve", "-m", model or shipped_model(), "--port", str(self.port),
                    "-q", *args]
        self.ready_timeout = ready_timeout
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + self.ready_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise RuntimeError(f"cm serve exited {self.proc.returncode}: {err.decode()}")
            try:
                status, _, _ = http("GET", self.url + "/health", timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.proc.kill()
        raise RuntimeError(f"cm serve not ready within {self.ready_timeout} s: {self.cmd}")

    def stop(self, timeout=60):
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError("cm serve did not exit within %d s of SIGTERM" % timeout)
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        code = self.stop()
        if exc[0] is None:
            assert code == 0, f"cm serve exited {code}"

    def get(self, path, **kw):
        return http("GET", self.url + path, **kw)

    def post(self, path, body=None, **kw):
        return http("POST", self.url + path, body, **kw)


def cm_generate(out_dir, *args):
    """Runs `cm generate` (the in-process reference) and returns the PNG paths it wrote."""
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run([binary(), "generate", "-m", shipped_model(), "-q",
                    "-o", os.path.join(out_dir, "img%d.png"), *args],
                   check=True, capture_output=True)
    return sorted(os.path.join(out_dir, f) for f in os.listdir(out_dir) if f.endswith(".png"))
