#!/usr/bin/env python3
"""Issue 11's attacks, run from outside the process against a goclaw binary,
with one table at the end: the figures of items 1, 4, 6, 7 and 8 (node.list
size and memory, a 500 KB string in connect, idle sockets on the metrics
port, pre-auth slot exhaustion, an unsolicited pong flood) and what the
binary does for items 2, 3, 5 and 9-15 ("item 0"). About three minutes.

    pip install websockets
    python3 tests/interop/attacks.py target/release/goclaw
    python3 tests/interop/attacks.py target/release/goclaw --only 4,8

Each item starts its own gateway on free loopback ports with a scratch
--state-dir, stops it with SIGTERM (SIGKILL if it lingers) and joins every
thread and client it started; every loop is bounded. Only 127.0.0.0/8 is
used: the many source addresses are 127.0.0.x, which Linux routes to
loopback without any setup.

It also runs against the binary of an older commit (no --allow-token-nodes,
errors with goclaw's own code at the top level): what differs is detected
from `goclaw serve --help` and from the answers, so the same command gives
the "before" and the "after" of docs/RELIABILITY.md.
"""

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import selectors
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import websockets

TOKEN = "attacks-token"
CLK_TCK = os.sysconf("SC_CLK_TCK")
UPGRADE = ("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
ROWS = []  # (item, figure, value)


def row(item, figure, value):
    ROWS.append((item, figure, str(value)))
    print(f"  [{item}] {figure}: {value}", flush=True)


# ---------------------------------------------------------------- the gateway

class Gateway:
    """One goclaw process: its addresses, its stderr lines (drained by a
    thread, so a chatty gateway never blocks on a full pipe) and its /proc."""

    def __init__(self, binary, *flags):
        self.state_dir = tempfile.mkdtemp(prefix="goclaw-attacks-")
        self.lines = []  # (monotonic time, raw bytes of one stderr line)
        self.process = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
             "--token", TOKEN, "--state-dir", self.state_dir, *flags],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = self.process.pid
        listening = threading.Event()
        self.fields = {}

        def drain():
            for line in self.process.stderr:
                self.lines.append((time.monotonic(), line))
                if not listening.is_set() and b" listening " in line:
                    self.fields = dict(w.split("=", 1) for w in line.decode(errors="replace").split() if "=" in w)
                    listening.set()
            listening.set()

        self.reader = threading.Thread(target=drain, daemon=True)
        self.reader.start()
        if not listening.wait(10) or "addr" not in self.fields:
            self.stop()
            raise SystemExit(f"goclaw did not start: {b''.join(l for _, l in self.lines)[-500:]!r}")
        host, port = self.fields["addr"].rsplit(":", 1)
        self.addr = (host, int(port))
        self.url = f"ws://{host}:{port}/ws"
        self.metrics_addr = self.fields["metrics_addr"]

    def stop(self):
        """SIGTERM, then SIGKILL after 15 s; waits for the process and its stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reader.join(timeout=5)
        return self.process.returncode

    def cleanup(self):
        self.stop()
        for root, dirs, files in os.walk(self.state_dir, topdown=False):
            for name in files:
                os.unlink(os.path.join(root, name))
            for name in dirs:
                os.rmdir(os.path.join(root, name))
        os.rmdir(self.state_dir)

    def status(self, field):
        """A /proc/PID/status figure in KiB (VmRSS, VmHWM) or a count (Threads)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return None

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def metric(self, series):
        """The value of one series of /metrics, e.g. 'goclaw_errors_total{type="rate_limit"}'."""
        with urllib.request.urlopen(f"http://{self.metrics_addr}/metrics", timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(series + " "):
                    return float(line.split()[-1])
        return None


@contextlib.contextmanager
def gateway(binary, *flags):
    gw = Gateway(binary, *flags)
    try:
        yield gw
    finally:
        gw.cleanup()


def has_flag(binary, flag):
    result = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=10)
    return flag in result.stdout + result.stderr


def reason(error):
    """goclaw's reason: `details.code` on this round's wire, the top-level
    `code` on the older one."""
    return (error.get("details") or {}).get("code") or error.get("code")


def kib(n):
    return f"{n:,} KiB" if n is not None else "n/a"


def connect_params(role, **extra):
    params = {"minProtocol": 3, "maxProtocol": 3, "role": role, "auth": {"token": TOKEN}}
    params.update(extra)
    return params


