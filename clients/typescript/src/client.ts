/**
 * The client: typed calls, emits, pushes and topics over one WebSocket, with timeouts and
 * reconnection. Runs unchanged in browsers and in Node 20+ (Node 20 needs
 * `--experimental-websocket`, or a `WebSocket` in the options).
 */
import {
  BEARER_SUBPROTOCOL_PREFIX,
  type Codec,
  type CodecName,
  codecNamed,
  decodeFrame,
  decodeLegacy,
  encodeFrame,
  encodeLegacy,
  type Frame,
  Kind,
  SUBPROTOCOL_PREFIX,
} from "./wire.js";

/** A route: its path, and (for the compiler only) its request, response and error types. */
export interface Route<Req, Resp, Err = never> {
  readonly path: string;
  /** Never set: carries the types. */
  readonly __types?: (req: Req) => [Resp, Err];
}

/** Declares a route by hand (generated code does it for a contract crate's routes). */
export function route<Req, Resp, Err = never>(path: string): Route<Req, Resp, Err> {
  return { path };
}

/** A topic: its path or pattern (`*` segments), and its message type. */
export interface Topic<T> {
  readonly path: string;
  readonly __type?: (t: T) => T;
}

/** Declares a topic by hand. */
export function topic<T>(path: string): Topic<T> {
  return { path };
}

/** An error from the server (or the connection): `code` says which. */
export class WebmeshError<E = unknown> extends Error {
  /** `handler` (then `data` is the handler's typed error), `not_found`, `bad_request`,
   * `forbidden`, `deadline_exceeded`, `unavailable`, `internal`, ..., or on this side `timeout`
   * and `closed`. */
  readonly code: string;
  readonly data?: E;

  constructor(code: string, message: string, data?: E) {
    super(message);
    this.name = "WebmeshError";
    this.code = code;
    this.data = data;
  }
}

/** What a subscription yields. */
export type TopicEvent<T> =
  | { type: "message"; path: string; seq: number; value: T }
  | { type: "lagged"; path: string; missed: number }
  | { type: "gap"; path?: string; missed?: number; epochChanged: boolean }
  | { type: "closed"; reason: string };

/** Options of [`Client.connect`]. */
export interface ClientOptions {
  /** The codec (default msgpack). */
  codec?: CodecName;
  /** `v1` (default), or `legacy` for a Python webmesh 0.1.2 server. `auto` tries v1, then
   * legacy when the handshake fails (a browser fails a handshake the server answers without a
   * subprotocol). */
  protocol?: "v1" | "legacy" | "auto";
  /** A bearer token, sent as the `webmesh.bearer.<token>` subprotocol (v1). */
  token?: string;
  /** How long a call waits for its answer, in ms (default 30,000). */
  timeoutMs?: number;
  /** Reconnect when the connection drops (default off): calls made meanwhile wait for it,
   * subscriptions resubscribe and get what they missed, or a gap. */
  reconnect?: boolean | { initialDelayMs?: number; maxDelayMs?: number };
  /** Inflate limit for compressed frames, in bytes (default 32 MiB). */
  maxInflatedSize?: number;
  /** The WebSocket class, where there is no global one (Node 20 without its flag). */
  WebSocket?: typeof WebSocket;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: WebmeshError) => void;
  timer?: ReturnType<typeof setTimeout>;
}

interface Sub {
  id: number;
  pattern: string;
  queue: TopicEvent<unknown>[];
  waiters: ((e: IteratorResult<TopicEvent<unknown>>) => void)[];
  last: Map<string, number>;
  ended: boolean;
}

function matches(pattern: string, path: string): boolean {
  const p = pattern.split("/");
  const s = path.split("/");
  return p.length === s.length && p.every((seg, i) => seg === "*" || seg === s[i]);
}

/** A connection to a webmesh server. */
export class Client {
  private ws!: WebSocket;
  private readonly codec: Codec;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly legacyPending = new Map<string, Pending[]>();
  private readonly pushes = new Map<string, Set<(value: unknown) => void>>();
  private readonly subs = new Map<number, Sub>();
  private epoch = 0;
  private closedByUser = false;
  private opened!: Promise<void>;
  private openWaiters: (() => void)[] = [];
  private connected = false;
  /** `v1` or `legacy`: what the server took. */
  framing: "v1" | "legacy" = "v1";
  /** How many times the connection was made (1, plus one per reconnection). */
  connects = 0;

