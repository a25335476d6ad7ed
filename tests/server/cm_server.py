"""Starts the real `cm serve` on a free loopback port for the server's Python tests.

The tests find the binary and the model through the environment CTest sets (CM_BINARY,
CM_MODEL); run by hand:
  CM_BINARY=build/cm CM_MODEL=models/fmnist-cm .venv/bin/python -m pytest tests/server -q
"""
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
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


def decode_png(data):
    """(width, height, channels, pixels bytes row-major) of a PNG, by png.py's decoder."""
    import png  # beside this file
    image = png.decode(data)
    return image.width, image.height, image.channels, image.pixels


def response_images(body):
    """The decoded images of an Images API answer (bytes or parsed JSON): a list of
    decode_png tuples, in order."""
    if isinstance(body, (bytes, str)):
        body = json.loads(body)
    return [decode_png(base64.b64decode(d["b64_json"])) for d in body["data"]]


def file_images(paths):
    """decode_png of each file, in order."""
    out = []
    for path in paths:
        with open(path, "rb") as f:
            out.append(decode_png(f.read()))
    return out


NGINX_TEMPLATE = os.path.join(ROOT, "deploy", "nginx", "cm-serve.conf")


def nginx_site(template, replicas, listen, access_log):
    """deploy/nginx/cm-serve.conf's text for these replicas ("127.0.0.1:PORT" each): every
    upstream's server lines become one per replica (with the template's parameters), `listen 80`
    becomes `listen LISTEN`, the access log goes to ACCESS_LOG. Everything else is as deployed."""
    out, in_upstream, replaced = [], False, False
    for line in template.splitlines():
        stripped = line.strip()
        if stripped.startswith("upstream ") and stripped.endswith("{"):
            in_upstream, replaced = True, False
        elif in_upstream and stripped == "}":
            in_upstream = False
        elif in_upstream and stripped.startswith("server "):
            if not replaced:
                indent = line[:len(line) - len(line.lstrip())]
                params = stripped.rstrip(";").split()[2:]
                out += [indent + " ".join(["server", r, *params]) + ";" for r in replicas]
                replaced = True
            continue
        elif stripped == "listen 80;":
            line = line.replace("listen 80;", f"listen {listen};")
        elif stripped.startswith("access_log ") and stripped != "access_log off;":
            line = re.sub(r"access_log \S+", f"access_log {access_log}", line)
        out.append(line)
    return "\n".join(out) + "\n"


class Nginx:
    """`with Nginx(["127.0.0.1:P1", ...]) as n:` runs Debian's nginx in the foreground, as any
    user, in front of those replicas on a free loopback port, with deploy/nginx/cm-serve.conf
    (see nginx_site) inside a minimal main configuration and every path under a temporary
    folder. n.url is its base URL, n.access_log its access log (with $upstream_addr)."""

    def __init__(self, replicas, port=None, template=NGINX_TEMPLATE, ready_timeout=30):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.replicas = list(replicas)
        self.template = template
        self.ready_timeout = ready_timeout
        self.dir = None
        self.proc = None

    @staticmethod
    def executable():
        return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")

    def start(self):
        exe = self.executable()
        if not exe:
            raise RuntimeError("nginx not found (Debian's nginx package: scripts/setup.sh)")
        self.dir = tempfile.mkdtemp(prefix="cm-nginx-")
        d = self.dir
        self.access_log = os.path.join(d, "access.log")
        self.error_log = os.path.join(d, "error.log")
        with open(self.template) as f:
            site = nginx_site(f.read(), self.replicas, f"127.0.0.1:{self.port}", self.access_log)
        with open(os.path.join(d, "cm-serve.conf"), "w") as f:
            f.write(site)
        temp = {k: os.path.join(d, k) for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
        for path in temp.values():
            os.makedirs(path)
        # A root master hands its workers to `nobody`, who could not use these folders.
        user = "user root;\n" if os.geteuid() == 0 else ""
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(user + "worker_processes 1;\nevents { worker_connections 512; }\nhttp {\n" +
                    "".join(f"    {k}_temp_path {v};\n" for k, v in temp.items()) +
                    f"    include {os.path.join(d, 'cm-serve.conf')};\n}}\n")
        self.cmd = [exe, "-p", d, "-e", self.error_log, "-c", os.path.join(d, "nginx.conf"),
                    "-g", f"daemon off; pid {os.path.join(d, 'nginx.pid')}; "
                          f"error_log {self.error_log};"]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + self.ready_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited {self.proc.returncode}: "
                                   f"{self.proc.communicate()[0].decode()}{self.errors()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx not listening within {self.ready_timeout} s{self.errors()}")

    def errors(self):
        try:
            with open(self.error_log) as f:
                return "\n" + f.read()
        except OSError:
            return ""

    def upstreams(self):
        """The replica address of each request in the access log, in order."""
        with open(self.access_log) as f:
            return re.findall(r"upstream=(\S+)", f.read())

    def stop(self, timeout=15):
        """SIGTERM (nginx's fast shutdown: the master stops its workers) and wait, then
        SIGKILL; removes the temporary folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