async def handshake(url, params, source="127.0.0.1", timeout=10):
    """Opens a connection from `source`, sends `connect`; returns (ws, answer)."""
    ws = await websockets.connect(url, max_size=None, ping_interval=None, open_timeout=timeout,
                                  local_addr=(source, 0))
    await asyncio.wait_for(ws.recv(), timeout)  # connect.challenge
    await ws.send(json.dumps({"type": "req", "id": "c", "method": "connect", "params": params}))
    return ws, json.loads(await asyncio.wait_for(ws.recv(), timeout))


# ------------------------------------------- item 1: a node.list of 300 big nodes

NODES = 300
COMMAND_BYTES = 128
OPERATORS = 10


def commands(count):
    return [f"c{i:03d}." + "x" * (COMMAND_BYTES - 5) for i in range(count)]


def node_params(i, count):
    return connect_params("node", client={"id": f"attack-node-{i:03d}", "displayName": f"attack node {i}",
                                          "version": "1.0.0", "platform": "linux", "mode": "node"},
                          commands=commands(count))


async def try_node(url, count):
    ws, answer = await handshake(url, node_params(999, count))
    await ws.close()
    return answer


async def list_all_pages(url, source):
    """One operator following node.list's pages; returns (frame sizes, nodes seen, maxPayload)."""
    ws, hello = await handshake(url, connect_params("operator"), source=source)
    assert hello["ok"], hello
    sizes, seen, cursor = [], 0, None
    for page in range(1000):
        request = {"type": "req", "id": f"l{page}", "method": "node.list"}
        if cursor:
            request["params"] = {"cursor": cursor}
        await ws.send(json.dumps(request))
        while True:
            text = await asyncio.wait_for(ws.recv(), 60)
            frame = json.loads(text)
            if frame.get("id") == request["id"]:
                break
        sizes.append(len(text.encode()))
        assert frame["ok"], frame
        seen += len(frame["payload"]["nodes"])
        cursor = frame["payload"].get("nextCursor")
        if not cursor:
            break
    await ws.close()
    return sizes, seen, hello["payload"]["policy"]["maxPayload"]


async def item1_async(binary, gw):
    row(1, "RSS at start", kib(gw.status("VmRSS")))
    answer = await try_node(gw.url, 256)
    count = 256
    if not answer["ok"]:
        error = answer["error"]
        row(1, "a node declaring 256 commands of 128 bytes", f"refused: {outcome(answer)} {error['message']!r}")
        low, high = 0, 255  # the largest count of 128-byte commands accepted
        while low < high:
            mid = (low + high + 1) // 2
            if (await try_node(gw.url, mid))["ok"]:
                low = mid
            else:
                high = mid - 1
        count = low
        row(1, "so each node declares instead", f"{count} commands of {COMMAND_BYTES} bytes (the most accepted)")
    else:
        row(1, "a node declaring 256 commands of 128 bytes", "accepted")
    nodes = []
    for start in range(0, NODES, 6):  # under any per-source bound on unauthenticated connections
        batch = await asyncio.gather(*(handshake(gw.url, node_params(i, count))
                                       for i in range(start, min(start + 6, NODES))))
        for ws, hello in batch:
            assert hello["ok"], hello
            nodes.append(ws)
    await asyncio.sleep(1)
    rss_nodes = gw.status("VmRSS")
    row(1, f"RSS with the {NODES} nodes connected", kib(rss_nodes))

    cli = await asyncio.to_thread(
        subprocess.run, [binary, "nodes", "--url", gw.url, "--token", TOKEN],
        capture_output=True, text=True, timeout=60)
    listed = sum(1 for line in cli.stdout.splitlines() if "attack-node-" in line)
    last_error = (cli.stderr.strip().splitlines() or [""])[-1][:120]
    row(1, "`goclaw nodes` (the same binary's CLI)",
        f"exit {cli.returncode}, {listed} nodes printed" + (f", stderr: {last_error!r}" if cli.returncode else ""))

    hwm_nodes = gw.status("VmHWM")
    results = await asyncio.gather(*(list_all_pages(gw.url, f"127.0.0.{200 + i}") for i in range(OPERATORS)))
    rss_listed, hwm = gw.status("VmRSS"), gw.status("VmHWM")
    biggest = max(max(sizes) for sizes, _, _ in results)
    pages = sorted({len(sizes) for sizes, _, _ in results})
    seen = sorted({n for _, n, _ in results})
    max_payload = results[0][2]
    row(1, f"{OPERATORS} operators at once, each reading every page",
        f"{pages} page(s) each, {seen} nodes seen")
    row(1, "biggest frame an operator received",
        f"{biggest:,} bytes ({biggest / max_payload:.2f} x maxPayload {max_payload:,})")
    row(1, f"RSS after the {OPERATORS} lists / peak RSS (VmHWM) before them and after",
        f"{kib(rss_listed)} / {kib(hwm_nodes)} and {kib(hwm)}")
    for ws in nodes:
        await ws.close()
    await asyncio.sleep(2)
    row(1, "RSS 2 s after every client left", kib(gw.status("VmRSS")))


