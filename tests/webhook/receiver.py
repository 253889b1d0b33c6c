#!/usr/bin/env python3
"""A webhook receiver for the tests: checks every request with the Standard Webhooks
reference library (`standardwebhooks` on PyPI) and records what it got.

    receiver.py RECORD_FILE

Listens on 127.0.0.1 on a free port and prints the port on its first line of output.
Each request becomes one JSON line in RECORD_FILE:
{"webhook_id", "webhook_timestamp", "verified", "error", "status", "body"}.
A request that fails verification is answered 401. Of the verified ones, the first
RECEIVER_FAIL_FIRST (default 0) are answered 503, to make the sender retry; the rest 204.
The secret comes from the environment variable RECEIVER_SECRET (whsec_...).
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

SECRET = os.environ["RECEIVER_SECRET"]
FAIL_FIRST = int(os.environ.get("RECEIVER_FAIL_FIRST", "0"))
RECORD = sys.argv[1]
LOCK = threading.Lock()
VERIFIED = 0


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global VERIFIED
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        headers = {name.lower(): value for name, value in self.headers.items()}
        error = None
        try:
            Webhook(SECRET).verify(body, headers)
            verified = True
        except Exception as err:  # any refusal is recorded with its reason
            verified = False
            error = f"{type(err).__name__}: {err}"
        with LOCK:
            if not verified:
                status = 401
            else:
                VERIFIED += 1
                status = 503 if VERIFIED <= FAIL_FIRST else 204
            record = {
                "webhook_id": headers.get("webhook-id"),
                "webhook_timestamp": headers.get("webhook-timestamp"),
                "verified": verified,
                "error": error,
                "status": status,
                "body": body.decode("utf-8", "replace"),
            }
            with open(RECORD, "a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
