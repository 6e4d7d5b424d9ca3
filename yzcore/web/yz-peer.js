// yz-peer.js: the connection half of yz-browser.js (imported by it; no build step).
//
// Helpers, the key kept in IndexedDB, one message channel (WebSocket or
// RTCDataChannel: Link), the signed hello on it (both sides), and a verified
// peer (Peer) that answers ping/find_node and carries requests. The protocol:
// docs/reference/wire.md and docs/reference/webrtc.md.

export const PROTOCOL_VERSION = "1.1";  // as yzcore.wire.PROTOCOL_VERSION
const AGENT = "yz-browser/0.2";
const PREFIX = new TextEncoder().encode("yz-hello-v1\0");
const K = 20, ALPHA = 3, TIMEOUT_MS = 5000;
const GATHER_MS = 2000;       // longest wait for ICE gathering before the SDP goes anyway
const RELAY_READY_MS = 8000;  // a relaying node waits 5 s for the peer to connect back
const MAX_RELAYS = 8;
const MAX_FRAME = 65536;
const PATHS = ["ws", "webrtc", "relay"];
const ROLES = ["node", "bridge", "browser", "bootstrap"];
const SERVERS = ["node", "bridge"];
const IDLE_MS = 5000;  // a lookup's connection to a server closes once idle this long (as a node's)
const KEEP = 4;        // server connections kept open however idle (bridges first, then the oldest)

const utf8 = new TextEncoder(), text = new TextDecoder();
const hex = (b) => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, "0")).join("");
const unhex = (h) => new Uint8Array(h.match(/../g).map((x) => parseInt(x, 16)));
const isHex = (h, bytes) => typeof h === "string" && h.length === 2 * bytes && /^[0-9a-f]*$/.test(h);
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
const byDistance = (t) => (a, b) => {
  const da = distance(unhex(a.id), t), db = distance(unhex(b.id), t);
  return less(da, db) ? -1 : less(db, da) ? 1 : 0;
};
const isWsUrl = (u) => typeof u === "string" && /^wss?:\/\//.test(u);
const short = (id) => String(id).slice(0, 16);

/** A failure with a stable code, as the Python side names them. */
export class YzError extends Error {
  constructor(code, message) { super(`[${code}] ${message}`); this.code = code; this.detail = message; }
}

/** What the sender of `hello` signs for a peer that sent `peerNonce` (handshake.transcript). */
async function transcript(peerNonce, hello) {
  const claims = { advertise: hello.advertise, agent: hello.agent, caps: hello.caps,
    listen: hello.listen, role: hello.role, version: hello.v };  // keys sorted, as the node's
  return concat(PREFIX, new Uint8Array([peerNonce.length]), peerNonce,
    await sha256(unhex(hello.key)), utf8.encode(JSON.stringify(claims)));
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

/** A WebSocket once open, within `ms` (a host that takes the connection and never answers
 *  the upgrade must not hold a lookup for as long as the browser would wait). */
function openSocket(url, ms = TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    let ws;
    try { ws = new WebSocket(url); } catch (e) { reject(new YzError("CONNECT_FAILED", `cannot open ${url}: ${e.message}`)); return; }
    ws.binaryType = "arraybuffer";
    const timer = setTimeout(() => {
      reject(new YzError("TIMEOUT", `${url} did not open within ${ms} ms`));
      try { ws.close(); } catch { /* closing */ }
    }, ms);
    ws.onopen = () => { clearTimeout(timer); resolve(ws); };
    ws.onerror = () => { clearTimeout(timer); reject(new YzError("CONNECT_FAILED", `cannot open ${url}`)); };
  });
}

/** Resolves when ICE gathering is complete (non-trickle), or after GATHER_MS anyway. */
function gathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") { resolve(); return; }
    const timer = setTimeout(resolve, GATHER_MS);
    const check = () => { if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); } };
    pc.addEventListener("icegatheringstatechange", check);
    pc.addEventListener("icecandidate", (ev) => { if (!ev.candidate) { clearTimeout(timer); resolve(); } });
  });
}

/**
 * One message channel: a WebSocket or an RTCDataChannel, one yzcore frame a
 * message. Text or binary in (decoded as UTF-8), text out; counted per path.
 */
class Link {
  constructor(client, raw, path, label, pc = null) {
    this.client = client; this.raw = raw; this.path = path; this.label = label; this.pc = pc;
    this.queue = []; this.waiter = null; this.handler = null; this.onclosed = null; this.closed = false;
    try { raw.binaryType = "arraybuffer"; } catch { /* a WebSocket before open takes it too */ }
    raw.onmessage = (ev) => this.receive(ev.data);
    raw.onclose = () => this.gone();
    if (pc) {
      pc.addEventListener("connectionstatechange", () => {
        if (pc.connectionState === "failed" || pc.connectionState === "closed") this.close();
      });
    }
  }

  isOpen() { return !this.closed && (this.raw.readyState === 1 || this.raw.readyState === "open"); }

