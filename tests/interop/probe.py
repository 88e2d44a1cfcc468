#!/usr/bin/env python3
"""Probes a running goclaw binary from outside the process, with clients that
share no code with it (Python `websockets` and raw sockets): wrong token,
oversized message, silent client, per-IP rate limit, connection cap,
slowloris, message flood, SIGTERM with clients connected.

    pip install websockets
    python3 tests/interop/probe.py target/release/goclaw

Each probe starts its own gateway with the flags it needs on a free loopback
port and prints one line; any failed expectation exits non-zero.
"""

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import websockets

TOKEN = "probe-token"
BINARY = sys.argv[1] if len(sys.argv) > 1 else "target/release/goclaw"


@contextlib.contextmanager
def gateway(*flags):
    process = subprocess.Popen([BINARY, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--token", TOKEN, *flags],
                               stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:
            if "listening" in line:
                host, port = next(w for w in line.split() if w.startswith("addr=")).split("=", 1)[1].rsplit(":", 1)
                break
        else:
            raise SystemExit("goclaw exited before listening")
        yield process, (host, int(port))
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def url(addr):
    return f"ws://{addr[0]}:{addr[1]}/ws"


def connect_frame(token=TOKEN, role="operator"):
    params = {"minProtocol": 3, "maxProtocol": 3, "role": role, "auth": {"token": token}}
    if role == "node":
        params["client"] = {"id": "probe-node"}
    return json.dumps({"type": "req", "id": "c", "method": "connect", "params": params})


async def connected(addr, **connect_args):
    ws = await websockets.connect(url(addr), ping_interval=None, **connect_args)
    await ws.recv()  # challenge
    await ws.send(connect_frame())
    hello = json.loads(await ws.recv())
    assert hello["ok"], hello
    return ws


async def close_code(ws, timeout=10):
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed:
        return ws.close_code, ws.close_reason


def http(addr, request):
    """Sends a request; returns the response head."""
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data and (chunk := s.recv(4096)):
            data += chunk
    return data.decode(errors="replace")


UPGRADE = ("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def check(name, condition, detail):
    print(f"{'ok  ' if condition else 'FAIL'} {name}: {detail}")
    if not condition:
        raise SystemExit(1)


def reason(error):
    """goclaw's own reason: `error.details.code` (the top-level `code` is the
    real OpenClaw gateway's for the same situation, SPEC §4)."""
    return (error.get("details") or {}).get("code")


async def probe_wrong_token(addr):
    wrong = "wrong-probe-token-5f1c"
    async with websockets.connect(url(addr)) as ws:
        await ws.recv()
        await ws.send(connect_frame(token=wrong))
        text = await ws.recv()
        error = json.loads(text)["error"]
        code, _ = await close_code(ws)
    # OpenClaw answers a token mismatch with INVALID_REQUEST; goclaw's reason
    # is in details.code. The message is short and never echoes the token.
    check("wrong token", error["code"] == "INVALID_REQUEST" and reason(error) == "UNAUTHORIZED" and code == 1008
          and len(error["message"].encode()) <= 256 and wrong not in text,
          f"{error['code']} ({reason(error)}), {len(error['message'].encode())}-byte message without the token, "
          f"then close {code}")


async def probe_oversized(addr):
    ws = await connected(addr, max_size=None)
    await ws.send("x" * 4097)
    code, reason = await close_code(ws)
    check("oversized message (limit 4096)", code == 1009, f"close {code} {reason!r}")


def masked(payload, opcode=0x1):
    """A client frame (RFC 6455 §5.2): final, masked."""
    mask = os.urandom(4)
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return bytes([0x80 | opcode]) + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data):
    """Splits unmasked server frames: [(opcode, payload)]."""
    frames = []
    while len(data) >= 2:
        n, at = data[1] & 0x7F, 2
        if n == 126:
            n, at = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, at = int.from_bytes(data[2:10], "big"), 10
        frames.append((data[0] & 0x0F, data[at:at + n]))
        data = data[at + n:]
    return frames


def probe_silent(addr):
    # Raw socket: completes connect, then never sends a byte (so no pongs).
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(UPGRADE.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        s.sendall(masked(connect_frame().encode()))
        started = time.monotonic()
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        elapsed = time.monotonic() - started
    frames = server_frames(data)
    pings = sum(1 for op, _ in frames if op == 0x9)
    close = next((p for op, p in frames if op == 0x8), b"")
    code = int.from_bytes(close[:2], "big") if close else None
    check("silent client (pong wait 1s, ping 300ms)", code == 1008 and 0.9 < elapsed < 3,
          f"{pings} pings unanswered, close {code} {close[2:].decode()!r} after {elapsed:.1f}s")


async def probe_flood(addr):
    ws = await connected(addr)
    limited, first_limited = 0, None
    for i in range(30):
        await ws.send(json.dumps({"type": "req", "id": str(i), "method": "health"}))
        if reason(json.loads(await ws.recv()).get("error", {})) == "RATE_LIMITED":
            limited += 1
            first_limited = first_limited or time.monotonic()
    # The gateway closes a client that has been flooding for 10 s, counted
    # from its first refusal; keep flooding past that (at most 15 s) rather
    # than stop right at it, which raced the close by milliseconds.
    code = None
    while code is None and first_limited and time.monotonic() - first_limited < 15:
        try:
            await ws.send(json.dumps({"type": "req", "id": "f", "method": "health"}))
            await ws.recv()
        except websockets.ConnectionClosed:
            code = ws.close_code
    flooded = time.monotonic() - first_limited if first_limited else 0
    check("message flood (5/s, burst 5)", limited >= 20 and code == 1008 and 9.5 < flooded < 12,
          f"{limited}/30 RATE_LIMITED, then close {code} after {flooded:.1f}s of flooding")


def probe_rate_limit(addr):
    answers = [http(addr, UPGRADE).split("\r\n")[0] for _ in range(4)]
    limited = http(addr, UPGRADE)
    retry = next((l for l in limited.split("\r\n") if l.startswith("Retry-After:")), None)
    check("per-IP rate limit (1/s, burst 3)", answers[3].startswith("HTTP/1.1 429") and retry is not None,
          f"{[a.split(' ', 2)[1] for a in answers]}, {retry}")


async def probe_cap(addr):
    holders = [await connected(addr) for _ in range(2)]
    answer = http(addr, UPGRADE).split("\r\n")[0]
    for ws in holders:
        await ws.close()
    check("connection cap (2)", answer.startswith("HTTP/1.1 503"), answer)


def probe_slowloris(addr):
    results = []
    for stage, payload in (("silent", b""), ("half request", UPGRADE.encode()[:20]),
                           ("upgraded, no connect", UPGRADE.encode())):
        with socket.create_connection(addr) as s:
            s.sendall(payload)
            started = time.monotonic()
            s.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                while s.recv(4096):
                    pass
            results.append((stage, time.monotonic() - started))
    ok = all(0.4 < t < 3 for _, t in results)
    check("slowloris (handshake timeout 500ms)", ok, ", ".join(f"{s} closed after {t:.2f}s" for s, t in results))


async def probe_sigterm(process, addr):
    clients = [await connected(addr) for _ in range(10)]
    process.send_signal(signal.SIGTERM)
    got = []
    for ws in clients:
        events = []
        with contextlib.suppress(websockets.ConnectionClosed):
            async for text in ws:
                events.append(json.loads(text).get("event"))
        got.append(("shutdown" in events, ws.close_code))
    status = process.wait(timeout=10)
    check("SIGTERM with 10 clients", all(g == (True, 1001) for g in got) and status == 0,
          f"{sum(s for s, _ in got)}/10 got the shutdown event, closes {sorted({c for _, c in got})}, exit {status}")


async def main():
    with gateway() as (_, addr):
        await probe_wrong_token(addr)
    with gateway("--max-message-size", "4096") as (_, addr):
        await probe_oversized(addr)
    with gateway("--pong-wait", "1s", "--ping-period", "300ms") as (_, addr):
        probe_silent(addr)
    with gateway("--message-rate", "5", "--message-burst", "5") as (_, addr):
        await probe_flood(addr)
    with gateway("--rate-limit", "1", "--rate-burst", "3") as (_, addr):
        probe_rate_limit(addr)
    with gateway("--max-connections", "2") as (_, addr):
        await probe_cap(addr)
    with gateway("--handshake-timeout", "500ms") as (_, addr):
        probe_slowloris(addr)
    with gateway() as (process, addr):
        await probe_sigterm(process, addr)


if __name__ == "__main__":
    asyncio.run(main())
