/**
 * The webmesh wire format, as docs/PROTOCOL.md specifies it: v1 binary frames, the 0.1.2
 * ("legacy") text frames, and the two codecs (msgpack and JSON).
 */
import { decode as msgpackDecode, encode as msgpackEncode } from "@msgpack/msgpack";

/** The subprotocol a v1 client offers: `webmesh.v1.<codec>`. */
export const SUBPROTOCOL_PREFIX = "webmesh.v1.";
/** The subprotocol that carries a bearer token (browsers cannot set headers). */
export const BEARER_SUBPROTOCOL_PREFIX = "webmesh.bearer.";

/** Frame kinds (the low four bits of a v1 header). */
export const Kind = {
  Call: 0,
  Notify: 1,
  Reply: 2,
  Error: 3,
  Cancel: 4,
  Subscribe: 5,
  Unsubscribe: 6,
  Publish: 7,
  Message: 8,
  Notice: 9,
} as const;

const FLAG_COMPRESSED = 0x10;
const FLAG_DEADLINE = 0x20;
const FLAG_SEQ = 0x40;

/** The codecs: msgpack (the default) and JSON. */
export type CodecName = "msgpack" | "json";

/** Turns values into bytes and back. */
export interface Codec {
  readonly name: CodecName;
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
}

const text = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * msgpack, as rmp-serde writes it: integers in their smallest form, floats as float64. A 64-bit
 * integer that does not fit a JS number exactly arrives as a `bigint`; smaller ones are numbers.
 */
export const msgpack: Codec = {
  name: "msgpack",
  encode: (value) => msgpackEncode(value, { useBigInt64: true, ignoreUndefined: true }),
  decode: (bytes) => msgpackDecode(bytes, { useBigInt64: true }),
};

/** JSON (UTF-8). `bigint` values cannot be sent in it. */
export const json: Codec = {
  name: "json",
  encode: (value) => text.encode(JSON.stringify(value ?? null)),
  decode: (bytes) => JSON.parse(utf8.decode(bytes)),
};

/** The codec of a name. */
export function codecNamed(name: CodecName): Codec {
  return name === "json" ? json : msgpack;
}

/** A received v1 frame. */
export interface Frame {
  kind: number;
  id: number;
  path: string;
  /** The caller's time budget, in milliseconds (flag 0x20). */
  deadlineMs?: number;
  /** A topic message's sequence number (flag 0x40). */
  seq?: number;
  /** The body, inflated. */
  payload: Uint8Array;
}

function writeVarint(out: number[], value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`not a varint: ${value}`);
  }
  let v = value;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
}

function readVarint(bytes: Uint8Array, at: { i: number }, what: string): number {
  let value = 0;
  let scale = 1;
  for (let n = 0; n < 10; n++) {
    const b = bytes[at.i];
    if (b === undefined) throw new WireError(`truncated header: ${what}`);
    at.i++;
    value += (b & 0x7f) * scale;
    if ((b & 0x80) === 0) {
      if (!Number.isSafeInteger(value)) throw new WireError(`${what} is beyond 2^53`);
      return value;
    }
    scale *= 0x80;
  }
  throw new WireError(`${what}: varint longer than 10 bytes`);
}

/** A frame that does not decode. */
export class WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WireError";
  }
}

/** Encodes a v1 frame (never compressed: compression is the sender's choice per message). */
export function encodeFrame(
  kind: number,
  id: number,
  path: string,
  payload: Uint8Array,
  options: { deadlineMs?: number; seq?: number } = {},
): Uint8Array {
  const head: number[] = [kind];
  writeVarint(head, id);
  if (options.deadlineMs !== undefined) {
    head[0] |= FLAG_DEADLINE;
    writeVarint(head, Math.max(0, Math.ceil(options.deadlineMs)));
  }
  if (options.seq !== undefined) {
    head[0] |= FLAG_SEQ;
    writeVarint(head, options.seq);
  }
  const p = text.encode(path);
  writeVarint(head, p.length);
  const out = new Uint8Array(head.length + p.length + payload.length);
  out.set(head, 0);
  out.set(p, head.length);
  out.set(payload, head.length + p.length);
  return out;
}

