// Reference node agent, for the interop harness's self-test only: it does what
// `goclaw node` must do against real OpenClaw gateways (OPENCLAW.md §9(c)), in
// ~200 lines of Node 24 built-ins, so the Part B checks can be shown passable
// with the real gateways (python3 tests/interop/openclaw.py --agent-cmd
// "node tests/interop/openclaw/refagent.mjs"). It is not a product.
//
// Flags (as goclaw node takes them): --url ws://HOST:PORT --token T
//   --state-dir DIR --display-name NAME --exec NAME=/abs/program (repeatable)
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import os from "node:os";
import { spawn } from "node:child_process";

const opts = { exec: [] };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const [flag, inline] = argv[i].split(/=(.*)/s, 2);
  const value = inline ?? argv[++i];
  if (flag === "--exec") opts.exec.push(value);
  else if (["--url", "--token", "--state-dir", "--display-name"].includes(flag)) opts[flag.slice(2)] = value;
  else { console.error(`refagent: unknown flag ${flag}`); process.exit(2); }
}
const log = (...a) => console.log(new Date().toISOString(), ...a);
const allowed = new Set(opts.exec.map((e) => fs.realpathSync(e.split("=").slice(1).join("="))));

// Identity: Ed25519, kept in the state dir; id = hex sha256 of the raw key.
fs.mkdirSync(opts["state-dir"], { recursive: true });
const keyFile = path.join(opts["state-dir"], "device.json");
let priv, pub;
if (fs.existsSync(keyFile)) {
  const j = JSON.parse(fs.readFileSync(keyFile, "utf8"));
  priv = crypto.createPrivateKey(j.privateKeyPem);
  pub = crypto.createPublicKey(j.publicKeyPem);
} else {
  ({ privateKey: priv, publicKey: pub } = crypto.generateKeyPairSync("ed25519"));
  fs.writeFileSync(keyFile, JSON.stringify({
    privateKeyPem: priv.export({ type: "pkcs8", format: "pem" }),
    publicKeyPem: pub.export({ type: "spki", format: "pem" }),
  }), { mode: 0o600 });
}
const raw = pub.export({ type: "spki", format: "der" }).subarray(12);
const deviceId = crypto.createHash("sha256").update(raw).digest("hex");
log("device id", deviceId);

const COMMANDS = ["system.which", "system.run", "device.status"];
let backoff = 500;
let ws;
let lastFrame = Date.now();
let tickMs = 30000;

function which(bin) {
  for (const dir of (process.env.PATH || "/usr/bin:/bin").split(":")) {
    const p = path.join(dir, bin);
    try { fs.accessSync(p, fs.constants.X_OK); if (fs.statSync(p).isFile()) return p; } catch {}
  }
  return null;
}

function run(cmd, timeoutMs) {
  return new Promise((resolve) => {
    const child = spawn(cmd[0], cmd.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "", stderr = "", timedOut = false;
    const t = setTimeout(() => { timedOut = true; child.kill("SIGKILL"); }, timeoutMs);
    child.stdout.on("data", (d) => { stdout += d; });
    child.stderr.on("data", (d) => { stderr += d; });
    child.on("close", (code) => {
      clearTimeout(t);
      resolve({ exitCode: code, timedOut, success: code === 0 && !timedOut, stdout, stderr, error: null });
    });
    child.on("error", (e) => { clearTimeout(t); resolve({ exitCode: null, timedOut, success: false, stdout, stderr, error: String(e) }); });
  });
}

async function invoke(p) {
  const params = typeof p.paramsJSON === "string" ? JSON.parse(p.paramsJSON) : p.params ?? {};
  switch (p.command) {
    case "system.which": {
      const bins = {};
      for (const b of params.bins ?? []) { const w = which(b); if (w) bins[b] = w; }
      return { ok: true, payload: { bins } };
    }
    case "system.run": {
      const cmd = params.command;
      if (!Array.isArray(cmd) || cmd.length === 0) return { ok: false, error: { code: "INVALID_REQUEST", message: "command required" } };
      let real = null;
      try { real = fs.realpathSync(cmd[0]); } catch {}
      if (!real || !allowed.has(real)) return { ok: false, error: { code: "UNAVAILABLE", message: "SYSTEM_RUN_DENIED: not in this node's --exec list" } };
      return { ok: true, payload: await run([real, ...cmd.slice(1)], Math.min(params.timeoutMs ?? 30000, 30000)) };
    }
    case "device.status":
      return { ok: true, payload: { platform: "linux", hostname: os.hostname(), uptimeSeconds: os.uptime(), loadAverage: os.loadavg() } };
    default:
      return { ok: false, error: { code: "UNAVAILABLE", message: "command not supported" } };
  }
}

function send(obj) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(obj)); }

function connect() {
  ws = new WebSocket(opts.url);
  ws.onopen = () => { lastFrame = Date.now(); };
  ws.onmessage = async (ev) => {
    lastFrame = Date.now();
    let f;
    try { f = JSON.parse(ev.data); } catch { return; }
    if (f.type === "event" && f.event === "connect.challenge") {
      const { nonce, ts } = f.payload;
      const signedAt = Number.isSafeInteger(ts) ? ts : Date.now();
      const payload = ["v3", deviceId, "node-host", "node", "node", "", signedAt, opts.token ?? "", nonce, "linux", ""].join("|");
      const signature = crypto.sign(null, Buffer.from(payload), priv).toString("base64url");
      send({ type: "req", id: crypto.randomUUID(), method: "connect", params: {
        minProtocol: 3, maxProtocol: 3,
        client: { id: "node-host", displayName: opts["display-name"], version: "0.0.0-refagent", platform: "linux", mode: "node" },
        role: "node", scopes: [], caps: ["system"], commands: COMMANDS, auth: { token: opts.token },
        device: { id: deviceId, publicKey: raw.toString("base64url"), signature, signedAt, nonce },
      } });
    } else if (f.type === "res" && f.payload?.type === "hello-ok") {
      tickMs = f.payload.policy?.tickIntervalMs ?? 30000;
      backoff = 500;
      log("connected, protocol", f.payload.protocol);
    } else if (f.type === "res" && f.ok === false && !f.payload) {
      log("refused:", JSON.stringify(f.error));
    } else if (f.type === "event" && f.event === "node.invoke.request") {
      const p = f.payload;
      let r;
      try { r = await invoke(p); } catch (e) { r = { ok: false, error: { code: "UNAVAILABLE", message: String(e) } }; }
      log("invoke", p.command, r.ok ? "ok" : r.error.message);
      send({ type: "req", id: crypto.randomUUID(), method: "node.invoke.result", params: {
        id: p.id, nodeId: p.nodeId, ok: r.ok, ...(r.ok ? { payloadJSON: JSON.stringify(r.payload) } : { error: r.error }) } });
    }
  };
  ws.onclose = (ev) => {
    log("closed", ev.code, ev.reason, "; retry in", backoff, "ms");
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 5000);
  };
  ws.onerror = () => {};
}

setInterval(() => {
  if (ws && ws.readyState === 1 && Date.now() - lastFrame > 2 * tickMs + 5000) { log("tick timeout"); ws.close(4000, "tick timeout"); }
}, 1000);
for (const s of ["SIGINT", "SIGTERM"]) process.on(s, () => { try { ws?.close(1000); } catch {} process.exit(0); });
connect();