  receive(data) {
    const size = typeof data === "string" ? data.length : data.byteLength;
    if (size > MAX_FRAME) {  // 64 KiB, as every yzcore peer: a peer sending more is dropped
      console.warn(`yz: FRAME_TOO_LARGE: ${size} bytes from ${this.label}; closing`);
      this.close();
      return;
    }
    const frame = typeof data === "string" ? data : text.decode(data);
    let msg = null;
    try { msg = JSON.parse(frame); } catch { /* not a frame: counted, then dropped */ }
    if (msg === null || typeof msg !== "object" || Array.isArray(msg)) msg = null;
    this.client.count(this.path, "in", msg && typeof msg.t === "string" ? msg.t : null,
      typeof data === "string" ? data : data.byteLength);
    if (!msg) return;
    if (this.waiter) { const w = this.waiter; this.waiter = null; w.resolve(msg); }
    else if (this.handler) this.handler(msg);
    else this.queue.push(msg);
  }

  send(msg) {
    const frame = JSON.stringify({ v: PROTOCOL_VERSION, ...msg });
    this.client.count(this.path, "out", msg.t, frame);
    this.raw.send(frame);
  }

  /** The next message (before a handler takes them), or `code` after `ms`. */
  next(ms, code = "HANDSHAKE_TIMEOUT") {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.closed) return Promise.reject(new YzError("CONNECTION_CLOSED", `${this.label} is closed`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.waiter = null;
        reject(new YzError(code, `${this.label} sent nothing in ${ms} ms`)); }, ms);
      this.waiter = { resolve: (m) => { clearTimeout(timer); resolve(m); },
        reject: (e) => { clearTimeout(timer); reject(e); } };
    });
  }

  /** From now on every message goes to `handler` (queued ones first). */
  take(handler) {
    this.handler = handler;
    while (this.queue.length) handler(this.queue.shift());
  }

  gone() {
    if (this.closed) return;
    this.closed = true;
    if (this.waiter) { const w = this.waiter; this.waiter = null;
      w.reject(new YzError("CONNECTION_CLOSED", `${this.label} closed the connection`)); }
    if (this.onclosed) this.onclosed();
  }

  close() {
    try { this.raw.close(); } catch { /* already closed */ }
    try { if (this.pc) this.pc.close(); } catch { /* already closed */ }
    this.gone();
  }
}

/**
 * The signed hello on any link (it is symmetric: the same for the side that
 * dialled and the side that accepted). Refuses a peer whose id is not
 * `expectedId` when one is given. Returns the verified peer's info.
 *
 * `waitFirst`: send our hello only once theirs came. The side that accepts a
 * DataChannel uses it: a message it sends the moment its channel opens can
 * reach the dialer before the dialer's channel is open there, and be lost.
 */
async function hello(client, link, expectedId = null, waitFirst = false) {
  const nonce = crypto.getRandomValues(new Uint8Array(32));
  const mine = { v: PROTOCOL_VERSION, t: "hello", key: hex(client.key), nonce: hex(nonce), role: "browser",
    listen: [], advertise: null, caps: [], agent: AGENT };
  const refuse = (code, message) => {
    try { link.send({ t: "error", rid: null, code, message }); } catch { /* closing anyway */ }
    link.close();
    return new YzError(code, message);
  };
  const theirError = (msg) => { link.close(); return new YzError(String(msg.code), String(msg.message)); };
  if (!waitFirst) link.send(mine);
  const theirs = await link.next(TIMEOUT_MS);
  if (waitFirst) link.send(mine);
  if (theirs.t === "error") throw theirError(theirs);
  if (theirs.t !== "hello") throw refuse("HANDSHAKE_REQUIRED", `${link.label} sent ${theirs.t} before its hello`);
  if (major(theirs.v) !== major(PROTOCOL_VERSION)) {
    throw refuse("VERSION_MISMATCH", `${link.label} speaks protocol ${theirs.v}, this client ${PROTOCOL_VERSION}`);
  }
  if (!isHex(theirs.key, 32) || typeof theirs.nonce !== "string" || !/^[0-9a-f]*$/.test(theirs.nonce)
      || theirs.nonce.length < 32 || theirs.nonce.length > 128 || theirs.nonce.length % 2
      || !ROLES.includes(theirs.role)) {
    throw refuse("INVALID_MESSAGE", `${link.label} sent a malformed hello`);
  }
  const id = hex(await sha256(unhex(theirs.key)));
  if (id === client.idHex) throw refuse("SELF_CONNECTION", `${link.label} has this client's own id`);
  if (expectedId && id !== expectedId) {
    throw refuse("ID_MISMATCH", `${link.label} is ${id}, not ${expectedId}`);
  }
  const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, client.keys.privateKey,
    await transcript(unhex(theirs.nonce), mine)));
  link.send({ t: "auth", sig: hex(sig) });
  const auth = await link.next(TIMEOUT_MS);
  if (auth.t === "error") throw theirError(auth);
  if (auth.t !== "auth") throw refuse("HANDSHAKE_REQUIRED", `${link.label} sent ${auth.t} instead of its auth`);
  const theirKey = await crypto.subtle.importKey("raw", unhex(theirs.key), { name: "Ed25519" }, false, ["verify"]);
  const ok = isHex(auth.sig, 64) && await crypto.subtle.verify({ name: "Ed25519" }, theirKey, unhex(auth.sig),
    await transcript(nonce, theirs));
  if (!ok) throw refuse("BAD_SIGNATURE", `${link.label}'s hello signature did not verify`);
  return { id, role: theirs.role, version: theirs.v, advertise: theirs.advertise ?? null,
    listen: theirs.listen || [], caps: theirs.caps || [], agent: theirs.agent };
}

