#!/usr/bin/env python3
"""The HTTP server of the e2e adaptive scenarios (tests/e2e/run).

Serves one file, on 127.0.0.1 only, at /<its name>, with single-range
requests (`Range: bytes=a-b` and `bytes=a-`, answered 206 with
Content-Range). Appends one line per request to --log: the Range asked, the
status, and the body bytes it sent, so that the scenario can count what the
guest fetched.

With --stall-at FILE, the power-cut case: requests for the data member's
frames (those starting at or after the data member's content: requests
for the head of the artifact are served as usual) wait until FILE exists and holds a byte
count N, written by the scenario once the guest has printed its fetch plan;
after N frame bytes the server stops sending, holds every connection open
(it never closes them itself), touches --stalled, and lets the scenario cut
the guest's power.

Bounded: it exits after --lifetime seconds whatever happens, and each wait
is bounded by that lifetime.
"""

import argparse
import http.server
import os
import re
import sys
import tarfile
import threading
import time

PIECE = 16 * 1024


def data_start(path):
    """Offset in the .mender file of the first byte of the data member's
    content (docs/artifacts.md, "Chunked rootfs-image artifacts": the outer
    tar is uncompressed, so frame offsets follow from this one)."""
    with tarfile.open(path, "r:") as t:
        for m in t:
            if m.name.startswith("data/"):
                return m.offset_data
    sys.exit(f"{path}: no data/ member")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--file", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--lifetime", type=float, default=600)
    p.add_argument("--stall-at")
    p.add_argument("--stalled")
    a = p.parse_args()

    with open(a.file, "rb") as f:
        body = f.read()
    name = "/" + os.path.basename(a.file)
    frames_from = data_start(a.file)
    deadline = time.monotonic() + a.lifetime
    lock = threading.Lock()
    state = {"requests": 0, "frame_bytes": 0, "stalled": False}
    log = open(a.log, "a", buffering=1)

    def note(line):
        with lock:
            log.write(line + "\n")

    def stall_limit():
        """The frame bytes to send before stalling (None: never stall).
        Waits, bounded by the lifetime, for the scenario's byte count."""
        if not a.stall_at:
            return None
        while time.monotonic() < deadline:
            try:
                with open(a.stall_at) as f:
                    text = f.read().strip()
                if text:
                    return int(text)
            except FileNotFoundError:
                pass
            time.sleep(0.1)
        return 0

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self.serve(False)

        def do_GET(self):
            self.serve(True)

        def serve(self, with_body):
            with lock:
                state["requests"] += 1
                n = state["requests"]
            if self.path != name:
                self.send_error(404)
                note(f"request {n} {self.command} {self.path} status=404 sent=0")
                return
            size = len(body)
            asked = self.headers.get("Range")
            start, end, status = 0, size - 1, 200
            if asked is not None:
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", asked.strip())
                if m:  # anything else (several ranges, suffixes) gets 200
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                    if start >= size or end < start:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        note(f"request {n} {self.command} range={asked} status=416 sent=0")
                        return
                    status = 206
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            sent = 0
            if with_body:
                limit = stall_limit() if start >= frames_from else None
                pos = start
                try:
                    while pos <= end:
                        piece = min(PIECE, end + 1 - pos)
                        if limit is not None:
                            # Only bytes past the head count toward the stall.
                            frame_part = max(0, pos + piece - max(pos, frames_from))
                            with lock:
                                room = limit - state["frame_bytes"]
                                if frame_part > room:
                                    piece = max(0, piece - (frame_part - room))
                                    frame_part = room
                                state["frame_bytes"] += max(0, frame_part)
                            if piece <= 0:
                                self.stall(n, asked, sent)
                                return
                        self.wfile.write(body[pos:pos + piece])
                        pos += piece
                        sent += piece
                except (BrokenPipeError, ConnectionResetError):
                    note(f"request {n} {self.command} range={asked} status={status} sent={sent} broken")
                    self.close_connection = True
                    return
            note(f"request {n} {self.command} range={asked} status={status} sent={sent}")

        def stall(self, n, asked, sent):
            """Holds this connection without sending, until the lifetime
            ends (the scenario kills the guest long before)."""
            self.wfile.flush()
            with lock:
                first = not state["stalled"]
                state["stalled"] = True
                frames = state["frame_bytes"]
            note(f"request {n} {self.command} range={asked} stalled sent={sent} frame_bytes={frames}")
            if first and a.stalled:
                open(a.stalled, "w").close()
            while time.monotonic() < deadline:
                time.sleep(0.5)
            self.close_connection = True

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with open(a.port_file + ".tmp", "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.replace(a.port_file + ".tmp", a.port_file)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    while time.monotonic() < deadline:
        time.sleep(0.5)
    server.shutdown()


if __name__ == "__main__":
    main()
