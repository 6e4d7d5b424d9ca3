// yz-browser.js: a yzcore browser-class peer, as a plain ES module (no build step).
//
// Served by every node at /yz-browser.js. It joins a yzcore network the way
// `yz find-node --via URL` does: it accepts no connections, dials nodes over
// WebSocket, proves its Ed25519 key with the signed hello (WebCrypto; the key
// is kept in IndexedDB, so the browser keeps its id), and runs iterative
// lookups itself: findNode, put and get. It counts messages and bytes per
// path and direction; counting never changes what is sent (B3.3).
//
//   import { YzClient } from "http://NODE:PORT/yz-browser.js";
//   const yz = await YzClient.create();
//   await yz.join("ws://NODE:PORT/dht");
//   await yz.put("greeting", "hello");
//   console.log(await yz.get("greeting"), yz.counters);

export const PROTOCOL_VERSION = "1.0";
const AGENT = "yz-browser/0.1";
const PREFIX = new TextEncoder().encode("yz-hello-v1\0");
const K = 20, ALPHA = 3, TIMEOUT_MS = 5000;

const hex = (b) => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, "0")).join("");
const unhex = (h) => new Uint8Array(h.match(/../g).map((x) => parseInt(x, 16)));
const sha256 = async (b) => new Uint8Array(await crypto.subtle.digest("SHA-256", b));
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};
const major = (v) => String(v).split(".")[0];
const distance = (a, b) => a.map((x, i) => x ^ b[i]);
const less = (a, b) => { for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i]; return false; };

/** A failure with a stable code, as the Python side names them. */
export class YzError extends Error {
  constructor(code, message) { super(`[${code}] ${message}`); this.code = code; }
}

/** What the sender of `hello` signs for a peer that sent `peerNonce` (handshake.transcript). */
async function transcript(peerNonce, hello) {
  const claims = { advertise: hello.advertise, agent: hello.agent, caps: hello.caps,
    listen: hello.listen, role: hello.role, version: hello.v };  // keys sorted, as the node's
  return concat(PREFIX, new Uint8Array([peerNonce.length]), peerNonce,
    await sha256(unhex(hello.key)), new TextEncoder().encode(JSON.stringify(claims)));
}

async function loadKeys() {
  const open = () => new Promise((resolve, reject) => {
    const req = indexedDB.open("yzcore", 1);
    req.onupgradeneeded = () => req.result.createObjectStore("keys");
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  const db = await open();
  const get = () => new Promise((resolve, reject) => {
    const r = db.transaction("keys").objectStore("keys").get("identity");
    r.onsuccess = () => resolve(r.result); r.onerror = () => reject(r.error);
  });
  let keys = await get();
  if (!keys) {
    // The private key is not extractable: the page can sign with it, never read it.
    keys = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    await new Promise((resolve, reject) => {
      const tx = db.transaction("keys", "readwrite");
      tx.objectStore("keys").put(keys, "identity");
      tx.oncomplete = resolve; tx.onerror = () => reject(tx.error);
    });
  }
  db.close();
  return keys;
}

/** One verified WebSocket connection to a node. */
class Peer {
  constructor(client, ws, info) {
    this.client = client; this.ws = ws; this.info = info; this.waiting = new Map();
    ws.onmessage = (ev) => this.onFrame(ev.data);
    ws.onclose = () => { for (const [, w] of this.waiting) w.reject(new YzError("CONNECTION_CLOSED",
      `${info.addr} closed the connection`)); this.waiting.clear();
      if (client.peers.get(info.id) === this) client.peers.delete(info.id); };
  }
  send(msg) {
    const frame = JSON.stringify({ v: PROTOCOL_VERSION, ...msg });
    this.client.count("ws", "out", msg.t, frame.length);
    this.ws.send(frame);
  }
  onFrame(data) {
    this.client.count("ws", "in", null, data.length);
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    this.client.counters.ws.in.types[msg.t] = (this.client.counters.ws.in.types[msg.t] || 0) + 1;
    if (msg.t === "ping") { this.send({ t: "pong", rid: msg.rid }); return; }
    const w = this.waiting.get(msg.rid);
    if (w) { this.waiting.delete(msg.rid); clearTimeout(w.timer); w.resolve(msg); }
  }
  request(msg) {
    const rid = this.client.nextRid++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.waiting.delete(rid);
        reject(new YzError("TIMEOUT", `${this.info.addr} did not answer ${msg.t} in ${TIMEOUT_MS} ms`)); },
      TIMEOUT_MS);
      this.waiting.set(rid, { resolve, reject, timer });
      this.send({ ...msg, rid });
    });
  }
}

export class YzClient {
  /** A client with the identity kept in this browser (IndexedDB). */
  static async create() {
    const keys = await loadKeys();
    const key = new Uint8Array(await crypto.subtle.exportKey("raw", keys.publicKey));
    return new YzClient(keys, key, await sha256(key));
  }