def item1(binary):
    flags = ["--rate-limit", "1000", "--rate-burst", "1000"]
    if has_flag(binary, "--allow-token-nodes"):
        flags.append("--allow-token-nodes")  # the nodes here present no device identity
    with gateway(binary, *flags) as gw:
        asyncio.run(item1_async(binary, gw))


# --------------------------------------- item 4: a 500 KB minProtocol, unauthenticated

BIG = 500_000
BIG_CONNECTS = 20


async def item4_async(gw):
    sizes = []
    for i in range(BIG_CONNECTS):  # each from its own address, as an attacker would
        params = {"minProtocol": "A" * BIG, "maxProtocol": 3, "role": "node", "client": {"id": f"big-{i}"}}
        ws = await websockets.connect(gw.url, max_size=None, ping_interval=None, open_timeout=10,
                                      local_addr=(f"127.0.0.{100 + i}", 0))
        await asyncio.wait_for(ws.recv(), 10)
        await ws.send(json.dumps({"type": "req", "id": "c", "method": "connect", "params": params}))
        text = await asyncio.wait_for(ws.recv(), 10)
        error = json.loads(text)["error"]
        with contextlib.suppress(websockets.ConnectionClosed, asyncio.TimeoutError):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        sizes.append((len(text.encode()), len(error["message"].encode()), error, ws.close_code))
    return sizes


def log_lines(state_dir):
    """Every line of the JSON log, rotated backups (gzip or not) included."""
    lines, logs = [], os.path.join(state_dir, "logs")
    for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
        path = os.path.join(logs, name)
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as f:
            lines.extend(f.read().splitlines())
    return lines, sorted(os.listdir(logs)) if os.path.isdir(logs) else []


def item4(binary):
    with gateway(binary) as gw:
        before = len(gw.lines)
        sizes = asyncio.run(item4_async(gw))
        status = gw.stop()  # flushes the file sink
        console = [line for _, line in gw.lines[before:]]
        file_lines, files = log_lines(gw.state_dir)
    frame, message, error, close = max(sizes, key=lambda s: s[0])
    row(4, f"answer to a {BIG:,}-byte minProtocol (no token)",
        f"{outcome({'error': error})}, {message:,}-byte message in a {frame:,}-byte frame, close {close}")
    row(4, f"biggest console line / console bytes written, {BIG_CONNECTS} connects to exit",
        f"{max(map(len, console), default=0):,} / {sum(map(len, console)):,} bytes")
    row(4, "biggest JSON log line / JSON log bytes, start to exit",
        f"{max(map(len, file_lines), default=0):,} / {sum(len(l) + 1 for l in file_lines):,} bytes "
        f"(files: {', '.join(files) or 'none'})")
    row(4, "gateway exit status on SIGTERM", status)


# ------------------------------------ item 6: four idle sockets on the metrics port

PROBES = 20


def hold_idle(addr, count, stop, reopen, cut):
    """Keeps `count` idle connections open to `addr`; counts those the server
    closes (cut, or refused with an answer) and, if `reopen`, opens a new
    one for each at once."""
    selector = selectors.DefaultSelector()

    def open_one():
        s = socket.create_connection(addr, timeout=5)
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)

    for _ in range(count):
        open_one()
    while not stop.is_set():
        for key, _ in selector.select(timeout=0.05):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data or data.startswith(b"HTTP/"):  # cut, or answered (503): closed
                selector.unregister(s)
                s.close()
                cut[0] += 1
                if reopen:
                    with contextlib.suppress(OSError):
                        open_one()
    for key in list(selector.get_map().values()):
        key.fileobj.close()
    selector.close()


def healthz_under_idle_sockets(binary, reopen):
    with gateway(binary) as gw:
        host, port = gw.metrics_addr.rsplit(":", 1)
        stop, cut = threading.Event(), [0]
        holder = threading.Thread(target=hold_idle, args=((host, int(port)), 4, stop, reopen, cut))
        holder.start()
        try:
            time.sleep(1.5)  # idle for over a second before the first probe
            answers = []
            for _ in range(PROBES):
                started = time.monotonic()
                try:
                    with urllib.request.urlopen(f"http://{gw.metrics_addr}/healthz", timeout=3) as response:
                        answers.append(response.status)
                except urllib.error.HTTPError as e:
                    answers.append(e.code)
                except OSError as e:
                    answers.append(type(e).__name__)
                time.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
        finally:
            stop.set()
            holder.join()
    counts = {a: answers.count(a) for a in answers}
    return (f"{answers.count(200)}/{PROBES} answered 200 ({', '.join(f'{k}: {v}' for k, v in counts.items())}); "
            f"idle sockets closed by the gateway: {cut[0]}")


