// yz-pubsub.js: pubsub channels for yz-browser.js (docs/howto/pubsub.md).
//
// A channel lives at the 3 server nodes closest to sha256(name), its homes.
// The browser subscribes at each of them (pubsub.sub), keeps those WebSocket
// connections, renews every ttl/2 with a fresh lookup, and subscribes again at
// once when a home's connection closes. The homes push every message published
// on the channel (pubsub.msg); copies from the other homes are dropped by id.
// A browser-class peer is never a home itself.
//
//   const sub = await yz.subscribe("alerts", (m) => console.log(m.sender, m.data));
//   await yz.publish("alerts", "hello");  // {mid, homes, reached}
//   sub.close();

import { YzError, hex } from "./yz-peer.js";

const HOMES = 3, TTL = 120, SEEN_MAX = 4096, RETRY_MAX_MS = 30000, MAX_DATA = 16384;
const jsonBytes = (s) => new TextEncoder().encode(JSON.stringify(s)).length - 2;

export class Channels {
  constructor(client) {
    this.client = client;
    this.channels = new Map();  // channel key (hex) -> {name, key, homes, handlers, timer, retry}
    this.seen = new Set();      // message ids delivered lately (oldest first)
  }

  async subscribe(name, onmessage, ttl = TTL) {
    if (typeof onmessage !== "function") throw new YzError("INVALID_ARGUMENT", "subscribe(name, onmessage): onmessage must be a function");
    if (!(ttl >= 1 && ttl <= 600)) throw new YzError("INVALID_ARGUMENT", "ttl must be from 1 to 600 seconds");
    const key = await this.client.constructor.keyFor(name);
    let ch = this.channels.get(key);
    if (!ch) {
      ch = { name, key, ttl, homes: new Set(), handlers: new Set(), timer: null, retry: 1000, ready: false,
        running: false, again: false, first: null };
      this.channels.set(key, ch);
      ch.first = this.round(ch);
    }
    ch.handlers.add(onmessage);
    try { await ch.first; } catch (e) { ch.handlers.delete(onmessage); throw e; }
    return { channel: name, homes: () => ch.homes.size, close: () => this.leave(ch, onmessage) };
  }

  async publish(name, data) {
    if (typeof data !== "string" || jsonBytes(data) > MAX_DATA) throw new YzError("INVALID_ARGUMENT", `data must be a string of at most ${MAX_DATA} bytes as JSON`);
    const key = await this.client.constructor.keyFor(name);
    const mid = hex(crypto.getRandomValues(new Uint8Array(16)));
    this.deliver(key, mid, this.client.idHex, data);  // this browser's own subscriptions
    const homes = (await this.client.lookup(key)).nodes.slice(0, HOMES);
    const replies = await Promise.all(homes.map((h) => this.ask(h, { t: "pubsub.pub", ch: key, mid, data })));
    const took = replies.filter((r) => r.t === "pubsub.ok");
    if (!took.length) throw this.failure(`no home of channel ${JSON.stringify(name)} took the message`, replies, homes);
    return { mid, homes: took.length, reached: Math.max(...took.map((r) => r.count)) };
  }

