#!/usr/bin/env python3
"""Stand-ins for what `goclaw node` over wss:// and `goclaw nodes pending|approve`
will do, for tests/interop/tls_proxy.sh until those land on main. Python
`websockets` plus `cryptography` (Ed25519), both independent of goclaw.

    tls_node.py node --url wss://127.0.0.1:PORT/ws --ca-file ca.pem --token T --id-file F
        A node with an Ed25519 device identity (OPENCLAW.md 2.4, v3 signature).
        Connects; on NOT_PAIRED/PAIRING_REQUIRED it prints the refusal and tries
        again every 0.5 s (as real node hosts do), at most --attempts times; once
        in, it answers `echo` until SIGTERM. Writes its device id to --id-file.
    tls_node.py pending --url ws://127.0.0.1:PORT/ws --token T
        Prints node.pair.list's pending node requests as JSON (an operator on
        loopback with the shared token needs no device).
    tls_node.py approve REQUEST_ID --url ws://127.0.0.1:PORT/ws --token T
"""

import argparse
import asyncio
import base64
import hashlib
import json
import signal
import ssl
import sys
import time

import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def ssl_context(url, ca_file):
    if not url.startswith("wss://"):
        return None
    context = ssl.create_default_context(cafile=ca_file)
    return context


async def request(ws, method, params=None, req_id="r1"):
    frame = {"type": "req", "id": req_id, "method": method}
    if params is not None:
        frame["params"] = params
    await ws.send(json.dumps(frame))
    while True:
        answer = json.loads(await ws.recv())
        if answer.get("type") == "res" and answer.get("id") == req_id:
            return answer


async def operator(url, token, method, params=None):
    async with websockets.connect(url, open_timeout=5) as ws:
        challenge = json.loads(await ws.recv())
        assert challenge["event"] == "connect.challenge", challenge
        hello = await request(
            ws,
            "connect",
            {"minProtocol": 3, "maxProtocol": 3, "role": "operator", "auth": {"token": token},
             "client": {"id": "tls-proxy-test", "version": "1", "platform": "linux", "mode": "cli"}},
            "connect-1",
        )
        if not hello["ok"]:
            raise SystemExit(f"operator connect refused: {json.dumps(hello['error'])}")
        return await request(ws, method, params)


class Node:
    def __init__(self, args):
        self.args = args
        self.key = Ed25519PrivateKey.generate()
        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_key = b64url(raw)
        self.device_id = hashlib.sha256(raw).hexdigest()

    def connect_params(self, nonce):
        signed_at = int(time.time() * 1000)
        client = {"id": "tls-node", "displayName": "TLS node", "version": "1.0.0", "platform": "linux",
                  "mode": "node"}
        token = self.args.token
        payload = "|".join(["v3", self.device_id, client["id"], "node", "node", "", str(signed_at), token, nonce,
                            "linux", ""])
        signature = b64url(self.key.sign(payload.encode()))
        return {"minProtocol": 3, "maxProtocol": 3, "role": "node", "scopes": [], "client": client,
                "commands": ["echo"], "auth": {"token": token},
                "device": {"id": self.device_id, "publicKey": self.public_key, "signature": signature,
                           "signedAt": signed_at, "nonce": nonce}}

    async def attempt(self):
        """One connection: None if refused (printed), else serves until closed."""
        context = ssl_context(self.args.url, self.args.ca_file)
        async with websockets.connect(self.args.url, ssl=context, open_timeout=5) as ws:
            challenge = json.loads(await ws.recv())
            hello = await request(ws, "connect", self.connect_params(challenge["payload"]["nonce"]), "connect-1")
            if not hello["ok"]:
                error = hello["error"]
                details = error.get("details", {})
                print(f"node: refused {error['code']} {details.get('code')} requestId={details.get('requestId')}",
                      flush=True)
                return False
            print(f"node: hello-ok through {self.args.url}, nodeId {self.device_id}", flush=True)
            async for text in ws:
                frame = json.loads(text)
                if frame.get("event") != "node.invoke.request":
                    continue
                invoke = frame["payload"]
                params = json.loads(invoke.get("paramsJSON") or "null")
                print(f"node: invoked {invoke['command']} with {invoke.get('paramsJSON')}", flush=True)
                await ws.send(json.dumps({"type": "req", "id": "result-" + invoke["id"],
                                          "method": "node.invoke.result",
                                          "params": {"id": invoke["id"], "nodeId": invoke["nodeId"], "ok": True,
                                                     "payload": {"echoed": params, "via": "python-node"}}}))
            return True

    async def run(self):
        with open(self.args.id_file, "w") as f:
            f.write(self.device_id + "\n")
        for _ in range(self.args.attempts):
            if await self.attempt():
                print("node: connection closed", flush=True)
            await asyncio.sleep(0.5)
        raise SystemExit("node: gave up")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["node", "pending", "approve"])
    parser.add_argument("request_id", nargs="?")
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--ca-file")
    parser.add_argument("--id-file")
    parser.add_argument("--attempts", type=int, default=60)
    args = parser.parse_args()
    if args.what == "node":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(Node(args).run())
    elif args.what == "pending":
        answer = asyncio.run(operator(args.url, args.token, "node.pair.list", {}))
        print(json.dumps(answer["payload"]["pending"]))
    else:
        answer = asyncio.run(operator(args.url, args.token, "node.pair.approve", {"requestId": args.request_id}))
        if not answer["ok"]:
            raise SystemExit(f"approve failed: {json.dumps(answer['error'])}")
        print(f"approved {args.request_id}")


if __name__ == "__main__":
    main()