def item6(binary):
    row(6, f"/healthz, 4 idle sockets opened once and held, {PROBES} probes 0.5 s apart",
        healthz_under_idle_sockets(binary, reopen=False))
    row(6, f"/healthz, the 4 idle sockets reopened as soon as closed, {PROBES} probes 0.5 s apart",
        healthz_under_idle_sockets(binary, reopen=True))


# ------------------------------------------------- item 7: pre-auth slot exhaustion

ATTACK_SOURCES = (40, 30)  # the 40, and 30: 30 x 8 unauthenticated < 300 slots
PER_SOURCE = 16  # the most each attacking address keeps open at once
TRIES = 10


def exhaust(addr, sources, stop, stats):
    """From `sources` addresses 127.0.0.2 onwards, keeps silent connections open (nothing sent, so
    never authenticated), opening new ones at the default per-IP rate
    (5/s, burst 10) whenever one is closed or refused."""
    selector = selectors.DefaultSelector()
    sources = [f"127.0.0.{2 + i}" for i in range(sources)]
    live = {s: 0 for s in sources}
    tokens = {s: 10.0 for s in sources}
    last = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        for source in sources:
            tokens[source] = min(10.0, tokens[source] + (now - last) * 5)
            while live[source] < PER_SOURCE and tokens[source] >= 1:
                tokens[source] -= 1
                s = socket.socket()
                s.setblocking(False)
                s.bind((source, 0))
                with contextlib.suppress(BlockingIOError):
                    s.connect(addr)
                selector.register(s, selectors.EVENT_READ, source)
                live[source] += 1
                stats["opened"] += 1
        last = now
        for key, _ in selector.select(timeout=0.05):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            for code in (b" 429 ", b" 503 "):
                if data.startswith(b"HTTP/1.1") and code in data[:16]:
                    stats[code.strip().decode()] += 1
            selector.unregister(s)
            s.close()
            live[key.data] -= 1
        stats["held"] = sum(live.values())
    for key in list(selector.get_map().values()):
        key.fileobj.close()
    selector.close()


async def legitimate_try(url):
    try:
        ws, hello = await handshake(url, connect_params("operator"), timeout=3)
        await ws.close()
        return "ok" if hello["ok"] else f"refused {reason(hello['error'])}"
    except websockets.InvalidStatus as e:
        return f"HTTP {e.response.status_code}"
    except Exception as e:  # a timeout or a reset is a failure to serve, whatever its type
        return type(e).__name__


def item7(binary):
    for sources in ATTACK_SOURCES:
        slot_exhaustion(binary, sources)


def slot_exhaustion(binary, sources):
    with gateway(binary, "--max-connections", "300") as gw:
        stop = threading.Event()
        stats = {"opened": 0, "429": 0, "503": 0, "held": 0}
        attacker = threading.Thread(target=exhaust, args=(gw.addr, sources, stop, stats))
        attacker.start()
        threads = []
        try:
            time.sleep(3)
            results = []
            for _ in range(TRIES):  # one try every 2 s, about 20 s in all
                started = time.monotonic()
                threads.append(gw.status("Threads"))
                results.append(asyncio.run(legitimate_try(gw.url)))
                time.sleep(max(0.0, 2 - (time.monotonic() - started)))
        finally:
            stop.set()
            attacker.join()
    counts = {r: results.count(r) for r in results}
    row(7, f"legitimate client vs {sources} addresses, --max-connections 300, {TRIES} tries 2 s apart",
        f"{results.count('ok')}/{TRIES} served ({', '.join(f'{k}: {v}' for k, v in counts.items())})")
    row(7, f"{sources} addresses: attacker connections opened / answered 429 / answered 503",
        f"{stats['opened']:,} / {stats['429']:,} / {stats['503']:,}")
    row(7, f"{sources} addresses: gateway threads during the tries (about one per held connection)",
        f"{min(threads)}-{max(threads)}")


# ------------------------------------ item 8: unsolicited pongs before `connect`

FLOODERS = 4
FLOOD_SECONDS = 12  # the gateway is expected to close a flood after 10 s
PONG = bytes([0x8A, 0x80, 1, 2, 3, 4])  # final, masked, empty pong
CHUNK = PONG * 10_922  # 65,532 bytes


