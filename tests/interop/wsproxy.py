#!/usr/bin/env python3
"""A logging WebSocket proxy: sits between a client and a gateway and prints
every frame both ways. Standard library only.

    python3 tests/interop/wsproxy.py --upstream ws://127.0.0.1:18789 [--listen 127.0.0.1:0]
        [--xff 203.0.113.7] [--log FILE] [--max-text N]

The first line on stdout is `listening HOST:PORT` (so `--listen 127.0.0.1:0`
works: read the port from it). Then one line per event:

    17:02:03.123 #1 open 127.0.0.1:51234 -> 127.0.0.1:18789 GET /ws
    17:02:03.130 #1 S>C 101 Switching Protocols
    17:02:03.131 #1 S>C text {"type":"event","event":"connect.challenge",...}
    17:02:03.140 #1 C>S text {"type":"req","id":"1","method":"connect",...}
    17:02:33.000 #1 S>C ping 0B
    17:02:40.000 #1 C>S close 1000 "bye"

How it relays: the client's HTTP upgrade request is forwarded upstream with
`Host` rewritten to the upstream address (`--keep-host` keeps the client's),
`Sec-WebSocket-Extensions` removed (so no permessage-deflate: frames stay
readable), and, with `--xff ADDR`, an `X-Forwarded-For: ADDR` header added
(`--real-ip`, `--forwarded` add `X-Real-IP` / `Forwarded: for=`). The upstream's
answer goes back to the client unchanged, and from then on bytes are copied
both ways as they are, untouched: the proxy only decodes a copy for the log.
So close codes, pings and timing are the real ones.

Uses: watching the wire while debugging goclaw against real OpenClaw clients
or gateways; making a client appear non-local (connect the proxy upstream to
this machine's own non-loopback address, or add `--xff`); the interop harness
(tests/interop/openclaw.py) runs its node connections through it and shows
the frames when a check fails.
"""

import argparse
import datetime
import os
import signal
import socket
import struct
import sys
import threading
import urllib.parse

MAX_HEAD = 64 * 1024
OPCODES = {0x0: "cont", 0x1: "text", 0x2: "binary", 0x8: "close", 0x9: "ping", 0xA: "pong"}


class Log:
    def __init__(self, path, max_text):
        self.lock = threading.Lock()
        self.max_text = max_text
        self.out = open(path, "a", buffering=1, encoding="utf-8") if path else sys.stdout

    def line(self, conn, text):
        now = datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3]
        with self.lock:
            self.out.write(f"{now} #{conn} {text}\n")
            self.out.flush()


class FrameDecoder:
    """Decodes a copy of one direction's bytes into frames, for the log only."""

    def __init__(self, log, conn, direction):
        self.log, self.conn, self.direction = log, conn, direction
        self.buf = bytearray()
        self.message = None  # (opcode, bytearray) of a fragmented message
        self.broken = False

    def feed(self, data):
        if self.broken:
            return
        self.buf += data
        while True:
            frame = self._take()
            if frame is None:
                return
            self._show(*frame)

    def _take(self):
        b = self.buf
        if len(b) < 2:
            return None
        fin, opcode = b[0] & 0x80, b[0] & 0x0F
        masked, length = b[1] & 0x80, b[1] & 0x7F
        pos = 2
        if length == 126:
            if len(b) < 4:
                return None
            length = struct.unpack(">H", b[2:4])[0]
            pos = 4
        elif length == 127:
            if len(b) < 10:
                return None
            length = struct.unpack(">Q", b[2:10])[0]
            pos = 10
        if length > 256 * 1024 * 1024:
            self.broken = True
            self.log.line(self.conn, f"{self.direction} (frame of {length} bytes: not decoding any further)")
            return None
        key = None
        if masked:
            if len(b) < pos + 4:
                return None
            key = bytes(b[pos : pos + 4])
            pos += 4
        if len(b) < pos + length:
            return None
        payload = bytearray(b[pos : pos + length])
        del b[: pos + length]
        if key:
            for i in range(len(payload)):
                payload[i] ^= key[i % 4]
        return bool(fin), opcode, bytes(payload)

    def _show(self, fin, opcode, payload):
        if opcode in (0x1, 0x2) and not fin:
            self.message = (opcode, bytearray(payload))
            return
        if opcode == 0x0:
            if self.message is None:
                self.log.line(self.conn, f"{self.direction} stray continuation {len(payload)}B")
                return
            self.message[1].extend(payload)
            if not fin:
                return
            opcode, payload = self.message[0], bytes(self.message[1])
            self.message = None
        name = OPCODES.get(opcode, f"opcode{opcode}")
        if opcode == 0x1:
            text = payload.decode("utf-8", "replace")
            if self.log.max_text and len(text) > self.log.max_text:
                text = text[: self.log.max_text] + f"... ({len(payload)}B)"
            self.log.line(self.conn, f"{self.direction} text {text}")
        elif opcode == 0x8:
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
            reason = payload[2:].decode("utf-8", "replace")
            self.log.line(self.conn, f"{self.direction} close {code if code is not None else '-'} {reason!r}")
        else:
            self.log.line(self.conn, f"{self.direction} {name} {len(payload)}B")


