#!/usr/bin/env python3
"""The rehearsal's users: a steady load through the domain, for the rehearsal's whole length.

  load.py --edge PORT --out FILE [--rate N]

scripts/rehearse starts it once the edge (the domain as the emulated Route 53 resolves it)
answers, and stops it with the rest. It sends about N requests a second (default 4), one at a
time, alternating:

  a write  POST /api/notes with a token of its own; the app inserts a note (a table with a
           primary key) and a page view in one statement and answers {"id": ...}
  a read   GET /api/notes/<id> of a note acknowledged earlier (or GET /health before any)

and appends one JSON line per request to FILE:

  {"t": <unix time it was sent>, "took": <seconds>, "kind": "write"|"read",
   "outcome": "acked"|"read"|"missing"|"refused"|"failed", "status": <HTTP status or null>,
   "side": "heroku"|"aws"|null, "id": <note id, acked writes>, "token": <the write's token>}

"acked" is a write the app acknowledged with an id: it must be on RDS after the cutover, once.
"refused" is a 503 from Heroku's maintenance mode (the write freeze): nothing was written.
"failed" is anything else (no healthy target, a 5xx, no answer): the write may or may not have
happened, so it is not counted either way. "missing" is a read of an acknowledged note that the
side answering did not have. `side` is which side answered, by the edge's X-Rehearsal-Via.
"""

import argparse
import http.client
import json
import random
import signal
import sys
import time
import uuid


def side_of(via: str):
    if via.startswith("heroku"):
        return "heroku"
    if via.startswith("alb"):
        return "aws"
    return None


def request(port: int, method: str, path: str, body=None):
    """(status, headers, body text), or (None, {}, error text) when nothing answered."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        headers = {"Host": "api.example.com", "User-Agent": "rehearsal-load"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        result = response.status, {k.lower(): v for k, v in response.getheaders()}, text
        connection.close()
        return result
    except (OSError, http.client.HTTPException) as error:
        return None, {}, f"{type(error).__name__}: {error}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edge", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rate", type=float, default=4.0)
    args = parser.parse_args()
    if args.rate <= 0:
        return 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    out = open(args.out, "a", buffering=1)
    acked = []
    interval = 1.0 / args.rate
    n = 0
    print(f"[load] {args.rate:g} requests/s through 127.0.0.1:{args.edge} (api.example.com), recorded in {args.out}", flush=True)
    next_at = time.monotonic()
    while not stop:
        n += 1
        sent = time.time()
        started = time.monotonic()
        if n % 2 == 1:
            token = uuid.uuid4().hex
            status, headers, text = request(args.edge, "POST", "/api/notes", {"body": f"rehearsal note {token}", "token": token})
            line = {"t": sent, "kind": "write", "token": token, "status": status}
            if status == 200:
                try:
                    line["id"] = int(json.loads(text)["id"])
                    line["outcome"] = "acked"
                    acked.append(line["id"])
                except (ValueError, KeyError, TypeError):
                    line["outcome"] = "failed"
                    line["error"] = text[:200]
            elif status == 503 and "maintenance" in text.lower():
                line["outcome"] = "refused"
            else:
                line["outcome"] = "failed"
                line["error"] = text[:200]
        else:
            if acked:
                note = random.choice(acked)
                status, headers, text = request(args.edge, "GET", f"/api/notes/{note}")
                line = {"t": sent, "kind": "read", "id": note, "status": status}
            else:
                status, headers, text = request(args.edge, "GET", "/health")
                line = {"t": sent, "kind": "read", "status": status}
            if status == 200:
                line["outcome"] = "read"
            elif status == 404 and acked:
                line["outcome"] = "missing"
            elif status == 503 and "maintenance" in text.lower():
                line["outcome"] = "refused"
            else:
                line["outcome"] = "failed"
                line["error"] = text[:200]
        line["side"] = side_of(headers.get("x-rehearsal-via", ""))
        line["took"] = round(time.monotonic() - started, 4)
        out.write(json.dumps(line) + "\n")
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            next_at = time.monotonic()
    print(f"[load] stopped after {n} requests", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
