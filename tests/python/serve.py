"""A Python webmesh 0.1.2 server for Rust clients: python serve.py CODEC.

Prints "port N" once it listens on 127.0.0.1, then serves until stdin closes. Routes: /echo
(returns its payload), /record (stores, returns None), /recorded (returns what was stored),
/sleep (sleeps payload seconds, returns it), /error (raises).
"""
import sys
import time

from common import quiet_logs, serializer, server_port
from webmesh.webmesh_server import WebMeshServer

quiet_logs()
server = WebMeshServer(host="127.0.0.1", port=0, message_serializer=serializer(sys.argv[1]))
recorded = []


@server.on("/echo")
def echo(payload, path, client):
    return payload


@server.on("/record")
def record(payload, path, client):
    recorded.append(payload)


@server.on("/recorded")
def get_recorded(payload, path, client):
    return list(recorded)


@server.on("/sleep")
def sleep(payload, path, client):
    time.sleep(payload)
    return payload


@server.on("/error")
def error(payload, path, client):
    raise ValueError("boom")


server.start(threaded=True)
server.await_started()
print("port", server_port(server), flush=True)
sys.stdin.read()
server.close()
