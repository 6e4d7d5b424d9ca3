// yz-browser.js: a yzcore browser-class peer, as a plain ES module (no build step).
//
// Served by every node at /yz-browser.js. It joins a yzcore network the way `yz find-node
// --via URL` does: it accepts no connections, dials nodes over WebSocket (closing those idle
// for 5 s but a few), proves its Ed25519 key with the signed hello (WebCrypto; the key is kept
// in IndexedDB, so the browser keeps its id), and runs iterative lookups itself: findNode, put
// and get; and it subscribes and publishes on pubsub channels (yz-pubsub.js). It counts
// messages and bytes per path (ws, webrtc, relay) and direction; counting never changes what
// is sent (B3.3).
//
// Other browser-class peers it reaches over a WebRTC DataChannel, set up with
// `signal` messages through the bootstrap server (listen) or a server node,
// and when WebRTC fails, through a server node that relays (docs/reference/webrtc.md).
//
//   import { YzClient } from "http://NODE:PORT/yz-browser.js";
//   const yz = await YzClient.create();
//   await yz.join("ws://NODE:PORT/dht");
//   await yz.put("greeting", "hello");
//   console.log(await yz.get("greeting"), yz.counters);
//   const sub = await yz.subscribe("alerts", (m) => console.log(m.data));  // sub.close()
//   await yz.publish("alerts", "hello");
//   await yz.listen("ws://BOOTSTRAP:PORT/dht");      // take WebRTC offers
//   const peer = await yz.connectPeer(otherIdHex);   // peer.path: "webrtc" or "relay"
//   await peer.request({ t: "ping" });

import {
  ALPHA, GATHER_MS, IDLE_MS, K, Link, MAX_RELAYS, PROTOCOL_VERSION, Peer, RELAY_READY_MS, SERVERS,
  YzError, byDistance, closeIdle, distance, emptyCounters, gathered, hello, hex, isHex, isWsUrl,
  less, loadKeys, openSocket, sha256, short, unhex, utf8,
} from "./yz-peer.js";
import { Channels } from "./yz-pubsub.js";

const MAX_ANSWERING = 16, MAX_ANSWERING_PER_PEER = 2;  // offers answered at once (as the Python side)
const MAX_RELAY_ANSWERS = 16;  // relayed connections set up at once for dialers
const MAX_DIALS = 4;           // `dial` signals followed at once
const MAX_VALUE = 65280;       // longest value, in bytes as JSON (wire.MAX_VALUE): fits any store
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Refuse at once, as the Python side does, a value no frame could carry or that is no text
 *  (a node would close the connection over the first, or not match its error to us). */
function checkValue(value) {
  if (typeof value !== "string" || LONE_SURROGATE.test(value)) {
    throw new YzError("INVALID_MESSAGE", "the value must be a string of Unicode text");
  }
  if (utf8.encode(JSON.stringify(value)).length > MAX_VALUE) {
    throw new YzError("VALUE_TOO_LARGE", `the value is over ${MAX_VALUE} bytes as JSON; store a smaller value or split it over several keys`);
  }
}

export { PROTOCOL_VERSION, YzError };

export class YzClient {
  /** A client with the identity kept in this browser (IndexedDB). */
  static async create() {
    const keys = await loadKeys();
    const key = new Uint8Array(await crypto.subtle.exportKey("raw", keys.publicKey));
    return new YzClient(keys, key, await sha256(key));
  }

  constructor(keys, key, id) {
    this.keys = keys; this.key = key; this.id = id; this.idHex = hex(id);
    this.peers = new Map();       // id -> Peer: one verified connection per peer id
    this.connecting = new Map();  // ws URL -> pending Peer
    this.dialing = new Map();     // peer id -> pending Peer (connectPeer)
    this.sessions = new Map();    // WebRTC session -> what the dial waits for
    this.seen = new Set();        // offer sessions answered (an offer may come by several paths)
    this.answering = new Map();   // peer id -> offers being answered
    this.relaying = 0;            // relayed connections being set up for dialers
    this.asked = new Set();       // server nodes that asked us to connect (dial), being dialled
    this.known = new Map();       // id -> {id, addr, role}: server nodes this client has heard of
    this.nextRid = 1; this.seeds = [];
    this.counters = emptyCounters();
    this.failures = [];           // {code, peer, manager, message}
    this.rtcConfig = { iceServers: [] };
    this.onpeer = null;           // called with each Peer another peer opened to this one
    this.bootstrap = null; this.listening = null; this.closed = false;
    this.pubsub = new Channels(this);
  }