def server_close(data):
    """The close frame's (code, reason) in unmasked server frames, if any."""
    while len(data) >= 2:
        n, at = data[1] & 0x7F, 2
        if n == 126:
            n, at = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            n, at = int.from_bytes(data[2:10], "big"), 10
        if len(data) < at + n:
            return None
        if data[0] & 0x0F == 0x8:
            payload = data[at:at + n]
            return (int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None,
                    payload[2:].decode(errors="replace"))
        data = data[at + n:]
    return None


def flood(addr, started, result):
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(UPGRADE.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
        received = head.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in head else b""  # the challenge, maybe
        s.setblocking(False)
        sent, ended, pending = 0, None, memoryview(CHUNK)
        while time.monotonic() - started < FLOOD_SECONDS:
            try:
                n = s.send(pending)  # may take part of a frame: the rest goes next
                sent += n
                pending = pending[n:] or memoryview(CHUNK)
            except BlockingIOError:
                time.sleep(0.0005)
            except OSError as e:
                ended = type(e).__name__
                break
            try:
                data = s.recv(65536)
                if not data:
                    ended = "EOF"
                    break
                received += data
                if server_close(received):
                    break
            except BlockingIOError:
                pass
            except OSError as e:
                ended = type(e).__name__
                break
        elapsed = time.monotonic() - started
        s.settimeout(1)
        with contextlib.suppress(OSError):
            while not server_close(received) and (data := s.recv(65536)):
                received += data
        close = server_close(received)
        result.update(pongs=sent // len(PONG), elapsed=elapsed, close=close, ended=ended)


def item8(binary):
    # A long handshake timeout, so that only a flood rule can end the flood.
    with gateway(binary, "--handshake-timeout", "30s") as gw:
        rate_limit = 'goclaw_errors_total{type="rate_limit"}'
        pongs_in = 'goclaw_messages_total{direction="in",type="pong"}'
        counted = (gw.metric(rate_limit), gw.metric(pongs_in))
        cpu, before = gw.cpu_seconds(), len(gw.lines)
        started = time.monotonic()
        results = [{} for _ in range(FLOODERS)]
        threads = [threading.Thread(target=flood, args=(gw.addr, started, r)) for r in results]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        cpu = gw.cpu_seconds() - cpu
        time.sleep(1)  # the gateway logs a disconnect after the close handshake
        after = (gw.metric(rate_limit), gw.metric(pongs_in))
        logged = [line.decode(errors="replace").strip() for _, line in gw.lines[before:]]
    closes = [r["close"] for r in results]
    row(8, f"{FLOODERS} unauthenticated connections flooding pongs for at most {FLOOD_SECONDS} s",
        f"{sum(r['pongs'] for r in results):,} pongs written in {max(r['elapsed'] for r in results):.1f} s")
    row(8, "pongs the gateway counted (messages_total in/pong)",
        f"{after[1] - counted[1]:,.0f}" if None not in (after[1], counted[1]) else "n/a")
    row(8, "gateway CPU seconds burned (from the flood's start until every flooder had stopped)",
        f"{cpu:.1f} s in {wall:.1f} s")
    row(8, "how each flood ended",
        "; ".join(f"close {c[0]} {c[1]!r} at {r['elapsed']:.1f} s" if c else
                  f"no close ({r['ended'] or 'still open'} at {r['elapsed']:.1f} s)" for c, r in zip(closes, results)))
    row(8, 'goclaw_errors_total{type="rate_limit"} added',
        f"{after[0] - counted[0]:,.0f}" if None not in (after[0], counted[0]) else "n/a")
    reasons = sorted({line.split('reason="', 1)[1].split('"', 1)[0] for line in logged if 'reason="' in line})
    row(8, "console lines from the flood's start to 1 s after it ended",
        f"{len(logged)}" + (f", reasons: {', '.join(repr(r) for r in reasons)}" if reasons else ""))



# ------------------------------------------- the other items: one outcome each
#
# Items 2, 3, 5 and 9-15 are not figures but behaviours: each check below
# reports what the binary did, without asserting, so the same command
# describes an older binary too. Item 16 (a race inside one process) and
# item 17 (memory given back after a burst) are not checked here: see
# docs/RELIABILITY.md.

def node_flags(binary):
    return ["--allow-token-nodes"] if has_flag(binary, "--allow-token-nodes") else []


async def recv_frame(ws, want, timeout):
    """The first frame `want(frame)` accepts within `timeout`: (text, frame), or (None, None)."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(asyncio.TimeoutError, websockets.ConnectionClosed):
        while (left := deadline - time.monotonic()) > 0:
            text = await asyncio.wait_for(ws.recv(), left)
            frame = json.loads(text)
            if want(frame):
                return text, frame
    return None, None


def response(request_id):
    return lambda f: f.get("type") == "res" and f.get("id") == request_id


def invoke_request(f):
    return f.get("event") == "node.invoke.request"


def outcome(frame):
    if frame is None:
        return "no answer"
    if frame.get("ok"):
        return "ok"
    error = frame["error"]
    return f"{error['code']}/{reason(error)}" if reason(error) != error["code"] else error["code"]


async def token_node(url, node_id="pi", source="127.0.0.1"):
    ws, hello = await handshake(url, connect_params("node", client={
        "id": node_id, "version": "1.0.0", "platform": "linux", "mode": "node"}, commands=["echo"]), source=source)
    assert hello["ok"], hello
    return ws


async def invoke_checks(binary, gw):
    node = await token_node(gw.url)
    op, hello = await handshake(gw.url, connect_params("operator"))
    max_payload = hello["payload"]["policy"]["maxPayload"]

    async def invoke(request_id, params_text, timeout_ms=1500):
        await op.send('{"type":"req","id":"%s","method":"node.invoke","params":{"nodeId":"pi","command":"echo",'
                      '"timeoutMs":%d,"params":%s}}' % (request_id, timeout_ms, params_text))

    async def result(invoke_id, payload_text, request_id="res"):
        await node.send('{"type":"req","id":"%s","method":"node.invoke.result","params":{"id":"%s","nodeId":"pi",'
                        '"ok":true,"payload":%s}}' % (request_id, invoke_id, payload_text))

    # Item 2: a 510,000-byte params string, and 250,000 quotes (500 KB of
    # request, whose paramsJSON would be twice that).
    await invoke("i2a", json.dumps("x" * 510_000), 5000)
    text, event = await recv_frame(node, invoke_request, 5)
    if event:
        payload = event["payload"]
        fields = "+".join(f for f in ("params", "paramsJSON") if f in payload)
        await result(payload["id"], '"done"')
        forwarded = f"the node got a {len(text.encode()):,}-byte node.invoke.request ({fields})"
    else:
        forwarded = "not forwarded"
    _, answer = await recv_frame(op, response("i2a"), 6)
    row(2, "invoke with a 510,000-byte params string", f"{forwarded}; operator: {outcome(answer)}")
    await invoke("i2b", json.dumps('"' * 250_000), 5000)
    text, event = await recv_frame(node, invoke_request, 2)
    if event:
        await result(event["payload"]["id"], '"done"')
    _, answer = await recv_frame(op, response("i2b"), 6)
    row(2, "invoke with 250,000 quotes as params (a 500 KB request)",
        (f"the node got a {len(text.encode()):,}-byte node.invoke.request" if event else "not forwarded")
        + f"; operator: {outcome(answer)}")

    # Item 3: params no strict parser takes, and such a result.
    seen = []
    for label, raw in (("nesting 127 deep", "[" * 127 + "]" * 127), ("a lone surrogate", '"\\ud800"'),
                       ("1e400", "1e400")):
        await invoke("i3", raw)
        _, event = await recv_frame(node, invoke_request, 0.5)
        _, answer = await recv_frame(op, response("i3"), 5)
        seen.append(f"{label}: {'forwarded' if event else 'not forwarded'}, operator {outcome(answer)}")
    row(3, "invoke params", "; ".join(seen))
    await invoke("i3r", "{}")
    _, event = await recv_frame(node, invoke_request, 5)
    await result(event["payload"]["id"], "1e99999", "bad")
    _, to_node = await recv_frame(node, response("bad"), 5)
    text, answer = await recv_frame(op, response("i3r"), 5)
    row(3, "a node result of 1e99999", f"node: {outcome(to_node)}; operator: {outcome(answer)}"
        + (" (1e99999 forwarded)" if text and "1e99999" in text else ""))

    # Item 9: a node result frame of exactly maxPayload bytes; the
    # operator's answer carries things the node's frame does not (a long
    # request id of the operator's; the node's long id and command in
    # this round's wrapper), so it would be larger.
    long_id, long_command, request_id = "n" * 100, "c" * 100, "r" * 120
    long, hello = await handshake(gw.url, connect_params("node", client={
        "id": long_id, "version": "1.0.0", "platform": "linux", "mode": "node"}, commands=[long_command]))
    await op.send(json.dumps({"type": "req", "id": request_id, "method": "node.invoke", "params": {
        "nodeId": long_id, "command": long_command, "params": {}, "timeoutMs": 1500}}))
    _, event = await recv_frame(long, invoke_request, 5)
    head = ('{"type":"req","id":"big","method":"node.invoke.result","params":{"id":"%s","ok":true,"payload":"'
            % event["payload"]["id"])
    frame = head + "y" * (max_payload - len(head) - 3) + '"}}'
    await long.send(frame)
    text, answer = await recv_frame(op, response(request_id), 5)
    row(9, f"a node result frame of exactly maxPayload ({len(frame.encode()):,} bytes), operator request id of 120 bytes",
        f"operator: {outcome(answer)} in a {len(text.encode()):,}-byte frame" if text else "operator: no answer")
    await long.close()

    # Item 10: a node's own error with a code the gateway also uses.
    await invoke("i10", "{}")
    _, event = await recv_frame(node, invoke_request, 5)
    await node.send(json.dumps({"type": "req", "id": "e", "method": "node.invoke.result", "params": {
        "id": event["payload"]["id"], "nodeId": "pi", "ok": False,
        "error": {"code": "TIMEOUT", "message": "the node's own timeout"}}}))
    _, answer = await recv_frame(op, response("i10"), 5)
    error = answer["error"] if answer else {}
    row(10, "a node answers error TIMEOUT", f"operator: {json.dumps(error)}")

    # Item 15: an invoke whose operator leaves before the node answers.
    series = "goclaw_invoke_duration_seconds_count"
    before = invoke_counts(gw, series)
    await invoke("i15", "{}", 30_000)
    _, event = await recv_frame(node, invoke_request, 5)
    await op.close()
    after = before
    for _ in range(30):
        await asyncio.sleep(0.1)
        if (after := invoke_counts(gw, series)) != before:
            break
    added = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    row(15, "an invoke whose operator left before the node answered",
        f"recorded in {series}: {added or 'no'}")

    # The node survived all of it.
    await node.send(json.dumps({"type": "req", "id": "h", "method": "health"}))
    _, health = await recv_frame(node, response("h"), 5)
    row(2, "the node after items 2, 3, 9 and 10", "still connected" if health else "gone")
    await node.close()


def invoke_counts(gw, series):
    with urllib.request.urlopen(f"http://{gw.metrics_addr}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return {line.split("{", 1)[1].split("}", 1)[0]: float(line.split()[-1])
            for line in lines if line.startswith(series + "{")}


def raw_request(addr, request, read_all=False):
    """Sends bytes; returns the first line of the answer (or the error)."""
    try:
        with socket.create_connection(addr, timeout=5) as s:
            s.sendall(request)
            data = b""
            while b"\r\n" not in data and (chunk := s.recv(4096)):
                data += chunk
        return data.split(b"\r\n", 1)[0].decode(errors="replace") or "closed without an answer"
    except OSError as e:
        return type(e).__name__


async def label_checks(gw):
    seen = []
    for i, (node_id, name, label) in enumerate((("a\u202eb", "ok", "U+202E in the id"),
                                                ("ok", "x\u200by", "U+200B in the name"),
                                                ("\ufeffn", "ok", "U+FEFF in the id"),
                                                ("n", "line\u2028break", "U+2028 in the name"))):
        ws, answer = await handshake(gw.url, connect_params("node", client={
            "id": node_id, "displayName": name, "version": "1.0.0", "platform": "linux", "mode": "node"},
            commands=["echo"]), source=f"127.0.0.{50 + i}")
        await ws.close()
        seen.append(f"{label}: {outcome(answer)}")
    return "; ".join(seen)


def item_checks(binary):
    with gateway(binary, *node_flags(binary)) as gw:
        asyncio.run(invoke_checks(binary, gw))
        upgrade = UPGRADE.encode()
        obs_text = upgrade[:-2] + b"User-Agent: caf\xe9\r\nCookie: a=\xff\r\n\r\n"
        absolute = upgrade.replace(b"GET /ws ", b"GET http://gateway.example/ws ", 1)
        row(13, "upgrade with a Latin-1 User-Agent and a 0xff cookie byte", raw_request(gw.addr, obs_text))
        row(13, "upgrade to the absolute-form target http://gateway.example/ws", raw_request(gw.addr, absolute))
        row(14, "a node whose id or name has an invisible character", asyncio.run(label_checks(gw)))
        console = b"".join(line for _, line in gw.lines)
        row(14, "those characters written raw to the console",
            "yes" if any(c.encode() in console for c in "\u202e\u200b\ufeff\u2028") else "no")

    # Item 5: the token in "auth" as a string, and in a number's place,
    # at --log-level trace; then every output searched for it.
    secret = TOKEN
    with gateway(binary, "--log-level", "trace", *node_flags(binary)) as gw:
        answers = []

        async def attempts():
            for i, params in enumerate(({"minProtocol": 3, "maxProtocol": 3, "role": "operator", "auth": secret},
                                        {"minProtocol": secret, "maxProtocol": 3, "role": "operator"},
                                        connect_params("operator"))):
                ws = await websockets.connect(gw.url, ping_interval=None, local_addr=(f"127.0.0.{60 + i}", 0))
                await ws.recv()
                await ws.send(json.dumps({"type": "req", "id": "c", "method": "connect", "params": params}))
                answers.append(await asyncio.wait_for(ws.recv(), 5))
                await ws.close()

        asyncio.run(attempts())
        gw.stop()
        console = b"".join(line for _, line in gw.lines)
        file_lines, _ = log_lines(gw.state_dir)
    in_answers = sum(secret in a for a in answers[:2])
    row(5, "the token as \"auth\": \"<token>\" and as minProtocol, at --log-level trace",
        f"answers {', '.join(outcome(json.loads(a)) for a in answers[:2])}; token in them: {in_answers}, "
        f"in console lines: {console.count(secret.encode())}, "
        f"in JSON log lines: {sum(secret.encode() in line for line in file_lines)} "
        f"(a valid connect included)")

    # Item 11: close frames with codes RFC 6455 forbids, from an operator.
    with gateway(binary) as gw:
        protocol = 'goclaw_errors_total{type="protocol"}'
        counted, answers = gw.metric(protocol), []
        for code in (999, 1005, 5000):
            answers.append(f"{code} -> {forbidden_close(gw.addr, code)}")
        time.sleep(0.5)
        added = gw.metric(protocol) - counted
        lines = [line.decode(errors="replace") for _, line in gw.lines if b"client disconnected" in line]
    said = sorted({line.split('reason="', 1)[1].split('"', 1)[0] + " " +
                   " ".join(w for w in line.split() if w.startswith(("code=", "client_code=", "peer_code=")))
                   for line in lines if 'reason="' in line})
    row(11, "close frames with codes 999, 1005, 5000",
        f"{'; '.join(answers)}; protocol errors counted: {added:.0f}; disconnect lines: {' | '.join(said)}")

    # Item 12: a connection attempt while shutdown drains.
    with gateway(binary, "--shutdown-timeout", "3s") as gw:
        row(12, "an upgrade while shutdown drains (a client deaf to the close keeps it going)",
            asyncio.run(during_drain(gw)))


def forbidden_close(addr, code):
    """An operator that sends a close frame with `code`; returns the code it got back."""
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(UPGRADE.encode())
        data = b""
        while b"\r\n\r\n" not in data and (chunk := s.recv(4096)):
            data += chunk
        connect = json.dumps({"type": "req", "id": "c", "method": "connect", "params": connect_params("operator")})
        s.sendall(masked(connect.encode()))
        time.sleep(0.2)
        s.sendall(masked(code.to_bytes(2, "big"), 0x8))
        received = data.split(b"\r\n\r\n", 1)[1]
        with contextlib.suppress(OSError):
            while not server_close(received) and (chunk := s.recv(65536)):
                received += chunk
    close = server_close(received)
    return f"close {close[0]}" if close else "no close frame"


def masked(payload, opcode=0x1):
    """A client frame (RFC 6455 §5.2): final, masked."""
    mask = os.urandom(4)
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return bytes([0x80 | opcode]) + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def during_drain(gw):
    deaf = socket.create_connection(gw.addr, timeout=5)  # upgraded, then never reads or answers
    deaf.sendall(UPGRADE.encode())
    op, _ = await handshake(gw.url, connect_params("operator"))
    gw.process.send_signal(signal.SIGTERM)
    _, event = await recv_frame(op, lambda f: f.get("event") == "shutdown", 5)
    answer = await asyncio.to_thread(raw_request, gw.addr, UPGRADE.encode())
    deaf.close()
    return f"shutdown event {'seen' if event else 'not seen'}; the upgrade got: {answer}"


ITEMS = {1: item1, 4: item4, 6: item6, 7: item7, 8: item8, 0: item_checks}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("binary")
    parser.add_argument("--only", default="1,4,6,7,8,0",
                        help="comma-separated: 1, 4, 6, 7, 8 (the measurements), 0 (the other items' checks)")
    args = parser.parse_args()
    version = subprocess.run([args.binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    print(f"{args.binary}: {version}; --allow-token-nodes: {has_flag(args.binary, '--allow-token-nodes')}")
    for item in (int(i) for i in args.only.split(",")):
        print(f"item {item} ...", flush=True)
        ITEMS[item](args.binary)
    print("\n| item | figure | value |\n|---|---|---|")
    for item, figure, value in sorted(ROWS, key=lambda r: r[0]):
        print(f"| {item} | {figure} | {value} |")


if __name__ == "__main__":
    main()
