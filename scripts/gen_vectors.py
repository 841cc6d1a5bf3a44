#!/usr/bin/env python3
"""Regenerates the golden vectors of the 0.1.2 legacy framing from the real Python serializers.

    .venv/bin/python scripts/gen_vectors.py > webmesh-codec/tests/vectors/legacy-0.1.2.json

Every frame in the output is produced by pip `webmesh==0.1.2` itself (MessagePackSerializer with
its default zlib compressor, MessagePackSerializer(compressor=None), StandardJsonSerializer, and
SimpleDictProtocol), so the Rust decoder is checked against what the reference really sends.

Fields of each vector:
  name          unique name, the Rust test keys typed expectations on it
  path          the path packed in the envelope
  data_msgpack  hex of msgpack.dumps(data): the expected data, independent of the framing
  data_json     the data as JSON, when the value has a JSON form (else null)
  msgpack_zlib  the frame text from MessagePackSerializer() (hex of zlib of msgpack)
  msgpack_plain the frame text from MessagePackSerializer(compressor=None)
  json          the frame text from StandardJsonSerializer(), when the value has a JSON form
"""
import json
import sys

import msgpack
from webmesh.message_protocols import SimpleDictProtocol
from webmesh.message_serializers import MessagePackSerializer, StandardJsonSerializer

CASES = [
    ("string", "/echo", "hello"),
    ("empty_string", "/echo", ""),
    ("unicode", "/i18n", "héllo wörld ✓ 日本語 🎉"),
    ("none", "/none", None),
    ("true", "/bool", True),
    ("false", "/bool", False),
    ("zero", "/int", 0),
    ("neg_fixint", "/int", -32),
    ("int8", "/int", -100),
    ("uint8", "/int", 200),
    ("uint16", "/int", 65535),
    ("int32", "/int", -2**31),
    ("uint32", "/int", 2**32 - 1),
    ("int64_min", "/int", -2**63),
    ("uint64_max", "/int", 2**64 - 1),
    ("float", "/float", 1.5),
    ("float_neg", "/float", -0.1),
    ("float_big", "/float", 1.7976931348623157e308),
    ("bin", "/bin", b"\x00\x01\xfe\xff"),
    ("bin_empty", "/bin", b""),
    ("list", "/list", [1, "two", 3.0, None, True]),
    ("empty_list", "/list", []),
    ("empty_map", "/map", {}),
    ("greeting", "/greet", {"name": "Ada", "count": 3}),
    ("nested", "/nested", {"a": {"b": [1, {"c": "d"}]}, "e": [[], {}]}),
    ("small_struct", "/small", {"id": 42, "name": "sixteen-chars-xx", "values": [1, 2, 3, 4, 5, 6, 7, 8]}),
    ("long_string", "/long", "webmesh " * 2_000),
    ("long_path", "/" + "p" * 300, 1),
    ("unicode_path", "/pâth/✓", "ok"),
]


def main():
    zlib_ser = MessagePackSerializer()
    plain_ser = MessagePackSerializer(compressor=None)
    json_ser = StandardJsonSerializer()
    proto = SimpleDictProtocol()
    out = []
    for name, path, data in CASES:
        envelope = proto.pack(path, data)
        try:
            json_frame = json_ser.serialize(envelope)
            data_json = data
        except TypeError:  # bytes have no JSON form
            json_frame = None
            data_json = None
        out.append({
            "name": name,
            "path": path,
            "data_msgpack": msgpack.dumps(data).hex(),
            "data_json": data_json,
            "msgpack_zlib": zlib_ser.serialize(envelope),
            "msgpack_plain": plain_ser.serialize(envelope),
            "json": json_frame,
        })
    # An envelope without "data": 0.1.2's unpack reads it as None.
    no_data = {"path": "/nodata"}
    out.append({
        "name": "missing_data",
        "path": "/nodata",
        "data_msgpack": msgpack.dumps(None).hex(),
        "data_json": None,
        "msgpack_zlib": zlib_ser.serialize(no_data),
        "msgpack_plain": plain_ser.serialize(no_data),
        "json": json_ser.serialize(no_data),
    })
    # Keys in the other order, and an extra key: a map is a map.
    reordered = {"extra": [1, 2], "data": "x", "path": "/reordered"}
    out.append({
        "name": "reordered_keys",
        "path": "/reordered",
        "data_msgpack": msgpack.dumps("x").hex(),
        "data_json": "x",
        "msgpack_zlib": zlib_ser.serialize(reordered),
        "msgpack_plain": plain_ser.serialize(reordered),
        "json": json_ser.serialize(reordered),
    })
    json.dump({
        "generator": "scripts/gen_vectors.py",
        "reference": "webmesh==0.1.2, msgpack==%d.%d.%d" % msgpack.version[:3],
        "vectors": out,
    }, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
