#!/usr/bin/env python3
"""goclaw node against the real OpenClaw node hosts (npm openclaw@2026.9.6 and
@2026.5.7): memory, threads, CPU per invoke, latency and size on disk, measured
on one machine in one run, printed as a markdown table.

    cargo build --release --target x86_64-unknown-linux-musl
    python3 tests/interop/openclaw/nodebench.py --goclaw target/x86_64-unknown-linux-musl/release/goclaw

One `goclaw serve` (the --goclaw binary, or --serve) on loopback is the
gateway for every node, one node at a time, in this order: goclaw node, the
2026.9.6 node host, the 2026.5.7 node host (`openclaw node run` as
tests/interop/openclaw.py starts it: own HOME, OPENCLAW_GATEWAY_TOKEN, --host
127.0.0.1 --port PORT; no proxy; plus OPENCLAW_NO_AUTO_UPDATE=1, which keeps
it on loopback). For each node:

 1. not connected: started against a loopback port where nothing listens (it
    keeps retrying); --settle seconds later, five samples one second apart of
    the whole process tree (the process started and all its descendants):
    sum of VmRSS, sum of Pss (smaps_rollup; shared pages split between the
    processes that map them), Threads, process count. The medians are shown.
 2. stopped, then started again (same HOME or state dir) against the gateway;
    once the gateway lists it connected, --settle seconds, then the same
    samples, and the tree's CPU (utime+stime+cutime+cstime from
    /proc/PID/stat, in 10 ms ticks) and its threads' voluntary context
    switches (wake-ups) over --idle-window seconds of connected idle.
 3. invokes: one operator WebSocket connection (Python websockets, opened
    before the node started) sends --warmup, then --invokes sequential
    `node.invoke system.which {"bins":["uname"]}`, each answer checked; the
    tree's CPU before/after divided by --invokes (10,000 by default: the
    ticks are 10 ms, and goclaw node's whole run is a few dozen of them), and
    the round trips as the operator sees them (send to response, median, p90,
    p99). The memory samples are taken once more after the invokes.

Size on disk: the goclaw binary's bytes; for OpenClaw, the install folders of
tests/interop/openclaw/setup.sh: the release's npm tree (openclaw and every
dependency) and the Node 24 runtime package (files' bytes, hard links once).

The gateway is a copy of the --goclaw binary (so that it shares no page
with the node measured; --serve to run another) with a fresh --state-dir
and its defaults, except --message-rate/--message-burst, raised so the
per-connection request limit (100/s) does not pace the invokes. Everything started is stopped by PID (process trees), also on
Ctrl-C. Standard library plus `websockets`; Linux only (/proc).
"""

import argparse
import asyncio
import atexit
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import types
import uuid

import websockets

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))

# The interop harness: its process helpers, release pins and paths.
_spec = importlib.util.spec_from_file_location("openclaw_harness", os.path.join(os.path.dirname(HERE), "openclaw.py"))
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)
Proc, descendants, kill_tree, free_port, read = (harness.Proc, harness.descendants, harness.kill_tree,
                                                 harness.free_port, harness.read)
TOKEN, RELEASES = harness.TOKEN, harness.RELEASES
CLK_TCK = os.sysconf("SC_CLK_TCK")

GOCLAW_SERVE = ["serve", "--listen", "127.0.0.1:{port}", "--metrics-listen", "127.0.0.1:0", "--token", "{token}",
                "--state-dir", "{state}", "--message-rate", "100000", "--message-burst", "100000"]
GOCLAW_NODE = ["node", "--url", "{url}", "--token", "{token}", "--state-dir", "{state}", "--display-name", "{name}"]
# Loopback only: without this, the node host runs `npm view openclaw@latest
# ...` (another Node process; it lived about 70 s here) once connected, and
# 2026.9.6 sends anonymous update pings. It changes nothing else.
OPENCLAW_ENV = {"OPENCLAW_NO_AUTO_UPDATE": "1"}
WHICH_PARAMS = {"bins": ["uname"]}
WAIT_CONNECT = 90  # a node started before the gateway is up may be in a 30 s backoff


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# /proc: one process tree
# ---------------------------------------------------------------------------
def tree(pid):
    return [pid] + descendants(pid)