/** Inflates a zlib stream, refusing to produce more than `max` bytes. */
export async function inflate(bytes: Uint8Array, max: number): Promise<Uint8Array> {
  const stream = new Blob([bytes as BlobPart]).stream().pipeThrough(new DecompressionStream("deflate"));
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > max) {
      await reader.cancel();
      throw new WireError(`payload inflates past the limit of ${max} bytes`);
    }
    chunks.push(value);
  }
  return concat(chunks, total);
}

/** Deflates bytes into a zlib stream. */
export async function deflate(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as BlobPart]).stream().pipeThrough(new CompressionStream("deflate"));
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    total += value.length;
  }
  return concat(chunks, total);
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Decodes a v1 frame; a compressed body is inflated within `maxInflated` bytes. */
export async function decodeFrame(bytes: Uint8Array, maxInflated = 32 << 20): Promise<Frame> {
  const header = bytes[0];
  if (header === undefined) throw new WireError("empty frame");
  if ((header & 0x80) !== 0) throw new WireError(`reserved flag bits set: ${header}`);
  const at = { i: 1 };
  const id = readVarint(bytes, at, "id");
  const frame: Frame = { kind: header & 0x0f, id, path: "", payload: new Uint8Array() };
  if (header & FLAG_DEADLINE) frame.deadlineMs = readVarint(bytes, at, "deadline");
  if (header & FLAG_SEQ) frame.seq = readVarint(bytes, at, "seq");
  const pathLen = readVarint(bytes, at, "path length");
  if (at.i + pathLen > bytes.length) throw new WireError("truncated header: path");
  frame.path = utf8.decode(bytes.subarray(at.i, at.i + pathLen));
  const body = bytes.subarray(at.i + pathLen);
  frame.payload = header & FLAG_COMPRESSED ? await inflate(body, maxInflated) : body;
  return frame;
}

/** Hex of bytes, lower case (0.1.2's text form). */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Bytes of hex text. */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0) throw new WireError(`hex text has odd length ${hex.length}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) {
    const b = Number.parseInt(hex.slice(2 * i, 2 * i + 2), 16);
    if (Number.isNaN(b)) throw new WireError(`invalid hex digit at offset ${2 * i}`);
    out[i] = b;
  }
  return out;
}

/**
 * A 0.1.2 text frame: `{"path", "data"}` as JSON text, or as hex of zlib of msgpack (`zlib:
 * false` for a `MessagePackSerializer(compressor=None)` peer).
 */
export async function encodeLegacy(codec: Codec, path: string, data: unknown, zlib = true): Promise<string> {
  const envelope = { path, data: data === undefined ? null : data };
  if (codec.name === "json") return JSON.stringify(envelope);
  const packed = msgpack.encode(envelope);
  return toHex(zlib ? await deflate(packed) : packed);
}

/** Reads a 0.1.2 text frame (either codec, zlib or not): its path and data. */
export async function decodeLegacy(frame: string, maxInflated = 32 << 20): Promise<{ path: string; data: unknown }> {
  const trimmed = frame.trimStart();
  let envelope: unknown;
  if (trimmed.startsWith("{")) {
    envelope = JSON.parse(trimmed);
  } else {
    const bytes = fromHex(trimmed.trim());
    const first = bytes[0] ?? 0;
    const isMap = (first >= 0x80 && first <= 0x8f) || first === 0xde || first === 0xdf;
    envelope = msgpack.decode(isMap ? bytes : await inflate(bytes, maxInflated));
  }
  if (typeof envelope !== "object" || envelope === null || envelope instanceof Map) {
    throw new WireError("a 0.1.2 frame is a map");
  }
  const { path, data } = envelope as { path?: unknown; data?: unknown };
  if (typeof path !== "string") throw new WireError('the "path" of a 0.1.2 frame is a string');
  return { path, data: data ?? null };
}
