"""asgi_ipc 1.4.2 (Channels 1) between two processes: round trip p50/p99 and throughput with 50
in flight, the measures of ``python -m bench processes``. It pins ``asgiref~=1.1``, so it runs in
a virtualenv of its own, not towpath's::

    python3 -m venv /tmp/asgiipc && /tmp/asgiipc/bin/pip install asgi_ipc==1.4.2
    RUNS=1 /tmp/asgiipc/bin/python bench/peers/asgi_ipc_peer.py 100   # 100 messages per measure
"""

import json
import os
import statistics
import subprocess
import sys
import time

import asgi_ipc  # type: ignore[import-not-found]

PREFIX = f"tpbench{os.getpid()}"


def echo(prefix):
    layer = asgi_ipc.IPCChannelLayer(prefix=prefix, capacity=100000)
    print("ready", flush=True)
    while True:
        channel, message = layer.receive(["bench.echo"], block=True)
        if channel is None:
            continue
        if message.get("stop"):
            return
        layer.send(message["reply"], {"n": message["n"]})


def measure(count, window):
    layer = asgi_ipc.IPCChannelLayer(prefix=PREFIX, capacity=100000)
    reply = f"bench.reply.{os.getpid()}"
    rtts = []
    for n in range(count):
        t = time.perf_counter()
        layer.send("bench.echo", {"n": n, "reply": reply})
        while True:
            ch, _message = layer.receive([reply], block=True)
            if ch is not None:
                break
        rtts.append(time.perf_counter() - t)
    rtts.sort()
    t = time.perf_counter()
    sent = received = 0
    while sent < min(window, count):
        layer.send("bench.echo", {"n": sent, "reply": reply})
        sent += 1
    while received < count:
        ch, _message = layer.receive([reply], block=True)
        if ch is None:
            continue
        received += 1
        if sent < count:
            layer.send("bench.echo", {"n": sent, "reply": reply})
            sent += 1
    elapsed = time.perf_counter() - t
    layer.send("bench.echo", {"stop": True})
    return {
        "p50_ms": rtts[len(rtts) // 2] * 1e3,
        "p99_ms": rtts[int(len(rtts) * 0.99)] * 1e3,
        "throughput": count / elapsed,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--echo"]:
        echo(sys.argv[2])
        sys.exit(0)
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    runs = []
    for _ in range(int(os.environ.get("RUNS", "1"))):
        p = subprocess.Popen(
            [sys.executable, __file__, "--echo", PREFIX], stdout=subprocess.PIPE, text=True
        )
        assert p.stdout.readline().strip() == "ready"
        runs.append(measure(count, 50))
        p.wait(timeout=30)
    print(json.dumps({k: statistics.median(r[k] for r in runs) for k in runs[0]}))