def status_fields(pid):
    out = {}
    for line in read(f"/proc/{pid}/status").splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def kib(text):
    return int(text.split()[0]) if text else 0


def memory(pid):
    """{rss, pss (KiB), threads, procs, names} summed over the tree of pid."""
    rss = pss = threads = 0
    names = []
    pids = tree(pid)
    for p in pids:
        st = status_fields(p)
        if not st:
            continue
        rss += kib(st.get("VmRSS", ""))
        threads += int(st.get("Threads", "0"))
        names.append(st.get("Name", "?"))
        for line in read(f"/proc/{p}/smaps_rollup").splitlines():
            if line.startswith("Pss:"):
                pss += kib(line.split(":", 1)[1])
    return {"rss": rss, "pss": pss, "threads": threads, "procs": len(names), "names": names}


def cpu_ticks(pid):
    """utime+stime+cutime+cstime over the tree, in clock ticks. A child that
    exits and is reaped inside the window moves from its own utime/stime to
    its parent's cutime/cstime, so a before/after difference stays right."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])
        except (OSError, IndexError, ValueError):
            pass
    return total


def wakeups(pid):
    """Voluntary context switches (a thread blocked, then woke up) summed over
    every thread of the tree. A thread that exits takes its count with it:
    good enough for an idle window, where the threads stay."""
    total = 0
    for p in tree(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            total += int(status_fields(f"{p}/task/{t}").get("voluntary_ctxt_switches", "0"))
    return total


def samples(pid, n=5, gap=1.0):
    """n memory samples gap seconds apart; the median of each figure."""
    got = []
    for i in range(n):
        if i:
            time.sleep(gap)
        got.append(memory(pid))
    med = {k: statistics.median(s[k] for s in got) for k in ("rss", "pss", "threads", "procs")}
    med["names"] = got[-1]["names"]
    med["rss_range"] = (min(s["rss"] for s in got), max(s["rss"] for s in got))
    return med


# ---------------------------------------------------------------------------
# Size on disk
# ---------------------------------------------------------------------------
def tree_bytes(path):
    """(bytes, files) of a folder: regular files' sizes, each inode once."""
    seen, total, files = set(), 0, 0
    for root, dirs, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if not os.path.isfile(os.path.join(root, name)) or os.path.islink(os.path.join(root, name)):
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
            files += 1
    return total, files


# ---------------------------------------------------------------------------
# The operator: one WebSocket connection to goclaw serve
# ---------------------------------------------------------------------------
class Operator:
    def __init__(self, url):
        self.url, self.ws, self.n = url, None, 0

    async def open(self):
        self.ws = await websockets.connect(self.url, max_size=None, open_timeout=10)
        challenge = json.loads(await self.ws.recv())
        assert challenge.get("event") == "connect.challenge", challenge
        await self.request("connect", {"minProtocol": 3, "maxProtocol": 3, "role": "operator",
                                       "scopes": ["operator.read", "operator.write"],
                                       "auth": {"token": TOKEN}})

    async def request(self, method, params=None, timeout=30):
        self.n += 1
        rid = f"nb-{self.n}"
        frame = {"type": "req", "id": rid, "method": method}
        if params is not None:
            frame["params"] = params
        await self.ws.send(json.dumps(frame))
        deadline = time.monotonic() + timeout
        while True:
            text = await asyncio.wait_for(self.ws.recv(), max(0.1, deadline - time.monotonic()))
            msg = json.loads(text)
            if msg.get("type") == "res" and msg.get("id") == rid:
                if not msg.get("ok"):
                    raise RuntimeError(f"{method}: {json.dumps(msg.get('error'))[:300]}")
                return msg.get("payload")

    async def find(self, name):
        nodes = (await self.request("node.list", {})).get("nodes", [])
        return next((n for n in nodes if n.get("displayName") == name and n.get("connected", True)), None)

    async def which(self, node_id):
        payload = await self.request("node.invoke", {
            "nodeId": node_id, "command": "system.which", "params": WHICH_PARAMS,
            "idempotencyKey": str(uuid.uuid4()), "timeoutMs": 20000})
        inner = payload.get("payload")
        if inner is None and payload.get("payloadJSON"):
            inner = json.loads(payload["payloadJSON"])
        return ((inner or {}).get("bins") or {}).get("uname")

    async def close(self):
        if self.ws is not None:
            await self.ws.close()


