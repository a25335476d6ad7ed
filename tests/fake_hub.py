#!/usr/bin/env python3
"""A stand-in for the Hugging Face Hub on 127.0.0.1, for consistency.cpp's download tests.

Serves local folders as model repositories with the Hub's endpoints and headers:
  GET  /api/models/{repo}[/revision/{rev}]   {"id", "sha", "siblings": [{"rfilename"}]}
  HEAD /{repo}/resolve/{rev}/{path}          X-Repo-Commit, ETag (git blob sha1), Content-Length;
                                             .safetensors files (LFS on the Hub): a 302 to /cdn/
                                             with X-Linked-Etag (sha256) and X-Linked-Size
  GET  /{repo}/resolve/{rev}/{path}          the bytes (LFS files: the same 302)
  GET  /cdn/{sha256}                         the bytes, with Range support
Errors as the Hub sends them: 404 with X-Error-Code RepoNotFound, RevisionNotFound, EntryNotFound.

Flags make it misbehave for one test. It prints its port on stdout once it listens, appends one
JSON line per request to --log, and stops on SIGTERM.
"""
import argparse
import hashlib
import http.server
import json
import os
import sys
import threading
import time
import urllib.parse


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, repo_id, folder):
        self.repo_id = repo_id
        self.files = {}
        for root, _, names in os.walk(folder):
            for name in sorted(names):
                full = os.path.join(root, name)
                rel = os.path.relpath(full, folder).replace(os.sep, "/")
                with open(full, "rb") as f:
                    self.files[rel] = f.read()
        digest = hashlib.sha1(repo_id.encode())
        for rel in sorted(self.files):
            digest.update(rel.encode() + b"\0" + hashlib.sha256(self.files[rel]).digest())
        self.commit = digest.hexdigest()


class Hub:
    def __init__(self, args):
        self.args = args
        self.repos = {}
        for spec in args.repo:
            repo_id, folder = spec.split("=", 1)
            self.repos[repo_id] = Repo(repo_id, folder)
        self.renames = dict(spec.split("=", 1) for spec in args.rename)
        self.blobs = {}  # sha256 -> bytes, what /cdn/ serves
        for repo in self.repos.values():
            for data in repo.files.values():
                self.blobs[hashlib.sha256(data).hexdigest()] = data
        self.failures = []  # [substring, status, remaining]
        for spec in args.fail:
            substring, status, count = spec.rsplit(":", 2)
            self.failures.append([substring, int(status), int(count)])
        self.cut_pending = list(args.cut)
        self.stall_pending = list(args.stall)
        self.lock = threading.Lock()
        self.port = 0

    def take_failure(self, path):
        with self.lock:
            for failure in self.failures:
                if failure[0] in path and failure[2] > 0:
                    failure[2] -= 1
                    return failure[1]
        return None

    def take_cut(self, name):
        return self.take(self.cut_pending, name)

    def take_stall(self, name):
        return self.take(self.stall_pending, name)

    def take(self, pending, name):
        with self.lock:
            for substring in pending:
                if substring in name:
                    pending.remove(substring)
                    return True
        return False

    def log(self, record):
        if not self.args.log:
            return
        with self.lock, open(self.args.log, "a") as f:
            f.write(json.dumps(record) + "\n")