  count(path, dir, type, frame) {
    try {  // a counter never breaks a message (B3.3)
      const c = this.counters[path][dir];
      c.messages += 1; c.bytes += typeof frame === "number" ? frame : utf8.encode(frame).length;
      if (type) c.types[type] = (c.types[type] || 0) + 1;
    } catch { /* counted or not, the message goes on */ }
  }

  fail(failure) {
    if (this.failures.push(failure) > 100) this.failures.shift();  // the latest ones
    console.warn(`yz: ${failure.code} (${failure.manager}) peer ${short(failure.peer)}: ${failure.message}`);
  }

  // -- server nodes over WebSocket ------------------------------------------------

  /** A verified connection to the node at `url` (one per URL; its id checked every time). */
  async connect(url, expectedId = null) {
    if (this.closed) throw new YzError("CONNECTION_CLOSED", "the client closed");
    let pending = this.connecting.get(url);
    if (!pending) {
      const open = [...this.peers.values()].find((p) => p.path === "ws" && p.info.addr === url && p.isOpen());
      pending = open ? Promise.resolve(open) : this.open(url, expectedId);
      if (!open) {
        this.connecting.set(url, pending);
        pending.finally(() => this.connecting.delete(url)).catch(() => {});
      }
    }
    const peer = await pending;
    // A node answers for its own id only: one address cannot stand in for many (no eclipse).
    if (expectedId && peer.info.id !== expectedId) {
      throw new YzError("ID_MISMATCH", `${url} is ${peer.info.id}, not ${expectedId}`);
    }
    return peer;
  }

  async open(url, expectedId = null) {
    this.sweeper ??= setInterval(() => closeIdle(this), IDLE_MS / 2);  // cleared by close()
    const link = new Link(this, await openSocket(url), "ws", url);
    let info;
    try { info = await hello(this, link, expectedId); } catch (e) { link.close(); throw e; }
    const peer = this.register(new Peer(this, link, { ...info, addr: url, path: "ws" }, true));
    if (peer.link === link && SERVERS.includes(info.role)) this.learn({ id: info.id, addr: url, role: info.role });
    return peer;
  }

  learn(n) {
    if (n && isHex(n.id, 32) && isWsUrl(n.addr) && SERVERS.includes(n.role || "node") && n.id !== this.idHex) {
      this.known.set(n.id, { id: n.id, addr: n.addr, role: n.role || "node" });
    }
  }

  /** The server nodes this client knows, closest to `targetHex` first (at most k). */
  nodesNear(targetHex, k = K) {
    return [...this.known.values()].sort(byDistance(unhex(targetHex))).slice(0, k)
      .map((n) => ({ id: n.id, addr: n.addr, role: n.role }));
  }

  /** Join through the node at `url`: its answer seeds every lookup. */
  async join(url) {
    const peer = await this.connect(url);
    this.seeds = [{ id: peer.info.id, addr: url, role: peer.info.role }];
    const answer = await peer.request({ t: "find_node", target: this.idHex });
    for (const n of answer.nodes || []) if (n.addr && !this.seeds.some((s) => s.id === n.id)) this.seeds.push(n);
    this.seeds.forEach((n) => this.learn(n));
    return peer.info;
  }

