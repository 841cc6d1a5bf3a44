"""The Python reference's side of the benchmark: a 0.1.2 WebMeshClient calling a 0.1.2
WebMeshServer (serve.py), sequential calls only (0.1.2 cannot have two calls in flight).

    python bench_client.py PORT PAYLOADS.json SECONDS

PAYLOADS.json holds {"small": .., "large": ..}. Prints, per payload:
    <small|large> <calls> <seconds> <p50 us> <p99 us>
"""
import json
import sys
import time

from common import quiet_logs
from webmesh.webmesh_client import WebMeshClient

quiet_logs()
port, payloads, seconds = int(sys.argv[1]), json.load(open(sys.argv[2])), float(sys.argv[3])
client = WebMeshClient(host="127.0.0.1", port=port)
client.start(threaded=True)
client.await_started()

for name in ("small", "large"):
    value = payloads[name]
    warm = time.perf_counter() + min(0.5, seconds / 4)
    while time.perf_counter() < warm:
        client.call("/echo", value)
    lat = []
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline and len(lat) < 1_000_000:
        t = time.perf_counter()
        client.call("/echo", value)
        lat.append(time.perf_counter() - t)
    secs = time.perf_counter() - start
    lat.sort()
    p = lambda q: lat[round((len(lat) - 1) * q)] * 1e6
    print(name, len(lat), secs, p(0.5), p(0.99), flush=True)

client.close()