class BodyLog:
    """Logs the start of an HTTP body (a refused upgrade: 403, 404, 429...)."""

    def __init__(self, log, conn):
        self.log, self.conn, self.seen = log, conn, 0

    def feed(self, data):
        if data and self.seen < 300:
            self.log.line(self.conn, "S>C body " + repr(data[: 300 - self.seen].decode("utf-8", "replace")))
        self.seen += len(data)


def read_head(sock):
    """Reads an HTTP head (up to the blank line); returns (head, rest)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the end of the HTTP head")
        data += chunk
        if len(data) > MAX_HEAD:
            raise ConnectionError("HTTP head too large")
    head, rest = data.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def pump(src, dst, decoder, done):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            # Log first, then forward: the answer to a frame can then never be
            # logged before the frame itself.
            decoder.feed(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        done.release()


def handle(client, peer, conn, args, upstream, log):
    up = None
    try:
        client.settimeout(args.handshake_timeout)
        head, rest = read_head(client)
        lines = head.split("\r\n")
        request_line, headers = lines[0], []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            lname = name.strip().lower()
            if lname == "sec-websocket-extensions":
                continue
            if lname == "host" and not args.keep_host:
                value = " " + upstream.netloc
            headers.append(f"{name}:{value}")
        if args.xff:
            headers.append(f"X-Forwarded-For: {args.xff}")
        if args.real_ip:
            headers.append(f"X-Real-IP: {args.real_ip}")
        if args.forwarded:
            headers.append(f"Forwarded: for={args.forwarded}")
        method, path, version = (request_line.split(" ") + ["", "", ""])[:3]
        if upstream.path not in ("", "/"):
            path = upstream.path
        host, port = upstream.hostname, upstream.port or 80
        up = socket.create_connection(
            (host, port),
            timeout=args.handshake_timeout,
            source_address=(args.source, 0) if args.source else None,
        )
        src_addr = "%s:%d" % up.getsockname()[:2]
        extra = f" xff={args.xff}" if args.xff else ""
        log.line(conn, f"open {peer[0]}:{peer[1]} -> {host}:{port} from {src_addr} {method} {path}{extra}")
        up.sendall(("\r\n".join([f"{method} {path} {version}"] + headers) + "\r\n\r\n").encode("latin-1") + rest)
        response, rest_up = read_head(up)
        status_line = response.split("\r\n", 1)[0]
        log.line(conn, "S>C " + status_line.split(" ", 1)[-1])
        client.sendall(response.encode("latin-1") + b"\r\n\r\n" + rest_up)
        client.settimeout(None)
        up.settimeout(None)
        to_server = FrameDecoder(log, conn, "C>S")
        to_client = FrameDecoder(log, conn, "S>C")
        if status_line.split(" ")[1:2] != ["101"]:
            # Not upgraded: what follows is an HTTP body, not frames.
            to_client = BodyLog(log, conn)
            to_server.broken = True
        to_client.feed(rest_up)
        done = threading.Semaphore(0)
        threading.Thread(target=pump, args=(client, up, to_server, done), daemon=True).start()
        threading.Thread(target=pump, args=(up, client, to_client, done), daemon=True).start()
        done.acquire()
        done.acquire()
        log.line(conn, "end")
    except (OSError, ConnectionError) as e:
        log.line(conn, f"error {type(e).__name__}: {e}")
    finally:
        for s in (client, up):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to accept clients on (default 127.0.0.1:0)")
    ap.add_argument("--upstream", required=True, help="ws://HOST:PORT[/PATH] of the gateway")
    ap.add_argument("--xff", help="add X-Forwarded-For: ADDR to the upgrade request upstream")
    ap.add_argument("--real-ip", help="add X-Real-IP: ADDR upstream")
    ap.add_argument("--forwarded", help="add Forwarded: for=ADDR upstream")
    ap.add_argument("--keep-host", action="store_true", help="forward the client's Host header unchanged")
    ap.add_argument("--source", help="bind the upstream socket to this local address")
    ap.add_argument("--log", help="append the frame log to FILE instead of stdout")
    ap.add_argument("--max-text", type=int, default=0, help="cut text frames longer than N characters in the log")
    ap.add_argument("--handshake-timeout", type=float, default=15.0)
    ap.add_argument("--exit-after", type=float, default=0, help="exit after this many seconds (0: never)")
    args = ap.parse_args()

    upstream = urllib.parse.urlsplit(args.upstream)
    if upstream.scheme != "ws" or not upstream.hostname:
        ap.error("--upstream must be ws://HOST:PORT[/PATH] (wss is not supported)")
    lhost, _, lport = args.listen.rpartition(":")
    log = Log(args.log, args.max_text)

    server = socket.socket(socket.AF_INET6 if ":" in lhost.strip("[]") else socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((lhost.strip("[]"), int(lport)))
    server.listen(64)
    print("listening %s:%d" % server.getsockname()[:2], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if args.exit_after:
        threading.Timer(args.exit_after, lambda: os._exit(0)).start()
    conn = 0
    try:
        while True:
            client, peer = server.accept()
            conn += 1
            threading.Thread(target=handle, args=(client, peer, conn, args, upstream, log), daemon=True).start()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
