#!/usr/bin/env python3
"""A node and an operator written with Python's `websockets` library (an
implementation independent of goclaw's) doing what the README walkthrough
shows: connect, list nodes, invoke a command, get the answer.

    sudo apt install python3-websockets    # Debian 12, Raspberry Pi OS; else pip in a venv
    python3 tests/interop/walkthrough.py --url ws://127.0.0.1:18789/ws --token change-me

The node here presents no device identity: it does not sign an Ed25519
challenge (SPEC §4.4), it connects with the shared token and its `client.id`
alone. A gateway accepts such a node only when started with
`--allow-token-nodes` (the scripts-and-sensors case); without it the node is
refused with NOT_PAIRED / DEVICE_IDENTITY_REQUIRED, and this script says so.
Why not sign: it would add a third-party crypto package to a walkthrough that
otherwise needs only `websockets`, leave one paired device per run in the
gateway's pairing store, and give the node a 64-hex-digit id; the signed path
is checked elsewhere (captured real signatures in src/wire/device.rs, the
real node hosts in tests/interop/openclaw.py, tests/pairing.rs).

With --spawn PATH it starts that goclaw binary itself (with
`--allow-token-nodes`, for the reason above) on a free port, runs the
walkthrough, then sends SIGTERM and checks that both clients get the
`shutdown` event and close 1001 and that the process exits 0 (this is how
.ci/run uses it).
"""

import argparse
import asyncio
import json
import signal
import subprocess
import sys

import websockets


def connect_request(role, token, node_id=None):
    params = {"minProtocol": 3, "maxProtocol": 3, "role": role, "auth": {"token": token}}
    if role == "node":
        params["client"] = {"id": node_id, "displayName": "Python node", "version": "1.0.0",
                            "platform": sys.platform, "mode": "node"}
        params["commands"] = ["echo"]
    return json.dumps({"type": "req", "id": "connect-1", "method": "connect", "params": params})


async def handshake(ws, role, token, node_id=None):
    challenge = json.loads(await ws.recv())
    assert challenge["event"] == "connect.challenge", challenge
    await ws.send(connect_request(role, token, node_id))
    hello = json.loads(await ws.recv())
    if not hello["ok"] and hello["error"].get("details", {}).get("code") == "DEVICE_IDENTITY_REQUIRED":
        sys.exit(f"{role}: refused, {hello['error']['message']}: this Python node does not sign a device "
                 "identity, so the gateway must run with --allow-token-nodes")
    assert hello["ok"] and hello["payload"]["type"] == "hello-ok", hello
    print(f"{role}: hello-ok, connId {hello['payload']['server']['connId']}")


async def next_response(ws, request_id):
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "res" and frame["id"] == request_id:
            return frame


async def run_node(ws):
    """Answers every node.invoke.request by echoing its params. The request
    carries them serialized in `paramsJSON` only, as the real gateway sends
    them (no raw `params`)."""
    async for text in ws:
        frame = json.loads(text)
        if frame.get("event") != "node.invoke.request":
            continue
        invoke = frame["payload"]
        assert "params" not in invoke, invoke
        print(f"node: asked to run {invoke['command']} with {invoke['paramsJSON']}")
        await ws.send(json.dumps({"type": "req", "id": "result-1", "method": "node.invoke.result",
                                  "params": {"id": invoke["id"], "nodeId": invoke["nodeId"], "ok": True,
                                             "payload": {"echoed": json.loads(invoke["paramsJSON"])}}}))


async def walkthrough(url, token, shutdown=None):
    async with websockets.connect(url) as node, websockets.connect(url) as operator:
        await handshake(node, "node", token, "python-node")
        await handshake(operator, "operator", token)
        node_task = asyncio.create_task(run_node(node))

        await operator.send(json.dumps({"type": "req", "id": "list-1", "method": "node.list"}))
        nodes = (await next_response(operator, "list-1"))["payload"]["nodes"]
        print("operator: nodes", [n["nodeId"] for n in nodes])
        assert any(n["nodeId"] == "python-node" for n in nodes), nodes

        await operator.send(json.dumps({"type": "req", "id": "invoke-1", "method": "node.invoke",
                                        "params": {"nodeId": "python-node", "command": "echo",
                                                   "params": {"hello": "world"}, "timeoutMs": 5000}}))
        answer = await next_response(operator, "invoke-1")
        assert answer["ok"], answer
        # The node's payload comes back wrapped: {ok, nodeId, command, payload}.
        result = answer["payload"]
        print("operator: answer", json.dumps(result["payload"]))
        assert result == {"ok": True, "nodeId": "python-node", "command": "echo",
                          "payload": {"echoed": {"hello": "world"}}}, answer
        node_task.cancel()

        if shutdown is not None:
            shutdown()
            for name, ws in (("operator", operator), ("node", node)):
                events = []
                try:
                    async for text in ws:
                        events.append(json.loads(text).get("event"))
                except websockets.ConnectionClosed:
                    pass
                assert "shutdown" in events, (name, events)
                assert ws.close_code == 1001, (name, ws.close_code)
                print(f"{name}: got the shutdown event and close {ws.close_code}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:18789/ws")
    parser.add_argument("--token", default="change-me")
    parser.add_argument("--spawn", metavar="PATH", help="start this goclaw binary and test shutdown too")
    args = parser.parse_args()
    if not args.spawn:
        asyncio.run(walkthrough(args.url, args.token))
        return
    # --allow-token-nodes: the Python node presents no device identity (it does
    # not sign), so it may connect with the shared token alone (SPEC §4.4).
    print("starting goclaw with --allow-token-nodes: this Python node does not sign a device identity")
    process = subprocess.Popen([args.spawn, "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                                "--token", args.token, "--allow-token-nodes"],
                               stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:
            if "listening" in line:
                addr = next(w for w in line.split() if w.startswith("addr=")).split("=", 1)[1]
                break
        else:
            sys.exit("goclaw exited before listening")
        asyncio.run(walkthrough(f"ws://{addr}/ws", args.token,
                                shutdown=lambda: process.send_signal(signal.SIGTERM)))
        code = process.wait(timeout=10)
        assert code == 0, f"goclaw exited {code}"
        print("goclaw exited 0")
    finally:
        if process.poll() is None:
            process.kill()


if __name__ == "__main__":
    main()
