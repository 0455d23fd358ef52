#!/usr/bin/env python3
"""A local stand-in for the loan data provider's download site (Python's standard library only).

Usage: loan_site.py --data DIR [--port N] [--user NAME] [--generate LOANS]

It serves the quarterly zips in DIR the way the provider's site does:

- POST /FLoan/secure/auth.php with the form fields `username` and `password` logs in: the answer
  is a 302 to /FLoan/Data/ that sets a `PHPSESSID` session cookie. The password is the value of
  $LOANS_SITE_PASSWORD (the user name is --user, default `loans-team`); a wrong one gets 401.
- GET /FLoan/Data/historical_data_YYYYQn.zip needs that cookie (401 without it) and answers
  with the file, a strong ETag (the SHA-256 of its bytes) and Last-Modified; `If-None-Match`
  with the current ETag gets 304 Not Modified, and `Range: bytes=N-` gets 206 with the rest
  (honouring `If-Range`).
- With --generate LOANS, a quarter whose zip is missing is generated (loans.py, LOANS loans) on
  its first request, so a scheduled DAG finds every quarter.
- GET /stats answers JSON counts per path and status, for tests and curious users.

It listens on 127.0.0.1, prints `listening PORT` once it accepts connections, logs one line per
request to standard output, and runs until SIGTERM, or with --until-stdin-closes until its standard
input closes (so it never outlives the test that started it).
"""

import argparse
import email.utils
import hashlib
import json
import os
import re
import secrets
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loans  # noqa: E402

LOGIN_PATH = "/FLoan/secure/auth.php"
FILES_PREFIX = "/FLoan/Data/"
FILE_NAME = re.compile(r"^historical_data_(\d{4}Q[1-4])\.zip$")
COOKIE = "PHPSESSID"


class Site:
    def __init__(self, data, user, password, generate):
        self.data = data
        self.user = user
        self.password = password
        self.generate = generate
        self.sessions = set()
        self.lock = threading.Lock()
        self.stats = {}

    def count(self, method, path, status):
        with self.lock:
            key = f"{method} {path} {status}"
            self.stats[key] = self.stats.get(key, 0) + 1

    def file(self, name):
        """The file's bytes, or None."""
        match = FILE_NAME.match(name)
        if not match:
            return None
        path = os.path.join(self.data, name)
        if not os.path.isfile(path) and self.generate:
            with self.lock:
                if not os.path.isfile(path):
                    loans.main([match.group(1), "--out", self.data, "--loans", str(self.generate)])
        try:
            with open(path, "rb") as f:
                data = f.read()
            return data, os.stat(path).st_mtime
        except FileNotFoundError:
            return None


def handler(site):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "loan-site/1"

        def log_message(self, format, *args):
            sys.stdout.write("%s %s\n" % (self.log_date_time_string(), format % args))
            sys.stdout.flush()

        def reply(self, status, body=b"", headers=()):
            site.count(self.command, urllib.parse.urlsplit(self.path).path, status)
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def session(self):
            for part in self.headers.get("Cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == COOKIE and value in site.sessions:
                    return value
            return None

        def do_POST(self):
            path = urllib.parse.urlsplit(self.path).path
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            if path != LOGIN_PATH:
                return self.reply(404, b"not found\n")
            user = form.get("username", [""])[0]
            password = form.get("password", [""])[0]
            if not site.password or user != site.user or not secrets.compare_digest(password, site.password):
                return self.reply(401, b"wrong user name or password\n", [("Content-Type", "text/plain")])
            token = secrets.token_hex(16)
            site.sessions.add(token)
            self.reply(302, b"", [("Location", FILES_PREFIX), ("Set-Cookie", f"{COOKIE}={token}; Path=/; HttpOnly")])

        def do_GET(self):
            path = urllib.parse.urlsplit(self.path).path
            if path == "/stats":
                return self.reply(200, json.dumps(site.stats, sort_keys=True).encode(), [("Content-Type", "application/json")])
            if path.rstrip("/") == FILES_PREFIX.rstrip("/"):
                if not self.session():
                    return self.reply(401, b"log in first\n")
                names = sorted(n for n in os.listdir(site.data) if FILE_NAME.match(n))
                return self.reply(200, ("\n".join(names) + "\n").encode(), [("Content-Type", "text/plain")])
            if not path.startswith(FILES_PREFIX):
                return self.reply(404, b"not found\n")
            if not self.session():
                return self.reply(401, b"log in first\n", [("Content-Type", "text/plain")])
            found = site.file(path[len(FILES_PREFIX):])
            if found is None:
                return self.reply(404, b"no such file\n")
            data, mtime = found
            etag = '"%s"' % hashlib.sha256(data).hexdigest()
            common = [
                ("ETag", etag),
                ("Last-Modified", email.utils.formatdate(mtime, usegmt=True)),
                ("Accept-Ranges", "bytes"),
                ("Content-Type", "application/zip"),
            ]
            if etag in [t.strip() for t in self.headers.get("If-None-Match", "").split(",")]:
                return self.reply(304, b"", [h for h in common if h[0] != "Content-Type"])
            ranged = re.match(r"^bytes=(\d+)-$", self.headers.get("Range", ""))
            if_range = self.headers.get("If-Range")
            if ranged and (if_range is None or if_range == etag):
                start = int(ranged.group(1))
                if start >= len(data):
                    return self.reply(416, b"", [("Content-Range", f"bytes */{len(data)}")])
                return self.reply(206, data[start:], common + [("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")])
            self.reply(200, data, common)

        do_HEAD = do_GET

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the folder of historical_data_YYYYQn.zip files")
    parser.add_argument("--port", type=int, default=0, help="the port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--user", default="loans-team", help="the user name the login form accepts")
    parser.add_argument("--generate", type=int, default=0, metavar="LOANS", help="generate missing quarters with LOANS loans")
    parser.add_argument("--until-stdin-closes", action="store_true", help="exit when standard input closes")
    args = parser.parse_args()
    password = os.environ.get("LOANS_SITE_PASSWORD", "")
    if not password:
        print("loan_site.py: set LOANS_SITE_PASSWORD to the password the login form accepts", file=sys.stderr)
        return 2
    os.makedirs(args.data, exist_ok=True)
    site = Site(args.data, args.user, password, args.generate)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(site))
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if args.until_stdin_closes:
        sys.stdin.buffer.read()
        server.shutdown()
        return 0
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