  private constructor(
    private readonly url: string,
    private readonly options: ClientOptions,
  ) {
    this.codec = codecNamed(options.codec ?? "msgpack");
  }

  /** Connects to `url` (`ws://` or `wss://`). */
  static async connect(url: string, options: ClientOptions = {}): Promise<Client> {
    const c = new Client(url, options);
    await c.open(options.protocol ?? "v1");
    return c;
  }

  private get timeoutMs(): number {
    return this.options.timeoutMs ?? 30_000;
  }

  private async open(protocol: "v1" | "legacy" | "auto"): Promise<void> {
    const Ws = this.options.WebSocket ?? globalThis.WebSocket;
    if (!Ws) throw new WebmeshError("closed", "no WebSocket: pass one in the options (Node 20: --experimental-websocket)");
    const attempt = (legacy: boolean) =>
      new Promise<WebSocket>((resolve, reject) => {
        const offered = legacy
          ? []
          : [
              SUBPROTOCOL_PREFIX + this.codec.name,
              ...(this.options.token ? [BEARER_SUBPROTOCOL_PREFIX + this.options.token] : []),
            ];
        const ws = new Ws(this.url, offered);
        ws.binaryType = "arraybuffer";
        ws.onopen = () => resolve(ws);
        ws.onerror = () => reject(new WebmeshError("closed", `cannot connect to ${this.url}`));
      });
    let ws: WebSocket;
    if (protocol === "legacy") {
      ws = await attempt(true);
    } else {
      try {
        ws = await attempt(false);
      } catch (e) {
        if (protocol !== "auto") throw e;
        ws = await attempt(true);
      }
    }
    this.framing = ws.protocol.startsWith(SUBPROTOCOL_PREFIX) ? "v1" : "legacy";
    this.attach(ws);
  }

  private attach(ws: WebSocket): void {
    this.ws = ws;
    this.connected = true;
    this.connects++;
    this.opened = Promise.resolve();
    for (const w of this.openWaiters.splice(0)) w();
    ws.onmessage = (ev: MessageEvent) => {
      void this.receive(ev.data).catch((e) => console.warn("webmesh: a frame did not decode:", e));
    };
    ws.onclose = () => this.lost();
    ws.onerror = () => {};
    // Resubscribe what was subscribed before a reconnection.
    for (const sub of this.subs.values()) this.sendSubscribe(sub);
  }