  constructor(keys, key, id) {
    this.keys = keys; this.key = key; this.id = id; this.idHex = hex(id);
    this.peers = new Map(); this.connecting = new Map(); this.nextRid = 1; this.seeds = [];
    this.counters = { ws: { in: { messages: 0, bytes: 0, types: {} }, out: { messages: 0, bytes: 0, types: {} } } };
  }

  count(path, dir, type, bytes) {
    try {  // a counter never breaks a message (B3.3)
      const c = this.counters[path][dir];
      c.messages += 1; c.bytes += bytes;
      if (type) c.types[type] = (c.types[type] || 0) + 1;
    } catch { /* counted or not, the message goes on */ }
  }

  /** A verified connection to the node at `url` (one per URL; its id checked every time). */
  async connect(url, expectedId = null) {
    let pending = this.connecting.get(url);
    if (!pending) {
      const open = [...this.peers.values()].find((p) => p.info.addr === url);
      pending = open ? Promise.resolve(open) : this.open(url);
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

  async open(url) {
    const ws = new WebSocket(url);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new YzError("CONNECT_FAILED", `cannot open ${url}`));
    });
    const nonce = crypto.getRandomValues(new Uint8Array(16));
    const hello = { v: PROTOCOL_VERSION, t: "hello", key: hex(this.key), nonce: hex(nonce), role: "browser",
      listen: [], advertise: null, caps: [], agent: AGENT };
    const frames = [];
    let wake = null;
    ws.onmessage = (ev) => { frames.push(ev.data); if (wake) wake(); };
    ws.onclose = () => { if (wake) wake(); };
    const next = async () => {
      const deadline = Date.now() + TIMEOUT_MS;
      while (!frames.length) {
        if (ws.readyState > 1) throw new YzError("CONNECTION_CLOSED", `${url} closed during the hello`);
        if (Date.now() > deadline) throw new YzError("HANDSHAKE_TIMEOUT", `${url} did not finish the hello`);
        await new Promise((r) => { wake = r; setTimeout(r, 100); });
      }
      const data = frames.shift();
      this.count("ws", "in", null, data.length);
      return JSON.parse(data);
    };
    const helloFrame = JSON.stringify(hello);
    this.count("ws", "out", "hello", helloFrame.length);
    ws.send(helloFrame);
    const theirs = await next();
    if (theirs.t === "error") { ws.close(); throw new YzError(theirs.code, theirs.message); }
    if (theirs.t !== "hello") { ws.close(); throw new YzError("HANDSHAKE_REQUIRED", `${url} sent ${theirs.t} first`); }
    if (major(theirs.v) !== major(PROTOCOL_VERSION)) {
      ws.close();
      throw new YzError("VERSION_MISMATCH", `${url} speaks protocol ${theirs.v}, this client ${PROTOCOL_VERSION}`);
    }
    const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, this.keys.privateKey,
      await transcript(unhex(theirs.nonce), hello)));
    const authFrame = JSON.stringify({ v: PROTOCOL_VERSION, t: "auth", sig: hex(sig) });
    this.count("ws", "out", "auth", authFrame.length);
    ws.send(authFrame);
    const auth = await next();
    if (auth.t === "error") { ws.close(); throw new YzError(auth.code, auth.message); }
    const theirKey = await crypto.subtle.importKey("raw", unhex(theirs.key), { name: "Ed25519" }, false, ["verify"]);
    const ok = auth.t === "auth" && await crypto.subtle.verify({ name: "Ed25519" }, theirKey, unhex(auth.sig),
      await transcript(nonce, theirs));
    if (!ok) { ws.close(); throw new YzError("BAD_SIGNATURE", `${url}'s hello signature did not verify`); }
    const id = hex(await sha256(unhex(theirs.key)));
    const peer = new Peer(this, ws, { id, addr: url, role: theirs.role, version: theirs.v });
    this.peers.set(id, peer);
    for (const data of frames) peer.onFrame(data);
    return peer;
  }

  /** Join through the node at `url`: its answer seeds every lookup. */
  async join(url) {
    const peer = await this.connect(url);
    this.seeds = [{ id: peer.info.id, addr: url, role: peer.info.role }];
    const answer = await peer.request({ t: "find_node", target: this.idHex });
    for (const n of answer.nodes || []) if (n.addr && !this.seeds.some((s) => s.id === n.id)) this.seeds.push(n);
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
          if (wantValue && reply.value != null && found == null) found = reply.value;
          (reply.nodes || []).forEach(add);
        } catch { c.state = "failed"; }
      }));
    }
    return { value: found, nodes: ordered().filter((c) => c.state === "answered").slice(0, K) };
  }

  async findNode(targetHex) { return (await this.lookup(targetHex)).nodes; }

  static async keyFor(name) { return hex(await sha256(new TextEncoder().encode(name))); }

  /** Store `value` under sha256(`name`) at the k closest nodes; how many stored it. */
  async put(name, value, ttl = 3600) {
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

  close() { for (const p of this.peers.values()) p.ws.close(); this.peers.clear(); }
}