  /** One look for the homes and one subscribe at each. The first round throws when no
   *  home took the subscription; later ones keep trying, less and less often. */
  async round(ch) {
    if (this.client.closed) throw new YzError("CONNECTION_CLOSED", "the client closed");
    if (ch.running) { ch.again = true; return; }  // one round at a time; another right after
    ch.running = true; ch.again = false;
    clearTimeout(ch.timer);
    let error = null;
    try {
      const homes = (await this.client.lookup(ch.key)).nodes.slice(0, HOMES);
      const replies = await Promise.all(homes.map((h) => this.ask(h, { t: "pubsub.sub", ch: ch.key, ttl: ch.ttl })));
      const took = new Set(homes.filter((h, i) => replies[i].t === "pubsub.ok").map((h) => h.id));
      for (const id of ch.homes) if (!took.has(id)) this.unsub(ch, id);
      ch.homes = took;
      if (!took.size) error = this.failure(`no home of channel ${JSON.stringify(ch.name)} took the subscription`, replies, homes);
    } catch (e) { error = e; }
    ch.running = false;
    if (this.channels.get(ch.key) !== ch) {  // left meanwhile: let go of the homes it just took
      for (const id of ch.homes) this.unsub(ch, id);
      return;
    }
    if (error && !ch.ready) { this.drop(ch); throw error; }  // subscribe() fails
    if (error) console.warn(`yz: ${error.code}: ${error.message}; trying again in ${ch.retry} ms`);
    ch.ready = true;
    const wait = error ? ch.retry : ch.ttl * 500;  // renewed every ttl/2
    ch.retry = error ? Math.min(2 * ch.retry, RETRY_MAX_MS) : 1000;
    clearTimeout(ch.timer);
    ch.timer = setTimeout(() => this.round(ch), ch.again ? 200 : wait);
  }

  /** Withdraw from the home `id` (nobody waits for its reply). */
  unsub(ch, id) { this.client.peers.get(id)?.send({ t: "pubsub.unsub", rid: this.client.nextRid++, ch: ch.key }); }

  async ask(home, msg) {
    try { return await (await this.client.connect(home.addr, home.id)).request(msg); }
    catch (e) { return { t: "error", code: e.code || "PEER_UNREACHABLE", message: e.message }; }
  }

  failure(what, replies, homes) {
    if (!homes.length) return new YzError("NO_PEERS", `${what}: no server node found to hold it`);
    const refusal = replies.find((r) => r.t === "error");
    return new YzError(refusal ? refusal.code : "TIMEOUT", `${what}: ${refusal ? refusal.message : "no home answered"}`);
  }

  leave(ch, onmessage) {
    ch.handlers.delete(onmessage);
    if (!ch.handlers.size && this.channels.get(ch.key) === ch) {
      for (const id of ch.homes) this.unsub(ch, id);
      this.drop(ch);
    }
  }

  drop(ch) {
    clearTimeout(ch.timer);
    if (this.channels.get(ch.key) === ch) this.channels.delete(ch.key);
  }

  /** A message from a peer: a home's delivery, or a request this browser cannot serve. */
  onMessage(peer, msg) {
    if (msg.t === "pubsub.msg") {
      const ch = this.channels.get(msg.ch);
      if (ch && ch.homes.has(peer.info.id)) this.deliver(msg.ch, msg.mid, msg.from, msg.data);
      return;
    }
    peer.send({ t: "error", rid: msg.rid, code: "WRONG_ROLE",
      message: "this is a browser-class peer: it holds no channels; ask the server nodes closest to the channel" });
  }

  deliver(key, mid, sender, data) {
    const ch = this.channels.get(key);
    if (!ch || this.seen.has(mid)) return;
    this.seen.add(mid);
    if (this.seen.size > SEEN_MAX) this.seen.delete(this.seen.values().next().value);
    for (const h of [...ch.handlers]) {
      try { h({ channel: ch.name, data, sender, mid }); } catch (e) { console.warn("yz: a subscriber's handler threw", e); }
    }
  }

  /** Whether the peer `id` is a home of one of the channels. */
  holds(id) { return [...this.channels.values()].some((ch) => ch.homes.has(id)); }

  /** The client is closing: every channel left at once, without a word to its homes. */
  close() {
    for (const ch of this.channels.values()) clearTimeout(ch.timer);
    this.channels.clear();
  }

  /** A connection closed: subscribe again where it was a home. */
  closed(peer) {
    for (const ch of this.channels.values()) {
      if (ch.homes.delete(peer.info.id)) {
        clearTimeout(ch.timer);
        ch.timer = setTimeout(() => this.round(ch), 200);
      }
    }
  }
}