  /** Iterative lookup: the k closest nodes to `target` (hex id), or the value under it. */
  async lookup(target, wantValue = false) {
    const t = unhex(target);
    const cands = new Map();
    const add = (n) => { if (n.addr && n.role !== "browser" && !cands.has(n.id))
      cands.set(n.id, { ...n, d: distance(unhex(n.id), t), state: "new" }); };
    this.seeds.forEach(add);
    const ordered = () => [...cands.values()].sort((a, b) => (less(a.d, b.d) ? -1 : less(b.d, a.d) ? 1 : 0));
    let found = null;
    for (;;) {
      const live = ordered().filter((c) => c.state !== "failed").slice(0, K);
      const fresh = live.filter((c) => c.state === "new").slice(0, ALPHA);
      if (!fresh.length || found) break;
      await Promise.all(fresh.map(async (c) => {
        c.state = "asked";
        try {
          const peer = await this.connect(c.addr, c.id);
          const reply = await peer.request(wantValue ? { t: "find_value", key: target } : { t: "find_node", target });
          if (reply.t === "error") throw new YzError(reply.code, reply.message);
          c.state = "answered";
          this.learn(c);
          if (wantValue && reply.value != null && found == null) found = reply.value;
          (reply.nodes || []).forEach(add);
        } catch { c.state = "failed"; }
      }));
    }
    return { value: found, nodes: ordered().filter((c) => c.state === "answered").slice(0, K) };
  }

  async findNode(targetHex) { return (await this.lookup(targetHex)).nodes; }

  static async keyFor(name) { return hex(await sha256(utf8.encode(name))); }

  /** Store `value` under sha256(`name`) at the k closest nodes; how many stored it. */
  async put(name, value, ttl = 3600) {
    checkValue(value);
    const key = await YzClient.keyFor(name);
    const closest = (await this.lookup(key)).nodes;
    const stored = await Promise.all(closest.map(async (c) => {
      try {
        const reply = await (await this.connect(c.addr, c.id)).request({ t: "store", key, value, ttl });
        return reply.t === "stored";
      } catch { return false; }
    }));
    return stored.filter(Boolean).length;
  }

  /** The value stored under sha256(`name`), or null. */
  async get(name) { return (await this.lookup(await YzClient.keyFor(name), true)).value; }

  /** Subscribe to the channel `name`: `onmessage({channel, data, sender, mid})` once per
   *  message; resolves once a home holds the subscription (`{channel, homes(), close()}`). */
  subscribe(name, onmessage, ttl) { return this.pubsub.subscribe(name, onmessage, ttl); }

  /** Publish `data` on the channel `name`: `{mid, homes, reached}`. */
  publish(name, data) { return this.pubsub.publish(name, data); }

  // -- peers: one connection per id -------------------------------------------------

  /** Keep one connection per peer id; answers the one kept (the other is closed). */
  register(peer) {
    if (this.closed) {  // one that was opening when the client closed
      peer.close();
      throw new YzError("CONNECTION_CLOSED", "the client closed");
    }
    const id = peer.info.id, old = this.peers.get(id);
    if (old && old !== peer && old.isOpen()) {
      // Both sides dialled at once: both keep the connection the lower id dialled.
      const dialer = (p) => (p.outbound ? this.idHex : id);
      if (!(old.path !== "ws" && peer.path !== "ws" && dialer(peer) < dialer(old))) {
        peer.close();
        return old;
      }
      this.peers.set(id, peer);
      old.close();
      return peer;
    }
    this.peers.set(id, peer);
    return peer;
  }

  forget(peer) {  // a connection closed: subscribe again where it was a home
    if (this.peers.get(peer.info.id) !== peer) return;
    this.peers.delete(peer.info.id); this.pubsub.closed(peer);
  }

  /** Up to 8 URLs of server nodes this client holds connections to (bridges first). */
  relays() {
    return [...this.peers.values()]
      .filter((p) => p.path === "ws" && SERVERS.includes(p.info.role) && isWsUrl(p.info.addr) && p.isOpen())
      .sort((a, b) => (a.info.role === "bridge" ? 0 : 1) - (b.info.role === "bridge" ? 0 : 1))
      .slice(0, MAX_RELAYS).map((p) => p.info.addr);
  }

  // -- signalling ---------------------------------------------------------------------

  /** Keep a verified connection to the bootstrap server at `url`: signals come and go on it. */
  async listen(url) {
    this.listening = url; this.closed = false;
    const peer = await this.connect(url);
    if (this.bootstrap !== peer) { this.bootstrap = peer; this.keepListening(peer, url); }
    return peer.info;
  }

