/**
 * webmesh-client: call, emit to and subscribe to webmesh services from browsers and Node, with
 * the route and topic types generated from a Rust contract crate (`webmesh typescript URL`).
 *
 * ```ts
 * import { Client } from "webmesh-client";
 * import { routes } from "./generated/inventory.js";
 *
 * const client = await Client.connect("ws://127.0.0.1:4269");
 * const qty = await client.call(routes.stockAdd, { sku: "bolt-m6", qty: 40 });
 * ```
 */
export { Client, route, topic, WebmeshError } from "./client.js";
export type { ClientOptions, Route, Topic, TopicEvent } from "./client.js";
export {
  BEARER_SUBPROTOCOL_PREFIX,
  codecNamed,
  decodeFrame,
  decodeLegacy,
  encodeFrame,
  encodeLegacy,
  fromHex,
  json,
  Kind,
  msgpack,
  SUBPROTOCOL_PREFIX,
  toHex,
  WireError,
} from "./wire.js";
export type { Codec, CodecName, Frame } from "./wire.js";
