"""Python webmesh 0.1.2 client against a Rust server: python client_calls_rust.py PORT CODEC.

The Rust test serves /echo (returns its payload), /record (stores, returns None), /recorded
(returns what was stored), /interop/greet (a #[webmesh::route] fn) and nothing else. Every check
is an assert; the last line printed is "ok N" with the number of checks.
"""
import sys
import threading
import time

from common import quiet_logs, serializer
from webmesh.webmesh_client import WebMeshClient

quiet_logs()
port, codec = int(sys.argv[1]), sys.argv[2]
is_json = codec == "json"

client = WebMeshClient(host="127.0.0.1", port=port, message_serializer=serializer(codec))
client.start(threaded=True)
client.await_started()
checks = 0


def check(cond, what):
    global checks
    assert cond, what
    checks += 1


values = [
    "hello",
    "héllo wörld ✓ 日本語 🎉",
    "",
    0,
    1,
    -1,
    255,
    -129,
    2**31,
    2**63 - 1,
    -2**63,
    1.5,
    -0.1,
    1e300,
    True,
    False,
    [],
    {},
    [1, "two", 3.5, None, [True, {"k": "v"}]],
    {"name": "Ada", "tags": ["x", "y"], "nested": {"deep": [1, 2, 3]}},
    "x" * 100_000,
    "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(33_000)),  # ~100 KB of UTF-8
]
if not is_json:
    values += [2**64 - 1, b"\x00\x01\xfe\xff", b"", bytes(range(256)) * 40, float("inf")]

for v in values:
    got = client.call("/echo", v)
    check(got == v and type(got) is type(v), f"echo {type(v).__name__}: {str(got)[:60]!r} != {str(v)[:60]!r}")

# Falsy values are replied (0.1.2 replies to everything but None).
for v in [0, False, "", [], {}]:
    got = client.call("/echo", v)
    check(got == v and type(got) is type(v), f"falsy {v!r}")

# None gets no reply: if the server sent one, the next call would read it as its own.
client.emit("/echo", None)
check(client.call("/echo", "after-none") == "after-none", "no reply for None")

# Unknown path: 0.1.2's answer.
check(client.call("/no/such/path", 1) == "Path not found", "not found")

# emit: fire and forget, seen by the server.
for i in range(5):
    client.emit("/record", {"i": i})
# The server runs requests concurrently (as 0.1.2's thread pool does): wait until all five ran.
for _ in range(200):
    recorded = client.call("/recorded", None)
    if len(recorded) >= 5:
        break
    time.sleep(0.01)
check(sorted(r["i"] for r in recorded) == list(range(5)), f"recorded {recorded!r}")

# call_async with a callback.
done = threading.Event()
results = []


def callback(result):
    results.append(result)
    done.set()


client.call_async("/echo", {"async": True}, callback=callback)
check(done.wait(10) and results == [{"async": True}], f"call_async {results!r}")

# A typed #[webmesh::route] fn: the dict decodes into the Rust struct and back.
greeting = client.call("/interop/greet", {"name": "Py", "count": 2})
check(greeting == {"text": "hello Py", "count": 3}, f"greet {greeting!r}")

# A payload of the wrong type for the typed route: no reply (logged by the server, as 0.1.2),
# and the connection keeps working.
client.emit("/interop/greet", "not a greeting")
check(client.call("/echo", "still-alive") == "still-alive", "alive after a bad payload")

client.close()
print("ok", checks)