  keepListening(peer, url, delay = 1000) {
    const prev = peer.link.onclosed;
    peer.link.onclosed = () => {
      prev();
      if (this.closed || this.listening !== url || this.bootstrap !== peer) return;
      this.bootstrap = null;
      const again = () => {
        if (this.closed || this.listening !== url) return;
        this.connect(url).then((p) => { this.bootstrap = p; this.keepListening(p, url); })
          .catch(() => setTimeout(again, (delay = Math.min(delay * 2, 30000))));
      };
      setTimeout(again, delay);
    };
  }

  /** Where this client's signals go: the bootstrap connection, else any server node. */
  signalPath() {
    if (this.bootstrap && this.bootstrap.isOpen()) return this.bootstrap;
    return [...this.peers.values()].find((p) => p.path === "ws" && SERVERS.includes(p.info.role) && p.isOpen()) || null;
  }

  sendSignal(via, to, data) { via.send({ t: "signal", to, frm: null, data }); }

  onSignal(via, msg) {
    const data = msg.data;
    if (!data || typeof data !== "object") return;
    const frm = isHex(msg.frm, 32) ? msg.frm : null;
    if (data.kind === "offer") { if (frm) this.acceptOffer(via, frm, data); return; }
    if (data.kind === "dial") {
      // A server node asks us to connect to it: one at a time per asker, a few in all, and
      // only to the id the relay vouched for (a dial signal cannot aim us at anyone else).
      if (!frm || !isWsUrl(data.addr) || this.peers.has(frm) || this.asked.has(frm)
          || this.asked.size >= MAX_DIALS) return;
      this.asked.add(frm);
      this.connect(data.addr, frm).catch((e) => console.warn(`yz: dial ${data.addr}: ${e.message}`))
        .finally(() => this.asked.delete(frm));
      return;
    }
    const session = this.sessions.get(data.session);
    // An answer comes from the peer dialled; an error from it or from the relay (frm null).
    if (session && (frm === session.peer || (frm === null && data.kind === "error"))) session.handle(data);
  }

  /** An error frame with no rid on a signalling path: the relay could not pass a signal on. */
  onUnsolicitedError(via, msg) {
    if (msg.code !== "PEER_UNREACHABLE") return;
    const waiting = [...this.sessions.values()].filter((s) => s.via === via && !s.answered);
    const named = waiting.filter((s) => String(msg.message || "").includes(short(s.peer)));
    const session = named[0] || waiting[0];
    if (session) session.handle({ kind: "error", session: session.id, code: msg.code, message: msg.message });
  }

  // -- dialling another browser-class peer --------------------------------------------

  /** A connection to the browser-class peer `idHex`: WebRTC, else relayed by a server node. */
  async connectPeer(idHex, { timeoutMs = 10000 } = {}) {
    const id = String(idHex).toLowerCase();
    if (!isHex(id, 32)) throw new YzError("INVALID_ARGUMENT", `a peer id is 64 hex digits, got ${idHex}`);
    if (id === this.idHex) throw new YzError("SELF_CONNECTION", "that is this client's own id");
    const have = this.peers.get(id);
    if (have && have.isOpen()) return have;
    let pending = this.dialing.get(id);
    if (!pending) {
      pending = this.dialPeer(id, timeoutMs);
      this.dialing.set(id, pending);
      pending.finally(() => this.dialing.delete(id)).catch(() => {});
    }
    return pending;
  }

  async dialPeer(id, timeoutMs) {
    const offered = { relays: [] };
    let why;
    try {
      return await this.dialWebRTC(id, timeoutMs, offered);
    } catch (e) {
      why = e.detail ?? e.message;
      this.fail({ code: "WEBRTC_FAILED", peer: id, manager: "webrtc", message: why });
    }
    const have = this.peers.get(id);  // the peer may have reached us meanwhile
    if (have && have.isOpen()) return have;
    const urls = [...new Set([...offered.relays.filter(isWsUrl), ...this.relays()])];
    const errors = [];
    for (const url of urls) {
      try { return await this.dialRelay(url, id); } catch (e) { errors.push(`${url}: ${e.message}`); }
    }
    throw new YzError("PEER_UNREACHABLE", `peer ${short(id)}: WebRTC failed (${why}); `
      + (errors.length ? `no relay reached it (${errors.join("; ")})` : "no relay to try"));
  }

