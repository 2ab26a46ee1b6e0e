// A socket.io-like client for the daemon's plain JSON WebSocket, `/ws`.
//
// Frames both ways are `{"event", "data"}` JSON text. A client frame may carry an `"id"`; the
// server answers it with `{"event": "ack", "data": <REST body>, "id"}` (`{"success": true}` for
// a relayed `call:offer`, `call:answer`, `call:ice-candidate`, as Socket.IO acks them), or, if
// it refuses the frame, with `{"event": "error", "data": {code, message, event}, "id"}`. A frame
// without an `"id"` is answered only when refused.
//
// The socket's `id` (chosen here, kept across reconnections, sent as `?socketId=`) is what a REST
// answer or rejection names in its `X-Socket-Id` header, so that this device is not told it
// answered elsewhere.
//
// Tokens: a socket lives until its token's `exp`. Shortly before, the server sends
// `auth:expiring` `{expiresAt}`; a socket given a token provider (a function returning a fresh
// token, or a promise of one) answers it with `auth:refresh` `{token}` by itself, and, if it was
// closed for expiry all the same (1008 `token expired`), reconnects at once with a fresh token:
// calls survive that within the daemon's `calls.reconnect_grace`. `keepTokenFresh` does the same
// for a socket.io `Socket`. A static token is used as it is, until it expires.

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;
const QUEUE_LIMIT = 100;
/** A connection that lasted this long starts the backoff over. */
const STABLE_MS = 5_000;

/** `ws(s)://<this page's host>/ws`. */
function defaultUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

/** A random socket id: 32 hex digits (crypto.getRandomValues works outside secure contexts). */
function newSocketId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The close reason of a socket closed because its token expired. */
const TOKEN_EXPIRED = 'token expired';

/** A fresh token of `provider` (a string, or a function returning one or a promise of one). */
async function tokenOf(provider) {
  return typeof provider === 'function' ? provider() : provider;
}

/**
 * Keeps `socket` (a socket.io `Socket`, or a `SignalingSocket`) authenticated past its token's
 * `exp`: answers `auth:expiring` with `auth:refresh` and a token of `provider`. A socket.io
 * socket also reconnects with a fresh one when the server disconnects it for expiry (give it
 * `auth: authOf(provider)` so that every connection asks `provider`). `onError(error)` hears of a
 * refresh that failed (the socket is then closed at `exp`, and reconnects).
 * @returns {() => void} a function that stops it.
 */
export function keepTokenFresh(socket, provider, onError = () => {}) {
  let expired = false;
  const refresh = async () => {
    try {
      const token = await tokenOf(provider);
      // socket.io's acks wait for ever unless given a timeout; SignalingSocket's have one.
      const acking = typeof socket.timeout === 'function' ? socket.timeout(10_000) : socket;
      const answer = await acking.emitWithAck('auth:refresh', { token });
      if (answer?.error) throw Object.assign(new Error(answer.error.message), { code: answer.error.code });
    } catch (err) {
      onError(err);
    }
  };
  const error = (data) => {
    if (data?.code === 'token_expired') expired = true;
  };
  const disconnect = (reason) => {
    // socket.io does not reconnect after a server's disconnect by itself.
    if (expired && reason === 'io server disconnect') socket.connect();
    expired = false;
  };
  socket.on('auth:expiring', refresh);
  socket.on('error', error);
  socket.on('disconnect', disconnect);
  return () => {
    socket.off('auth:expiring', refresh);
    socket.off('error', error);
    socket.off('disconnect', disconnect);
  };
}

/** socket.io's `auth` option asking `provider` for a fresh token at every connection. */
export function authOf(provider) {
  return (cb) => {
    tokenOf(provider).then(
      (token) => cb({ token }),
      () => cb({}),
    );
  };
}

/** The error an ack callback receives, socket.io style: `{error: {code, message}}`. */
function refusal(code, message) {
  return { error: { code, message } };
}

/**
 * The `/ws` signaling connection, with the `emit`/`on` surface of a socket.io `Socket`.
 * Pseudo-events: `connect`, `disconnect(reason, details)`, `connect_error(error)`, and
 * `error(data)` for refusals of frames sent without an ack.
 */