def matches(substrings, text):
    return any(s in text for s in substrings)


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "FakeHub/1.0"

    def log_message(self, *args):
        pass

    @property
    def hub(self):
        return self.server.hub

    def do_HEAD(self):
        self.handle_request(head=True)

    def do_GET(self):
        self.handle_request(head=False)

    def send(self, status, headers=None, body=b"", head=False):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def error(self, status, code=None, head=False, commit=None):
        headers = {"Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        body = json.dumps({"error": code or "error %d" % status}).encode()
        self.send(status, headers, body, head)

    def handle_request(self, head):
        hub = self.hub
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        auth = self.headers.get("Authorization")
        hub.log({"method": self.command, "path": path, "host": self.headers.get("Host", ""),
                 "authorization": auth, "range": self.headers.get("Range")})

        status = hub.take_failure(path)
        if status is not None:
            return self.error(status, head=head)
        if path.startswith("/cdn/"):
            return self.serve_blob(path[len("/cdn/"):], head)

        is_api = path.startswith("/api/models/")
        parts = path[len("/api/models/"):].split("/") if is_api else path[1:].split("/")
        if len(parts) < 2:
            return self.error(404, head=head)
        repo_id = urllib.parse.unquote(parts[0]) + "/" + urllib.parse.unquote(parts[1])
        rest = parts[2:]

        if repo_id in hub.renames:
            # A renamed repository: a relative redirect to the new name, as the Hub answers.
            new_parts = hub.renames[repo_id].split("/")
            prefix = "/api/models/" if is_api else "/"
            location = prefix + "/".join(new_parts + rest)
            return self.send(307, {"Location": location}, head=head)

        if hub.args.require_token and auth != "Bearer " + hub.args.require_token:
            return self.error(401, head=head)
        if hub.args.gated:
            return self.error(403, "GatedRepo", head=head)
        repo = hub.repos.get(repo_id)
        if repo is None:
            return self.error(404, "RepoNotFound", head=head)

        if is_api:
            if rest and (len(rest) != 2 or rest[0] != "revision"):
                return self.error(404, head=head)
            revision = urllib.parse.unquote(rest[1]) if rest else "main"
            if revision not in ("main", repo.commit):
                return self.error(404, "RevisionNotFound", head=head)
            info = {"id": repo_id, "modelId": repo_id, "sha": repo.commit,
                    "siblings": [{"rfilename": name} for name in sorted(repo.files)]}
            return self.send(200, {"Content-Type": "application/json"},
                             json.dumps(info).encode(), head)

        if len(rest) < 3 or rest[0] != "resolve":
            return self.error(404, head=head)
        revision = urllib.parse.unquote(rest[1])
        name = urllib.parse.unquote("/".join(rest[2:]))
        if revision not in ("main", repo.commit):
            return self.error(404, "RevisionNotFound", head=head)
        if name not in repo.files or name in hub.args.missing:
            return self.error(404, "EntryNotFound", head=head, commit=repo.commit)
        data = repo.files[name]
        size = len(data) + (100 if matches(hub.args.lie_size, name) else 0)
        headers = {"X-Repo-Commit": repo.commit}
        if name.endswith(".safetensors"):
            sha = hashlib.sha256(data).hexdigest()
            host = hub.args.cdn_host or "127.0.0.1"
            headers.update({"X-Linked-Etag": '"%s"' % sha, "X-Linked-Size": size,
                            "ETag": '"%s"' % git_blob_sha1(data),
                            "Location": "http://%s:%d/cdn/%s?name=%s" % (
                                host, hub.port, sha, urllib.parse.quote(name, safe=""))})
            return self.send(302, headers, head=head)
        headers.update({"ETag": '"%s"' % git_blob_sha1(data), "Content-Length": size})
        if head:
            return self.send(200, headers, head=True)
        return self.send(200, headers, data)

    def serve_blob(self, sha, head):
        hub = self.hub
        data = hub.blobs.get(sha)
        if data is None:
            return self.error(404, head=head)
        name = urllib.parse.unquote(urllib.parse.parse_qs(
            urllib.parse.urlsplit(self.path).query).get("name", [""])[0])
        if matches(hub.args.corrupt, name):
            middle = len(data) // 2
            data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
        start = 0
        requested = self.headers.get("Range")
        if requested and requested.startswith("bytes=") and requested.endswith("-"):
            start = int(requested[len("bytes="):-1])
            if start >= len(data):
                return self.send(416, {"Content-Range": "bytes */%d" % len(data)}, head=head)
            headers = {"Content-Range": "bytes %d-%d/%d" % (start, len(data) - 1, len(data)),
                       "Content-Length": len(data) - start}
            status = 206
        else:
            headers = {"Content-Length": len(data)}
            status = 200
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.end_headers()
        if head:
            return
        body = data[start:]
        if start == 0 and hub.take_stall(name):
            # The headers, then silence: the client has to time out.
            self.wfile.flush()
            time.sleep(30)
            return
        if start == 0 and hub.take_cut(name):
            # Half the promised bytes, then the connection drops.
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that hangs up mid-transfer (a test's "disk full", say) is no server error.
        if not isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
            super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", action="append", default=[], help="ORG/NAME=FOLDER")
    parser.add_argument("--rename", action="append", default=[],
                        help="OLD=NEW: OLD answers with a relative redirect to NEW")
    parser.add_argument("--cdn-host", default="",
                        help="host name in the CDN redirects (another host: 'localhost')")
    parser.add_argument("--require-token", default="", help="401 without this bearer token")
    parser.add_argument("--gated", action="store_true", help="403 GatedRepo for every repo")
    parser.add_argument("--fail", action="append", default=[],
                        help="SUBSTRING:STATUS:COUNT: the first COUNT matching paths get STATUS")
    parser.add_argument("--cut", action="append", default=[],
                        help="the first full download of a file whose name has SUBSTRING stops "
                             "half way")
    parser.add_argument("--stall", action="append", default=[],
                        help="the first full download of a file whose name has SUBSTRING sends "
                             "its headers, then nothing")
    parser.add_argument("--lie-size", action="append", default=[],
                        help="announce 100 bytes more than the file has")
    parser.add_argument("--corrupt", action="append", default=[],
                        help="flip a byte in the middle of the file's bytes")
    parser.add_argument("--missing", action="append", default=[],
                        help="listed by the API but 404 EntryNotFound on resolve")
    parser.add_argument("--log", default="", help="append one JSON line per request")
    args = parser.parse_args()

    server = Server(("127.0.0.1", 0), Handler)
    server.hub = Hub(args)
    server.hub.port = server.server_address[1]
    print(server.hub.port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