  dialWebRTC(id, timeoutMs, offered) {
    const via = this.signalPath();
    if (!via) {
      return Promise.reject(new YzError("WEBRTC_FAILED",
        "no signalling path: call listen(bootstrapUrl) or connect to a server node first"));
    }
    if (typeof RTCPeerConnection === "undefined") {
      return Promise.reject(new YzError("WEBRTC_FAILED", "this browser has no RTCPeerConnection"));
    }
    const session = hex(crypto.getRandomValues(new Uint8Array(8)));
    const pc = new RTCPeerConnection(this.rtcConfig);
    return new Promise((resolve, reject) => {
      let settled = false;
      const entry = { id: session, peer: id, via, answered: false, handle: null };
      const finish = () => { settled = true; clearTimeout(timer); this.sessions.delete(session); };
      const fail = (why) => {
        if (settled) return;
        finish();
        try { pc.close(); } catch { /* closed */ }
        reject(new YzError("WEBRTC_FAILED", why));
      };
      const timer = setTimeout(() => fail(`no DataChannel and hello within ${timeoutMs} ms`), timeoutMs);
      entry.handle = (data) => {
        if (data.kind === "error") {
          fail(`${data.code || "ERROR"}: ${data.message || "the session was refused"}`);
        } else if (data.kind === "answer" && !entry.answered && typeof data.sdp === "string") {
          entry.answered = true;
          if (Array.isArray(data.relays)) offered.relays = data.relays.slice(0, MAX_RELAYS);
          pc.setRemoteDescription({ type: "answer", sdp: data.sdp }).catch((e) => fail(`bad answer: ${e.message}`));
        }
      };
      this.sessions.set(session, entry);
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "failed") fail("the connection failed");
      });
      pc.addEventListener("iceconnectionstatechange", () => {
        if (pc.iceConnectionState === "failed") fail("ICE failed");
      });
      const channel = pc.createDataChannel("yz", { ordered: true });
      channel.binaryType = "arraybuffer";
      const link = new Link(this, channel, "webrtc", `webrtc://${short(id)}`, pc);
      channel.onopen = async () => {
        try {
          const info = await hello(this, link, id);
          if (settled) { link.close(); return; }
          finish();
          resolve(this.register(new Peer(this, link, { ...info, addr: null, path: "webrtc" }, true)));
        } catch (e) { fail(`hello: ${e.message}`); }
      };
      (async () => {
        await pc.setLocalDescription(await pc.createOffer());
        await gathered(pc);
        if (settled) return;
        this.sendSignal(via, id, { kind: "offer", session, sdp: pc.localDescription.sdp, relays: this.relays() });
      })().catch((e) => fail(`offer: ${e.message}`));
    });
  }

  async dialRelay(url, id) {
    const link = new Link(this, await openSocket(url), "relay", `${url} (relay to ${short(id)})`);
    try {
      link.send({ t: "relay", to: id });
      const ready = await link.next(RELAY_READY_MS, "RELAY_UNAVAILABLE");
      if (ready.t === "error") throw new YzError(String(ready.code || "RELAY_UNAVAILABLE"), String(ready.message));
      if (ready.t !== "relay_ready") throw new YzError("RELAY_UNAVAILABLE", `${url} answered ${ready.t}`);
      const info = await hello(this, link, id);
      return this.register(new Peer(this, link, { ...info, addr: null, path: "relay", via: url }, true));
    } catch (e) { link.close(); throw e; }
  }

  // -- being dialled ---------------------------------------------------------------------

  async acceptOffer(via, from, data) {
    const session = data.session;
    if (!isHex(session, 8) || typeof data.sdp !== "string") return;
    if (/^m=(?!application .*webrtc-datachannel\r?$)/m.test(data.sdp)) return;  // audio, video: no
    // One offer may come by several paths: answer it once. Few answers at once, and per peer.
    if (this.seen.has(session)) return;
    this.seen.add(session);
    if (this.seen.size > 256) this.seen.delete(this.seen.values().next().value);
    const refuse = (code, message) => {
      try { this.sendSignal(via, from, { kind: "error", session, code, message }); } catch { /* gone */ }
    };
    const mine = this.answering.get(from) || 0, all = [...this.answering.values()].reduce((a, b) => a + b, 0);
    if (all >= MAX_ANSWERING || mine >= MAX_ANSWERING_PER_PEER) {
      refuse("WEBRTC_FAILED", "too many offers at once; retry later");
      return;
    }
    this.answering.set(from, mine + 1);
    try { await this.answer(via, from, data, session, refuse); } finally {
      const left = (this.answering.get(from) || 1) - 1;
      if (left) this.answering.set(from, left); else this.answering.delete(from);
    }
  }

  async answer(via, from, data, session, refuse) {
    if (typeof RTCPeerConnection === "undefined") {
      refuse("WEBRTC_UNAVAILABLE", "this browser has no RTCPeerConnection");
      return;
    }
    let pc = null, settle;
    // The caller's slot is held until the channel is up or given up, not only until the
    // answer is sent: else a stream of offers keeps any number of connections open.
    const settled = new Promise((resolve) => { settle = resolve; });
    try {
      pc = new RTCPeerConnection(this.rtcConfig);
      const giveUp = setTimeout(() => { try { pc.close(); } catch { /* closed */ } settle(); }, 10000 + GATHER_MS);
      pc.ondatachannel = (ev) => {
        const channel = ev.channel;
        if (channel.label !== "yz") { channel.close(); return; }
        const link = new Link(this, channel, "webrtc", `webrtc://${short(from)}`, pc);
        const run = async () => {
          try {
            const info = await hello(this, link, from, true);  // the dialer speaks first
            clearTimeout(giveUp);
            const peer = this.register(new Peer(this, link, { ...info, addr: null, path: "webrtc" }, false));
            if (peer.link === link && this.onpeer) this.onpeer(peer);
          } catch (e) { link.close(); console.warn(`yz: WebRTC hello from ${short(from)}: ${e.message}`); }
          settle();
        };
        if (channel.readyState === "open") run(); else channel.onopen = run;
      };
      await pc.setRemoteDescription({ type: "offer", sdp: data.sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      await gathered(pc);
      this.sendSignal(via, from, { kind: "answer", session, sdp: pc.localDescription.sdp, relays: this.relays() });
      await settled;
    } catch (e) {
      try { if (pc) pc.close(); } catch { /* closed */ }
      refuse("WEBRTC_FAILED", `could not answer: ${e.message}`);
      console.warn(`yz: WEBRTC_FAILED answering ${short(from)}: ${e.message}`);
    }
  }

  /** A server node relays a dialer to this client: connect back to it with the token. */
  async acceptRelay(via, token) {
    if (!isHex(token, 16) || !isWsUrl(via.info.addr) || this.relaying >= MAX_RELAY_ANSWERS) return;
    this.relaying += 1;
    let link = null;
    try {
      link = new Link(this, await openSocket(via.info.addr), "relay", `${via.info.addr} (relayed)`);
      link.send({ t: "relay_accept", token });
      const info = await hello(this, link, null);
      const peer = this.register(new Peer(this, link, { ...info, addr: null, path: "relay", via: via.info.addr }, false));
      if (peer.link === link && this.onpeer) this.onpeer(peer);
    } catch (e) {
      if (link) link.close();
      console.warn(`yz: relayed connection through ${via.info.addr}: ${e.message}`);
    } finally { this.relaying -= 1; }
  }

  close() {
    this.closed = true; this.listening = this.bootstrap = null;
    clearInterval(this.sweeper); this.sweeper = null;
    this.pubsub.close();  // no renewals, no reconnecting to homes
    for (const s of this.sessions.values()) s.handle({ kind: "error", code: "CONNECTION_CLOSED", message: "the client closed" });
    for (const p of [...this.peers.values()]) p.close();
    this.peers.clear();
  }
}
