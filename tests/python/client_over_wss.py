"""Python webmesh 0.1.2's client, over wss://, against a Rust server with TLS:
python client_over_wss.py PORT CA_PEM_FILE.

0.1.2's WebMeshClient always dials ws://, so this subclass overrides only `run` to dial
wss://localhost:PORT with an ssl context that trusts the test CA; everything else (serializer,
envelope, call/emit) is 0.1.2's own. Prints "ok N" with the number of checks.
"""
import ssl
import sys

import websockets
from common import quiet_logs
from webmesh.webmesh_client import WebMeshClient

quiet_logs()
port, ca_file = int(sys.argv[1]), sys.argv[2]


class WssClient(WebMeshClient):
    async def run(self):
        # WebMeshComponent.run: the stop event; then 0.1.2's client body, over TLS.
        await super(WebMeshClient, self).run()
        context = ssl.create_default_context(cafile=ca_file)
        async with websockets.connect(f"wss://localhost:{self.port}", ssl=context) as client:
            self.client = client
            self.started.set()
            await self.stop.wait()


client = WssClient(host="localhost", port=port)
client.start(threaded=True)
client.await_started()
checks = 0
for value in ["over tls", 42, [1, 2, {"k": "v"}], b"\x00\xff"]:
    got = client.call("/echo", value)
    assert got == value, (value, got)
    checks += 1
client.emit("/record", "emitted over tls")
got = client.call("/recorded", None)
assert got == ["emitted over tls"], got
checks += 1
client.close()
print("ok", checks)