  private lost(): void {
    this.connected = false;
    const closed = () => new WebmeshError("closed", "the connection closed");
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(closed());
      this.pending.delete(id);
    }
    for (const queue of this.legacyPending.values()) for (const p of queue.splice(0)) p.reject(closed());
    const retry = this.options.reconnect;
    if (this.closedByUser || !retry) {
      for (const sub of this.subs.values()) this.deliver(sub, { type: "closed", reason: "the connection closed" }, true);
      this.subs.clear();
      return;
    }
    this.opened = new Promise((resolve) => this.openWaiters.push(resolve));
    const cfg = typeof retry === "object" ? retry : {};
    let delay = cfg.initialDelayMs ?? 100;
    const again = () => {
      if (this.closedByUser) return;
      this.open(this.framing).then(
        () => {},
        () => {
          delay = Math.min(delay * 2, cfg.maxDelayMs ?? 5_000);
          setTimeout(again, delay);
        },
      );
    };
    setTimeout(again, delay);
  }

  /** Closes the connection; calls in flight fail with `closed`. */
  close(): void {
    this.closedByUser = true;
    this.ws.close(1000, "client closed");
  }

  /** Calls `route` with `request` and waits for its reply (`timeoutMs` of the options, or this
   * call's). A handler's error rejects with a `WebmeshError` whose `code` is `handler` and
   * whose `data` is the route's error type. */
  async call<Req, Resp, Err>(
    route: Route<Req, Resp, Err>,
    request: NoInfer<Req>,
    options: { timeoutMs?: number } = {},
  ): Promise<Resp> {
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    await this.ready(timeoutMs);
    return (await this.request(route.path, request, timeoutMs)) as Resp;
  }

  /** Sends `request` to `route` without waiting for anything. */
  async emit<Req>(route: Route<Req, unknown, unknown>, request: NoInfer<Req>): Promise<void> {
    await this.ready(this.timeoutMs);
    if (this.framing === "legacy") {
      this.ws.send(await encodeLegacy(this.codec, route.path, request));
    } else {
      this.ws.send(encodeFrame(Kind.Notify, 0, route.path, this.codec.encode(request)));
    }
  }

  /** Handles what the server pushes on `path` (v1). Returns a function that stops it. */
  onPush<T>(path: string | Topic<T>, handler: (value: T) => void): () => void {
    const p = typeof path === "string" ? path : path.path;
    let set = this.pushes.get(p);
    if (!set) this.pushes.set(p, (set = new Set()));
    const h = handler as (value: unknown) => void;
    set.add(h);
    return () => set?.delete(h);
  }

  /** Subscribes to `topic` (or to `path`, a concrete path of its pattern): an async iterable
   * of its events. Breaking out of the loop (or `return()`) unsubscribes. */
  subscribe<T>(t: Topic<T>, path?: string): AsyncIterableIterator<TopicEvent<T>> {
    if (this.framing === "legacy") throw new WebmeshError("unsupported", "a webmesh 0.1.2 server has no topics");
    const sub: Sub = { id: this.nextId++, pattern: path ?? t.path, queue: [], waiters: [], last: new Map(), ended: false };
    this.subs.set(sub.id, sub);
    this.sendSubscribe(sub);
    const self = this;
    const it: AsyncIterableIterator<TopicEvent<T>> = {
      next() {
        const e = sub.queue.shift();
        if (e) return Promise.resolve({ value: e as TopicEvent<T>, done: false });
        if (sub.ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => sub.waiters.push(resolve as (e: IteratorResult<TopicEvent<unknown>>) => void));
      },
      return() {
        self.unsubscribe(sub);
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]() {
        return it;
      },
    };
    return it;
  }

  private unsubscribe(sub: Sub): void {
    if (!this.subs.delete(sub.id)) return;
    sub.ended = true;
    for (const w of sub.waiters.splice(0)) w({ value: undefined, done: true });
    if (this.connected) this.ws.send(encodeFrame(Kind.Unsubscribe, sub.id, "", this.codec.encode(null)));
  }

  private sendSubscribe(sub: Sub): void {
    if (!this.connected) return;
    const body: Record<string, unknown> = {};
    if (this.epoch && sub.last.size > 0) {
      body.since = { epoch: this.epoch, last: Object.fromEntries(sub.last) };
    }
    const id = sub.id;
    // The answer is a REPLY {epoch, at} or an ERROR for the subscription's id.
    this.pending.set(id, {
      resolve: (answer) => {
        const a = answer as { epoch?: number; at?: Record<string, number> } | null;
        if (a?.epoch) this.epoch = a.epoch;
        for (const [p, seq] of Object.entries(a?.at ?? {})) if (!sub.last.has(p)) sub.last.set(p, seq);
      },
      reject: (e) => this.deliver(sub, { type: "closed", reason: e.message }, true),
    });
    this.ws.send(encodeFrame(Kind.Subscribe, id, sub.pattern, this.codec.encode(body)));
  }

  private deliver(sub: Sub, e: TopicEvent<unknown>, end = false): void {
    const w = sub.waiters.shift();
    if (w) w({ value: e, done: false });
    else sub.queue.push(e);
    if (end) {
      sub.ended = true;
      this.subs.delete(sub.id);
      for (const rest of sub.waiters.splice(0)) rest({ value: undefined, done: true });
    }
  }

  private ready(timeoutMs: number): Promise<void> {
    if (this.connected) return Promise.resolve();
    if (this.closedByUser || !this.options.reconnect) {
      return Promise.reject(new WebmeshError("closed", "the connection is closed"));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new WebmeshError("timeout", `not reconnected within ${timeoutMs} ms`)), timeoutMs);
      void this.opened.then(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private async request(path: string, request: unknown, timeoutMs: number): Promise<unknown> {
    if (this.framing === "legacy") {
      // 0.1.2 replies carry no id: they answer the calls to a path in order.
      const frame = await encodeLegacy(this.codec, path, request);
      return new Promise((resolve, reject) => {
        const queue = this.legacyPending.get(path) ?? [];
        this.legacyPending.set(path, queue);
        const p: Pending = { resolve, reject };
        p.timer = setTimeout(() => {
          const i = queue.indexOf(p);
          if (i >= 0) queue.splice(i, 1);
          reject(new WebmeshError("timeout", `no reply from ${path} within ${timeoutMs} ms (a 0.1.2 callback that returns None sends none)`));
        }, timeoutMs);
        queue.push(p);
        this.ws.send(frame);
      });
    }
    const id = this.nextId++;
    const frame = encodeFrame(Kind.Call, id, path, this.codec.encode(request), { deadlineMs: timeoutMs });
    return new Promise((resolve, reject) => {
      const p: Pending = { resolve, reject };
      p.timer = setTimeout(() => {
        this.pending.delete(id);
        if (this.connected) this.ws.send(encodeFrame(Kind.Cancel, id, "", new Uint8Array()));
        reject(new WebmeshError("timeout", `no reply from ${path} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, p);
      this.ws.send(frame);
    });
  }

  private async receive(data: unknown): Promise<void> {
    const max = this.options.maxInflatedSize ?? 32 << 20;
    if (typeof data === "string") {
      const { path, data: value } = await decodeLegacy(data, max);
      const p = this.legacyPending.get(path)?.shift();
      if (!p) return;
      clearTimeout(p.timer);
      if (value === "Path not found") p.reject(new WebmeshError("not_found", `Path not found: ${path}`));
      else p.resolve(value);
      return;
    }
    const f = await decodeFrame(new Uint8Array(data as ArrayBuffer), max);
    this.dispatch(f);
  }

  private dispatch(f: Frame): void {
    const body = () => (f.payload.length ? this.codec.decode(f.payload) : null);
    switch (f.kind) {
      case Kind.Reply:
      case Kind.Error: {
        const p = this.pending.get(f.id);
        if (!p) return;
        this.pending.delete(f.id);
        clearTimeout(p.timer);
        if (f.kind === Kind.Reply) {
          p.resolve(body());
        } else {
          const e = body() as { code?: string; message?: string; data?: unknown };
          p.reject(new WebmeshError(e?.code ?? "internal", e?.message ?? "error", e?.data));
        }
        return;
      }
      case Kind.Notify: {
        const handlers = this.pushes.get(f.path);
        if (handlers) {
          const value = body();
          for (const h of handlers) h(value);
        }
        return;
      }
      case Kind.Message: {
        const value = body();
        for (const sub of this.subs.values()) {
          if (!matches(sub.pattern, f.path)) continue;
          const seq = f.seq ?? 0;
          if ((sub.last.get(f.path) ?? 0) >= seq) continue; // a replay already seen
          sub.last.set(f.path, seq);
          this.deliver(sub, { type: "message", path: f.path, seq, value });
        }
        return;
      }
      case Kind.Notice: {
        const n = body() as { kind?: string; path?: string; missed?: number; upto?: number; epoch_changed?: boolean; reason?: string };
        const targets =
          f.id !== 0 ? [this.subs.get(f.id)].filter((s): s is Sub => !!s) : [...this.subs.values()].filter((s) => n.path && matches(s.pattern, n.path));
        for (const sub of targets) {
          if (n.kind === "lag" && n.path) {
            if (n.upto !== undefined) sub.last.set(n.path, Math.max(sub.last.get(n.path) ?? 0, n.upto));
            this.deliver(sub, { type: "lagged", path: n.path, missed: n.missed ?? 0 });
          } else if (n.kind === "gap") {
            if (n.epoch_changed) sub.last.clear();
            if (n.path && n.upto !== undefined) sub.last.set(n.path, Math.max(sub.last.get(n.path) ?? 0, n.upto));
            this.deliver(sub, { type: "gap", path: n.path, missed: n.missed, epochChanged: !!n.epoch_changed });
          } else if (n.kind === "closed") {
            this.deliver(sub, { type: "closed", reason: n.reason ?? "closed by the server" }, true);
          }
        }
        return;
      }
      default:
        return;
    }
  }
}
