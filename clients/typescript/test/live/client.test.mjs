// The client against live servers the Rust test `tests/tests/typescript.rs` starts: a webmesh-rs
// server (WEBMESH_URL), one that wants a bearer token (WEBMESH_AUTH_URL), and the Python webmesh
// 0.1.2 reference (WEBMESH_LEGACY_URL).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Client, route, topic, WebmeshError } from "../../dist/index.js";

const url = process.env.WEBMESH_URL;
const legacyUrl = process.env.WEBMESH_LEGACY_URL;
const authUrl = process.env.WEBMESH_AUTH_URL;
// Bounded: whatever happens, the run ends (a client left open would keep Node alive).
setTimeout(() => {
  console.error("the live tests did not end within 60 s");
  process.exit(1);
}, 60_000).unref();

if (!url || !legacyUrl || !authUrl) throw new Error("run through `cargo test --test typescript`: WEBMESH_URL, WEBMESH_AUTH_URL and WEBMESH_LEGACY_URL are needed");

const echo = route("/echo");
const div = route("/div");
const sleep = route("/sleep");
const poke = route("/poke");
const kick = route("/kick");
const publishTicks = route("/publish_ticks");
const ticks = topic("/ts/ticks");

for (const codec of ["msgpack", "json"]) {
  test(`calls, typed errors, not found and timeouts (${codec})`, async () => {
    const c = await Client.connect(url, { codec });
    assert.equal(c.framing, "v1");
    assert.deepEqual(await c.call(echo, { k: [1, "two", null] }), { k: [1, "two", null] });
    assert.equal(await c.call(div, { a: 84, b: 2 }), 42);
    await assert.rejects(c.call(div, { a: 1, b: 0 }), (e) => e instanceof WebmeshError && e.code === "handler" && e.data === "DivByZero");
    await assert.rejects(c.call(route("/nope"), 1), (e) => e.code === "not_found");
    // The server learns the budget: its deadline_exceeded may beat the client's own timer.
    await assert.rejects(c.call(sleep, 5000, { timeoutMs: 200 }), (e) => ["timeout", "deadline_exceeded"].includes(e.code));
    c.close();
  });
}

test("pushes arrive at their handler", async () => {
  const c = await Client.connect(url);
  const got = new Promise((resolve) => c.onPush("/poked", resolve));
  await c.call(poke, 7);
  assert.equal(await got, 7);
  c.close();
});

test("a client with reconnect survives the server closing its connection", async () => {
  const c = await Client.connect(url, { reconnect: { initialDelayMs: 50 } });
  try {
    // The server closes this connection (its answer may or may not get out first).
    await c.call(kick, null).catch((e) => assert.equal(e.code, "closed"));
    for (let i = 0; i < 200 && c.connects < 2; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(c.connects, 2, "reconnected once");
    assert.deepEqual(await c.call(echo, "after"), "after");
  } finally {
    c.close();
  }
});

test("topics: a subscription gets the messages in order", async () => {
  const c = await Client.connect(url);
  const sub = c.subscribe(ticks);
  // The subscription is in place once a call made after it is answered (one connection, in order).
  await c.call(echo, null);
  await c.call(publishTicks, 3);
  const seen = [];
  for await (const e of sub) {
    assert.equal(e.type, "message");
    seen.push(e.value.n);
    if (seen.length === 3) break;
  }
  assert.deepEqual(seen, [0, 1, 2]);
  c.close();
});

test("legacy framing with the Python 0.1.2 server", async () => {
  const c = await Client.connect(legacyUrl, { protocol: "legacy" });
  assert.equal(c.framing, "legacy");
  assert.deepEqual(await c.call(echo, { k: [1, "two"] }), { k: [1, "two"] });
  await assert.rejects(c.call(route("/nope"), 1), (e) => e.code === "not_found");
  c.close();
});

test("topics: a reconnecting subscriber gets what was published while it was away", async () => {
  const c = await Client.connect(url, { reconnect: { initialDelayMs: 400 } });
  try {
    const sub = c.subscribe(ticks);
    await c.call(echo, null);
    await c.call(publishTicks, 2);
    const seen = [];
    for await (const e of sub) {
      if (e.type === "message") seen.push(e.value.n);
      else seen.push(e.type);
      if (seen.length === 2) await c.call(route("/kick_and_publish"), 10).catch(() => {});
      if (seen.length === 5) break;
    }
    assert.deepEqual(seen, [0, 1, 10, 11, 12], "replayed from the history after the resubscription");
    assert.equal(c.connects, 2);
  } finally {
    c.close();
  }
});

test("a bearer token goes in the webmesh.bearer subprotocol", async () => {
  const c = await Client.connect(authUrl, { token: "tok-ada" });
  assert.equal(await c.call(route("/whoami"), null), "ada");
  c.close();
  await assert.rejects(Client.connect(authUrl), (e) => e.code === "closed");
});