/** One verified connection, whatever its path ("ws", "webrtc" or "relay"). */
class Peer {
  constructor(client, link, info, outbound) {
    this.client = client; this.link = link; this.info = info; this.path = link.path;
    this.outbound = outbound; this.waiting = new Map(); this.since = this.active = Date.now();
    this.ws = link.raw instanceof WebSocket ? link.raw : null;
    link.onclosed = () => {
      for (const [, w] of this.waiting) { clearTimeout(w.timer);
        w.reject(new YzError("CONNECTION_CLOSED", `${this.label()} closed the connection`)); }
      this.waiting.clear();
      client.forget(this);
    };
    link.take((msg) => this.onMessage(msg));
  }

  label() { return this.info.addr || `${this.path}://${short(this.info.id)}`; }
  isOpen() { return this.link.isOpen(); }
  send(msg) { this.active = Date.now(); this.link.send(msg); }
  close() { this.link.close(); }

  onMessage(msg) {
    const c = this.client;
    this.active = Date.now();
    try {
      switch (msg.t) {
        case "ping": this.send({ t: "pong", rid: msg.rid }); return;
        case "find_node":
          this.send({ t: "nodes", rid: msg.rid, nodes: isHex(msg.target, 32) ? c.nodesNear(msg.target) : [] });
          return;
        case "find_value":  // a browser keeps no values: closer nodes only
          this.send({ t: "value", rid: msg.rid, value: null, nodes: isHex(msg.key, 32) ? c.nodesNear(msg.key) : [] });
          return;
        case "store":
          this.send({ t: "error", rid: msg.rid, code: "WRONG_ROLE",
            message: "this is a browser-class peer: it keeps no values; store at the nodes closest to the key" });
          return;
        case "signal":  // only a relay fills in frm; a peer-to-peer link could claim any sender
          if (this.path === "ws" && this.info.role !== "browser") c.onSignal(this, msg);
          return;
        case "pubsub.msg": case "pubsub.sub": case "pubsub.unsub": case "pubsub.pub":
          c.pubsub.onMessage(this, msg);
          return;
        case "relay_open":
          if (this.path === "ws" && SERVERS.includes(this.info.role)) c.acceptRelay(this, msg.token);
          return;
        default: break;
      }
    } catch (e) { console.warn("yz: could not answer", msg.t, e); return; }
    const w = this.waiting.get(msg.rid);
    if (w) { this.waiting.delete(msg.rid); clearTimeout(w.timer); w.resolve(msg); }
    else if (msg.t === "error" && msg.rid == null) c.onUnsolicitedError(this, msg);
  }

  request(msg) {
    const rid = this.client.nextRid++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.waiting.delete(rid);
        reject(new YzError("TIMEOUT", `${this.label()} did not answer ${msg.t} in ${TIMEOUT_MS} ms`)); },
      TIMEOUT_MS);
      this.waiting.set(rid, { resolve, reject, timer });
      try { this.send({ ...msg, rid }); } catch (e) {
        this.waiting.delete(rid); clearTimeout(timer);
        reject(new YzError("CONNECTION_CLOSED", `${this.label()}: ${e.message}`));
      }
    });
  }
}

/** Close the client's WebSocket connections idle for IDLE_MS, as a node closes its lookups'
 *  ones: all but KEEP to server nodes (its relays and signal paths), the bootstrap server's,
 *  and those to its channels' homes. Without this a page holds every node it ever asked. */
function closeIdle(client, now = Date.now()) {
  const open = [...client.peers.values()].filter((p) => p.path === "ws" && p.isOpen());
  const kept = open.filter((p) => SERVERS.includes(p.info.role))
    .sort((a, b) => (b.info.role === "bridge") - (a.info.role === "bridge") || a.since - b.since)
    .slice(0, KEEP);
  for (const p of open) {
    const busy = p === client.bootstrap || kept.includes(p) || p.waiting.size
      || client.pubsub.holds(p.info.id);
    if (!busy && now - p.active >= IDLE_MS) p.close();
  }
}

const emptyCounters = () => Object.fromEntries(PATHS.map((p) => [p,
  { in: { messages: 0, bytes: 0, types: {} }, out: { messages: 0, bytes: 0, types: {} } }]));

export {
  K, ALPHA, GATHER_MS, IDLE_MS, RELAY_READY_MS, MAX_RELAYS, SERVERS, closeIdle, utf8, hex, unhex,
  isHex, sha256, distance, less, byDistance, isWsUrl, short, loadKeys, openSocket,
  gathered, Link, hello, Peer, emptyCounters,
};
