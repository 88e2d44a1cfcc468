#!/usr/bin/env python3
"""Starts a goclaw binary, puts some traffic through it (a node, an operator,
an invoke, a refused token), and prints one scrape of /metrics on stdout,
for `promtool check metrics`:

    python3 tests/interop/scrape.py target/release/goclaw | promtool check metrics
"""

import asyncio
import json
import signal
import subprocess
import sys
import urllib.request

import websockets

TOKEN = "scrape-token"


async def traffic(url):
    async with websockets.connect(url) as node, websockets.connect(url) as operator:
        for ws, params in ((node, {"role": "node", "client": {"id": "n"}, "commands": ["echo"]}),
                           (operator, {"role": "operator"})):
            await ws.recv()
            params.update(minProtocol=3, maxProtocol=3, auth={"token": TOKEN})
            await ws.send(json.dumps({"type": "req", "id": "c", "method": "connect", "params": params}))
            assert json.loads(await ws.recv())["ok"]
        await operator.send(json.dumps({"type": "req", "id": "i", "method": "node.invoke",
                                        "params": {"nodeId": "n", "command": "echo"}}))
        invoke = json.loads(await node.recv())["payload"]
        await node.send(json.dumps({"type": "req", "id": "r", "method": "node.invoke.result",
                                    "params": {"id": invoke["id"], "ok": True, "payload": 1}}))
        while json.loads(await operator.recv()).get("id") != "i":
            pass
    async with websockets.connect(url) as intruder:
        await intruder.recv()
        await intruder.send(json.dumps({"type": "req", "id": "c", "method": "connect",
                                        "params": {"minProtocol": 3, "maxProtocol": 3, "role": "operator",
                                                   "auth": {"token": "wrong"}}}))
        await intruder.recv()


def main():
    # --allow-token-nodes: the Python node below presents no device identity
    # (it does not sign), so it connects with the shared token alone (SPEC §4.4).
    process = subprocess.Popen([sys.argv[1], "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                                "--token", TOKEN, "--allow-token-nodes"], stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:
            if "listening" in line:
                fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
                break
        else:
            sys.exit("goclaw exited before listening")
        asyncio.run(traffic(f"ws://{fields['addr']}/ws"))
        with urllib.request.urlopen(f"http://{fields['metrics_addr']}/metrics", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4"), response.headers
            sys.stdout.write(response.read().decode())
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()


if __name__ == "__main__":
    main()