export class SignalingSocket {
  /** This socket's id, as the daemon knows it (send it as `X-Socket-Id` with REST answers). */
  id = newSocketId();
  #url;
  #token;
  #ws = null;
  #listeners = new Map();
  #queue = [];
  #acks = new Map(); // id -> {callback, sent}
  #nextId = 1;
  #attempt = 0;
  #timer = null;
  #closed = false;
  #openedAt = 0;
  #opening = false;
  #onTokenError;

  /**
   * Connects at once, and again after every loss until {@link close}.
   * @param {string} [url] `ws://host/ws`; by default this page's host.
   * @param {string | (() => string | Promise<string>)} [token] The API's JWT, sent as
   *   `?token=`; or a provider of fresh ones, asked at every connection and whenever the
   *   server warns that the current one expires (`auth:expiring`, answered `auth:refresh`).
   * @param {{onTokenError?: (error: Error) => void}} [options] `onTokenError` hears of a
   *   provider or a refresh that failed.
   */
  constructor(url, token, options = {}) {
    this.#url = url || defaultUrl();
    this.#token = token;
    this.#onTokenError = options.onTokenError ?? (() => {});
    if (typeof token === 'function') keepTokenFresh(this, token, this.#onTokenError);
    this.#open();
  }

  /** Whether the WebSocket is open. */
  get connected() {
    return this.#ws?.readyState === WebSocket.OPEN;
  }

  /** Adds `fn` for `event`. */
  on(event, fn) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, []);
    this.#listeners.get(event).push(fn);
    return this;
  }

  /** Removes `fn` for `event`, or every listener of `event` without `fn`. */
  off(event, fn) {
    const list = this.#listeners.get(event);
    if (!list) return this;
    const kept = fn ? list.filter((f) => f !== fn && f.listener !== fn) : [];
    if (kept.length) this.#listeners.set(event, kept);
    else this.#listeners.delete(event);
    return this;
  }

  /** Adds `fn` for the next `event` only. */
  once(event, fn) {
    const wrapper = (...args) => {
      this.off(event, wrapper);
      fn(...args);
    };
    wrapper.listener = fn;
    return this.on(event, wrapper);
  }

  /**
   * Sends `event` (queued while disconnected). `ack(response)` gets the server's answer: the
   * REST body, or `{error: {code, message}}` when refused or lost with the connection.
   */
  emit(event, data, ack) {
    const frame = { event, data };
    if (typeof ack === 'function') {
      frame.id = this.#nextId++;
      this.#acks.set(frame.id, { callback: ack, sent: false });
    }
    if (this.connected) this.#send(frame);
    else this.#enqueue(frame);
    return this;
  }

  /**
   * Sends `event` and resolves with the server's answer; rejects with an Error (its `code`
   * set) on a refusal, a lost connection, or no answer within `timeoutMs`.
   */
  emitWithAck(event, data, timeoutMs = 10_000) {
    return new Promise((resolve, reject) => {
      const id = this.#nextId; // the id `emit` takes below
      const settle = (response) => {
        clearTimeout(timer);
        this.#acks.delete(id);
        const e = response?.error;
        if (e && typeof e === 'object') reject(Object.assign(new Error(e.message), { code: e.code }));
        else resolve(response);
      };
      const timer = setTimeout(() => settle(refusal('timeout', `no answer to ${event}`)), timeoutMs);
      this.emit(event, data, settle);
    });
  }

  /** Connects again after {@link close} (no-op while connected or connecting). */
  connect() {
    this.#closed = false;
    if (!this.#ws && !this.#timer && !this.#opening) this.#open();
    return this;
  }

  /** Closes for good: no reconnection; queued frames are dropped. */
  close() {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = null;
    for (const frame of this.#queue.splice(0)) this.#answer(frame.id, refusal('closed', 'the socket was closed'));
    this.#ws?.close(1000);
    return this;
  }

  /** Alias of {@link close}, as socket.io has. */
  disconnect() {
    return this.close();
  }

  async #open() {
    this.#timer = null;
    // While a provider is asked, `connect()` must not open a second WebSocket.
    this.#opening = true;
    let ws;
    try {
      const url = await this.#urlWithToken();
      if (this.#closed) return;
      ws = new WebSocket(url);
    } catch (err) {
      this.#dispatch('connect_error', err);
      return this.#scheduleReconnect(false);
    } finally {
      this.#opening = false;
    }
    this.#ws = ws;
    let opened = false;
    ws.addEventListener('open', () => {
      opened = true;
      this.#openedAt = Date.now();
      this.#dispatch('connect');
      this.#flush();
    });
    ws.addEventListener('message', (e) => this.#receive(e.data));
    ws.addEventListener('close', (e) => this.#lost(ws, opened, e));
    // A refused upgrade: browsers follow with `close`, node's WebSocket may not.
    ws.addEventListener('error', () => opened || this.#lost(ws, false, { code: 1006, reason: '' }));
  }

  /** `ws` is gone: tells the listeners and schedules the next connection. */
  #lost(ws, opened, { code, reason }) {
    if (this.#ws !== ws) return;
    this.#ws = null;
    this.#lostAcks();
    if (opened) {
      const why = this.#closed ? 'io client disconnect' : 'transport close';
      this.#dispatch('disconnect', why, { code, reason });
    } else if (!this.#closed) {
      this.#dispatch('connect_error', new Error(`cannot connect to ${this.#url} (close code ${code})`));
    }
    // Closed for an expired token: a provider has a fresh one now.
    if (reason === TOKEN_EXPIRED && typeof this.#token === 'function' && !this.#closed) {
      this.#attempt = 0;
      return void this.#open();
    }
    this.#scheduleReconnect(opened);
  }

  async #urlWithToken() {
    const url = new URL(this.#url, globalThis.location?.href);
    const token = await tokenOf(this.#token);
    if (token) url.searchParams.set('token', token);
    url.searchParams.set('socketId', this.id);
    return url.href;
  }

  #scheduleReconnect(opened) {
    if (this.#closed) return;
    if (opened && Date.now() - this.#openedAt >= STABLE_MS) this.#attempt = 0;
    const ceiling = Math.min(MAX_DELAY_MS, MIN_DELAY_MS * 2 ** this.#attempt++);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.#timer = setTimeout(() => this.#open(), delay);
  }

  #send(frame) {
    this.#ws.send(JSON.stringify(frame));
    const pending = this.#acks.get(frame.id);
    if (pending) pending.sent = true;
  }

  #enqueue(frame) {
    this.#queue.push(frame);
    if (this.#queue.length > QUEUE_LIMIT) {
      const dropped = this.#queue.shift();
      this.#answer(dropped.id, refusal('queue_full', `${dropped.event} dropped: too many queued`));
    }
  }

  #flush() {
    const frames = this.#queue.splice(0);
    for (const frame of frames) this.#send(frame);
  }

  /** Fails the acks of frames sent on a connection that is gone (queued ones stay). */
  #lostAcks() {
    for (const [id, pending] of this.#acks) {
      if (pending.sent) this.#answer(id, refusal('disconnected', 'the connection was lost'));
    }
  }

  #answer(id, response) {
    const pending = this.#acks.get(id);
    if (!pending) return false;
    this.#acks.delete(id);
    this.#call(pending.callback, [response]);
    return true;
  }

  #receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (!frame || typeof frame.event !== 'string') return;
    const { event, data, id } = frame;
    if (event === 'ack') return void this.#answer(id, data);
    if (event === 'error' && id != null && this.#answer(id, refusal(data?.code, data?.message))) return;
    this.#dispatch(event, data);
  }

  #dispatch(event, ...args) {
    for (const fn of [...(this.#listeners.get(event) ?? [])]) this.#call(fn, args);
  }

  #call(fn, args) {
    try {
      fn(...args);
    } catch (err) {
      // A listener's bug must not break the socket.
      setTimeout(() => {
        throw err;
      });
    }
  }
}

export default SignalingSocket;