# ---------------------------------------------------------------------------
# The nodes
# ---------------------------------------------------------------------------
class Bench:
    def __init__(self, args, world):
        self.args, self.world = args, world
        self.goclaw = os.path.abspath(args.goclaw)
        if args.serve:
            self.serve_bin = os.path.abspath(args.serve)
        else:
            # A copy: another inode, so the gateway does not share the node's
            # text pages in the page cache and the node's PSS is its own.
            self.serve_bin = os.path.join(world.root, "goclaw-serve")
            shutil.copy2(self.goclaw, self.serve_bin)

    def start_gateway(self):
        self.port = free_port()
        state = self.world.path("gateway-state")  # fresh --state-dir
        argv = [self.serve_bin] + harness.fill(GOCLAW_SERVE, port=self.port, token=TOKEN, state=state)
        self.gw = Proc("goclaw-serve", argv, self.world.env(state), os.path.join(state, "stdout.log"))
        ok = harness.wait_until("gateway", 15, lambda: self.listening(self.port) or not self.gw.running(), 0.1)
        if not (ok and self.gw.running()):
            sys.exit(f"goclaw serve did not start:\n{harness.tail(self.gw.output())}")
        self.url = f"ws://127.0.0.1:{self.port}/ws"

    @staticmethod
    def listening(port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def node_proc(self, kind, name, home, port):
        """Starts one node (kind: goclaw, v4, v3) pointed at 127.0.0.1:port."""
        if kind == "goclaw":
            argv = [self.goclaw] + harness.fill(GOCLAW_NODE, url=f"ws://127.0.0.1:{port}/ws", token=TOKEN,
                                                state=home, name=name)
            env = self.world.env(home)
        else:
            # As tests/interop/openclaw.py's NodeHost starts it, minus its wsproxy.
            argv = self.world.openclaw(kind) + ["node", "run", "--host", "127.0.0.1", "--port", str(port),
                                                "--display-name", name]
            env = self.world.env(home, OPENCLAW_GATEWAY_TOKEN=TOKEN, **OPENCLAW_ENV)
        return Proc(name, argv, env, os.path.join(home, f"{name}.log"))

    async def measure(self, kind):
        a = self.args
        name = f"nb-{kind}"
        home = self.world.path(f"home-{name}")
        out = {"kind": kind}

        # 1. started, nothing to connect to
        dead = free_port()
        log(f"{name}: started against a closed port, settling {a.settle}s")
        p = self.node_proc(kind, name, home, dead)
        await asyncio.sleep(a.settle)
        if not p.running():
            sys.exit(f"{name} exited:\n{harness.tail(p.output())}")
        out["unconnected"] = samples(p.pid)
        p.stop()

        # 2. connected and idle
        op = Operator(self.url)
        await op.open()
        log(f"{name}: started against the gateway")
        t0 = time.monotonic()
        p = self.node_proc(kind, name, home, self.port)
        node = None
        while time.monotonic() - t0 < WAIT_CONNECT:
            node = await op.find(name)
            if node or not p.running():
                break
            await asyncio.sleep(0.5)
        if not node:
            p.stop()
            sys.exit(f"{name} did not connect within {WAIT_CONNECT}s:\n{harness.tail(p.output())}\n"
                     f"gateway:\n{harness.tail(self.gw.output(), 8)}")
        out["connect_secs"] = time.monotonic() - t0
        log(f"{name}: connected after {out['connect_secs']:.1f}s (node {node['nodeId'][:12]}…), settling {a.settle}s")
        await asyncio.sleep(a.settle)
        out["connected"] = samples(p.pid)
        c0, v0, w0 = cpu_ticks(p.pid), wakeups(p.pid), time.monotonic()
        await asyncio.sleep(a.idle_window)
        c1, v1, w1 = cpu_ticks(p.pid), wakeups(p.pid), time.monotonic()
        out["idle_wakeups_per_sec"] = (v1 - v0) / (w1 - w0)
        out["idle_cpu_ms_per_min"] = (c1 - c0) * 1000 / CLK_TCK * 60 / (w1 - w0)
        out["idle_ticks"], out["idle_secs"] = c1 - c0, w1 - w0

        # 3. invokes over the one operator connection
        want = shutil.which("uname", path=self.world.env(home)["PATH"])
        for _ in range(a.warmup):
            got = await op.which(node["nodeId"])
            if got != want:
                sys.exit(f"{name}: system.which answered {got!r}, want {want!r}")
        out["load_at_invokes"] = read("/proc/loadavg").split()[0]
        log(f"{name}: {a.invokes} invokes (load average {out['load_at_invokes']})")
        rtts = []
        c0, w0 = cpu_ticks(p.pid), time.monotonic()
        for _ in range(a.invokes):
            s = time.perf_counter_ns()
            got = await op.which(node["nodeId"])
            rtts.append(time.perf_counter_ns() - s)
            if got != want:
                sys.exit(f"{name}: system.which answered {got!r}, want {want!r}")
        c1, w1 = cpu_ticks(p.pid), time.monotonic()
        out["invoke_ticks"], out["invoke_secs"] = c1 - c0, w1 - w0
        out["cpu_us_per_invoke"] = (c1 - c0) * 1e6 / CLK_TCK / a.invokes
        rtts.sort()
        pick = lambda q: rtts[min(len(rtts) - 1, int(q * len(rtts)))] / 1e6  # ms
        out["rtt_ms"] = (statistics.median(rtts) / 1e6, pick(0.90), pick(0.99))
        out["after"] = samples(p.pid)
        await op.close()
        p.stop()
        log(f"{name}: done")
        return out


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def mib(k):
    return f"{k / 1024:.1f} MiB"


def mem_cell(s):
    return f"{mib(s['rss'])} ({mib(s['pss'])} PSS)"


def tt_cell(s):
    return f"{s['procs']:.0f} / {s['threads']:.0f}"


def size_mib(b):
    return f"{b / 1048576:.1f} MiB"


def report(results, sizes, args, cache):
    labels = {"goclaw": "goclaw node (static)", "v4": f"node host {RELEASES['v4']}",
              "v3": f"node host {RELEASES['v3']}"}
    cols = [labels[r["kind"]] for r in results]
    rows = []

    def row(measure, cell):
        rows.append([measure] + [cell(r) for r in results])

    row("RSS (PSS), started, not connected", lambda r: mem_cell(r["unconnected"]))
    row("processes / threads, not connected", lambda r: tt_cell(r["unconnected"]))
    row("RSS (PSS), connected, idle", lambda r: mem_cell(r["connected"]))
    row("processes / threads, connected", lambda r: tt_cell(r["connected"]))
    row(f"RSS (PSS), after {args.invokes} invokes", lambda r: mem_cell(r["after"]))
    row(f"CPU per `system.which` invoke ({args.invokes} invokes)",
        lambda r: f"{r['cpu_us_per_invoke']:.0f} µs ({r['invoke_ticks']} ticks)")
    row("invoke round trip seen by the operator, median (p90, p99)",
        lambda r: "{:.2f} ms ({:.2f}, {:.2f})".format(*r["rtt_ms"]))
    row("CPU while connected and idle",
        lambda r: f"{r['idle_cpu_ms_per_min']:.0f} ms/min ({r['idle_ticks']} ticks in {r['idle_secs']:.0f} s)")
    row("wake-ups while connected and idle (voluntary context switches)",
        lambda r: f"{r['idle_wakeups_per_sec']:.1f}/s")
    row("start to listed as connected (node.list polled every 0.5 s)", lambda r: f"{r['connect_secs']:.1f} s")
    row("on disk", lambda r: sizes[r["kind"]])

    lines = ["| measure | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine():
    model = next((l.split(":", 1)[1].strip() for l in read("/proc/cpuinfo").splitlines()
                  if l.startswith("model name")), "?")
    mem = next((l.split(":", 1)[1].strip() for l in read("/proc/meminfo").splitlines() if l.startswith("MemTotal")), "?")
    return f"{os.cpu_count()} CPUs ({model}), {mem} RAM, Linux {platform.release()}"


async def amain(args, bench):
    bench.start_gateway()
    results = []
    for kind in args.only.split(","):
        results.append(await bench.measure(kind))
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--goclaw", default=os.path.join(REPO, "target/x86_64-unknown-linux-musl/release/goclaw"),
                    help="the goclaw binary measured as `goclaw node` (default: the static build)")
    ap.add_argument("--serve", help="the goclaw binary run as the gateway (default: a copy of --goclaw)")
    ap.add_argument("--only", default="goclaw,v4,v3", help="which nodes, in order (goclaw, v4, v3)")
    ap.add_argument("--invokes", type=int, default=10000, help="measured sequential invokes per node")
    ap.add_argument("--warmup", type=int, default=20, help="invokes before the measured ones")
    ap.add_argument("--settle", type=float, default=30.0, help="seconds between start (or connect) and the samples")
    ap.add_argument("--idle-window", type=float, default=30.0, help="seconds of connected idle CPU measurement")
    ap.add_argument("--skip-setup", action="store_true", help="do not run setup.sh (the cache must be complete)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, HOMEs)")
    ap.add_argument("--json", help="also write the raw figures as JSON to this file")
    args = ap.parse_args()
    for kind in args.only.split(","):
        if kind not in ("goclaw", "v4", "v3"):
            sys.exit(f"--only: unknown node {kind!r} (goclaw, v4, v3)")
    for b in (args.goclaw, args.serve or args.goclaw):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b}: not an executable (cargo build --release --target x86_64-unknown-linux-musl)")

    cache = os.environ.get("GOCLAW_INTEROP_CACHE", os.path.expanduser("~/.cache/goclaw-interop"))
    if not args.skip_setup:
        r = harness.run(["bash", os.path.join(HERE, "setup.sh")], dict(os.environ), timeout=1800)
        if r.rc != 0:
            sys.exit(f"setup.sh failed:\n{harness.tail(r.both, 40)}")
        cache = r.out.strip().splitlines()[-1]

    world = harness.World(types.SimpleNamespace(goclaw=args.goclaw, nonlocal_addr="127.0.0.1"), cache)
    atexit.register(Proc.stop_all)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    sizes = {}
    gsize = os.path.getsize(args.goclaw)
    sizes["goclaw"] = f"{size_mib(gsize)} ({gsize} bytes): the binary, nothing else"
    node_bytes, node_files = tree_bytes(os.path.join(cache, "node24"))
    for kind in ("v4", "v3"):
        b, f = tree_bytes(os.path.join(cache, kind))
        sizes[kind] = (f"{size_mib(b + node_bytes)}: npm tree {size_mib(b)} ({f} files) "
                       f"+ Node 24 {size_mib(node_bytes)} ({node_files} files)")

    node_v = subprocess.run([os.path.join(world.node_bin, "node"), "--version"], capture_output=True,
                            text=True).stdout.strip()
    load0 = read("/proc/loadavg").split()[:3]
    t0 = time.time()
    try:
        results = asyncio.run(amain(args, Bench(args, world)))
    except KeyboardInterrupt as e:
        print(f"interrupted ({e}); stopping everything", file=sys.stderr)
        Proc.stop_all()
        return 1
    finally:
        Proc.stop_all()
    load1 = read("/proc/loadavg").split()[:3]

    print(f"Machine: {machine()}; Node {node_v}; goclaw {os.path.relpath(os.path.abspath(args.goclaw), REPO)}; "
          f"{time.strftime('%Y-%m-%d')}; {time.time() - t0:.0f} s; load average {' '.join(load0)} before, "
          f"{' '.join(load1)} after.\n")
    print(report(results, sizes, args, cache))
    print()
    for r in results:
        names = ", ".join(sorted(set(r["connected"]["names"])))
        print(f"- {r['kind']}: processes when connected: {names}; RSS range over the 5 samples: "
              f"not connected {r['unconnected']['rss_range'][0]}-{r['unconnected']['rss_range'][1]} KiB, "
              f"connected {r['connected']['rss_range'][0]}-{r['connected']['rss_range'][1]} KiB; "
              f"1-minute load average when its invokes started: {r['load_at_invokes']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "sizes": sizes, "load": [load0, load1]}, f, indent=2)
    if args.keep:
        print(f"\nlogs and HOMEs kept in {world.root}")
    else:
        shutil.rmtree(world.root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
