// The wire format against the repository's references: docs/PROTOCOL.md's byte examples and
// the golden vectors the real Python webmesh 0.1.2 wrote.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { decodeFrame, decodeLegacy, encodeFrame, encodeLegacy, fromHex, json, Kind, msgpack, toHex } from "../../dist/index.js";

const root = fileURLToPath(new URL("../../../../", import.meta.url));
const protocol = readFileSync(root + "docs/PROTOCOL.md", "utf8");
const vectors = JSON.parse(readFileSync(root + "webmesh-codec/tests/vectors/legacy-0.1.2.json", "utf8")).vectors;
const spaced = (bytes) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(" ");

test("the frame encoder writes PROTOCOL.md's examples", () => {
  const hi = msgpack.encode("hi");
  for (const frame of [
    encodeFrame(Kind.Call, 7, "/echo", hi),
    encodeFrame(Kind.Call, 7, "/echo", hi, { deadlineMs: 250 }),
    encodeFrame(Kind.Notify, 0, "/tick", msgpack.encode(1)),
    encodeFrame(Kind.Cancel, 7, "", new Uint8Array()),
    encodeFrame(Kind.Call, 300, "/echo", json.encode({ a: 1 })),
    encodeFrame(Kind.Subscribe, 3, "/prices/*", msgpack.encode({})),
  ]) {
    assert.ok(protocol.includes(spaced(frame)), `PROTOCOL.md does not show ${spaced(frame)}`);
  }
});

test("the frame decoder reads PROTOCOL.md's examples, compressed ones too", async () => {
  const call = await decodeFrame(fromHex("2007fa01052f6563686fa26869"));
  assert.deepEqual([call.kind, call.id, call.path, call.deadlineMs, msgpack.decode(call.payload)], [Kind.Call, 7, "/echo", 250, "hi"]);
  const big = await decodeFrame(
    fromHex("1008042f62696778" + "01bbc57e213169148e86c068088c86c068088c86c068080cf5100000e2e9fb88"),
  );
  assert.equal(msgpack.decode(big.payload), "ab".repeat(1000));
  await assert.rejects(decodeFrame(fromHex("1008042f62696778" + "01bbc57e21"), 10), /truncated|inflate|limit|invalid|unexpected|end/i);
  await assert.rejects(decodeFrame(new Uint8Array([0x00, 0x87])), /truncated/);
});

test("0.1.2 frames from Python decode, in every form", async () => {
  for (const v of vectors) {
    const expected = v.name === "missing_data" ? null : msgpack.decode(fromHex(v.data_msgpack));
    for (const form of [v.msgpack_zlib, v.msgpack_plain, v.json].filter((f) => typeof f === "string")) {
      const got = await decodeLegacy(form);
      assert.equal(got.path, v.path, v.name);
      if (form === v.json && v.name.startsWith("bin")) continue; // JSON has no bytes
      if (form === v.json && typeof expected === "bigint") continue; // JSON.parse rounds past 2^53
      assert.deepEqual(got.data, expected, `${v.name}`);
    }
  }
});

test("0.1.2 frames written here are Python's bytes, and zlib ones read back", async () => {
  let exact = 0;
  for (const v of vectors) {
    if (v.name === "reordered_keys" || v.name === "missing_data") continue;
    const data = msgpack.decode(fromHex(v.data_msgpack));
    // A float with an integral value (Python's 3.0) is a plain number in JS: it goes out as an
    // integer. Every value JS holds as msgpack does is byte for byte what Python writes.
    if (toHex(msgpack.encode(data)) === v.data_msgpack) {
      assert.equal(await encodeLegacy(msgpack, v.path, data, false), v.msgpack_plain, v.name);
      exact++;
    }
    const zipped = await encodeLegacy(msgpack, v.path, data);
    assert.deepEqual(await decodeLegacy(zipped), { path: v.path, data }, v.name);
  }
  assert.ok(exact >= 20, `only ${exact} vectors compared byte for byte`);
  assert.equal(await encodeLegacy(json, "/echo", "hi"), '{"path":"/echo","data":"hi"}');
  assert.equal(toHex(fromHex("00ff10")), "00ff10");
});
