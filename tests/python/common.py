"""Helpers shared by the interop scripts the Rust tests run (cwd is this directory)."""
import logging
import sys

from webmesh.message_serializers import MessagePackSerializer, StandardJsonSerializer


def serializer(name):
    """The 0.1.2 serializer for a codec name used by the Rust tests."""
    return {
        "msgpack": MessagePackSerializer(),
        "msgpack-plain": MessagePackSerializer(compressor=None),
        "json": StandardJsonSerializer(),
    }[name]


def quiet_logs():
    """0.1.2 logs every connection at INFO; keep the test output to errors."""
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)


def server_port(server):
    """The port a started WebMeshServer listens on (bound with port=0)."""
    return server.server.sockets[0].getsockname()[1]
