// The ragstream chat page: the README's WebSocket protocol (ask, cancel, resume) in plain JavaScript.
// The API key is kept in sessionStorage (this tab only) and sent in the connect URL, since browsers cannot set
// headers on a WebSocket. Every answer's tokens are kept with their last seq, so after a dropped connection the
// page reconnects and sends `resume` for each unfinished answer: it gets what it missed, then the live rest.
"use strict";

(() => {
  const KEY_STORAGE = "ragstream.apiKey";
  const HISTORY_STORAGE = "ragstream.history";
  const MODEL_AUTO = "ragstream";

  const $ = (id) => document.getElementById(id);
  const ui = {
    connection: $("connection"), changeKey: $("change-key"), keyPanel: $("key-panel"), keyForm: $("key-form"),
    keyInput: $("api-key"), keyError: $("key-error"), chat: $("chat"), history: $("history"), empty: $("empty"),
    askForm: $("ask-form"), question: $("question"), model: $("model"), models: $("models"), ask: $("ask"),
    maxTokens: $("max-tokens"), stop: $("stop"), clear: $("clear"), status: $("status"),
  };

  let apiKey = sessionStorage.getItem(KEY_STORAGE) || "";
  let socket = null;
  let connected = false;
  let wanted = false; // reconnect when the socket drops
  let retryDelayMs = 500;
  let retryTimer = null;
  let nextId = 1;
  const turns = []; // {id, question, model, requestId, lastSeq, text, citations, final, resumed, el}
  const byRequest = new Map();

  // --- storage -------------------------------------------------------------------------------------------------
  function save() {
    const kept = turns.map((t) => ({
      id: t.id, question: t.question, model: t.model, maxTokens: t.maxTokens, requestId: t.requestId, lastSeq: t.lastSeq, text: t.text,
      citations: t.citations, final: t.final,
    }));
    try { sessionStorage.setItem(HISTORY_STORAGE, JSON.stringify(kept)); } catch (_) { /* full: keep on screen */ }
  }

  function restore() {
    let kept = [];
    try { kept = JSON.parse(sessionStorage.getItem(HISTORY_STORAGE) || "[]"); } catch (_) { kept = []; }
    for (const t of kept) {
      const turn = addTurn(t.question, t.model, t.id);
      Object.assign(turn, { maxTokens: t.maxTokens, requestId: t.requestId, lastSeq: t.lastSeq, text: t.text, citations: t.citations || [],
        final: t.final });
      if (turn.requestId) byRequest.set(turn.requestId, turn);
      nextId = Math.max(nextId, Number(String(t.id).replace(/\D/g, "")) + 1 || nextId);
      render(turn);
    }
  }

  // --- the key -------------------------------------------------------------------------------------------------
  async function checkKey(key) {
    // The WebSocket cannot tell a browser why an upgrade failed, so ask an HTTP endpoint with the same key rules.
    const response = await fetch("/v1/models", { headers: { Authorization: `Bearer ${key}` }, cache: "no-store" });
    if (response.status === 401) return null;
    if (!response.ok) throw new Error(`the server answered ${response.status}`);
    return (await response.json()).data.map((m) => m.id);
  }

  async function useKey(key) {
    ui.keyError.textContent = "";
    let models;
    try {
      models = await checkKey(key);
    } catch (error) {
      ui.keyError.textContent = `Could not reach the server: ${error.message}`;
      return false;
    }
    if (models === null) {
      ui.keyError.textContent = "That API key was not accepted.";
      sessionStorage.removeItem(KEY_STORAGE);
      return false;
    }
    apiKey = key;
    sessionStorage.setItem(KEY_STORAGE, key);
    ui.models.replaceChildren(...models.map((name) => Object.assign(document.createElement("option"), { value: name })));
    ui.keyPanel.hidden = true;
    ui.chat.hidden = false;
    ui.changeKey.hidden = false;
    wanted = true;
    connect();
    ui.question.focus();
    return true;
  }

  function changeKey() {
    wanted = false;
    clearTimeout(retryTimer);
    if (socket) socket.close(1000, "changing key");
    sessionStorage.removeItem(KEY_STORAGE);
    apiKey = "";
    ui.chat.hidden = true;
    ui.changeKey.hidden = true;
    ui.keyPanel.hidden = false;
    ui.keyInput.value = "";
    ui.keyInput.focus();
    setConnection("not connected", "");
  }

  // --- the socket ----------------------------------------------------------------------------------------------
  function setConnection(text, state) {
    ui.connection.textContent = text;
    ui.connection.className = state;
  }

  function connect() {
    clearTimeout(retryTimer);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/?api_key=${encodeURIComponent(apiKey)}`);
    socket = ws;
    setConnection("connecting…", "");
    ws.addEventListener("open", () => {
      if (socket !== ws) return;
      connected = true;
      retryDelayMs = 500;
      setConnection("connected", "online");
      for (const turn of turns) {
        if (turn.final) continue;
        if (turn.requestId) {
          // Resume: the tokens after the last one shown, then the live rest (or the citations and done).
          if (turn.dropped) { turn.resumed = true; turn.dropped = false; }
          send({ type: "resume", id: turn.requestId, after_seq: turn.lastSeq });
        } else {
          sendAsk(turn); // never accepted: ask again
        }
        render(turn);
      }
      updateButtons();
    });
    ws.addEventListener("message", (event) => {
      if (socket === ws) onMessage(JSON.parse(event.data));
    });
    let opened = false;
    ws.addEventListener("open", () => { opened = true; });
    ws.addEventListener("close", (event) => {
      if (socket !== ws) return;
      if (!opened && wanted) {
        // Refused before the upgrade: a browser cannot see why, so ask whether the key is still accepted.
        checkKey(apiKey).then((models) => {
          if (models === null) { changeKey(); ui.keyError.textContent = "That API key is no longer accepted."; }
        }).catch(() => { /* the server is down: keep retrying */ });
      }
      connected = false;
      socket = null;
      for (const turn of turns) if (!turn.final && turn.requestId) turn.dropped = true;
      updateButtons();
      if (!wanted) return;
      const seconds = (retryDelayMs / 1000).toFixed(1);
      setConnection(`connection lost (${event.code || "no code"}); reconnecting in ${seconds} s`, "offline");
      retryTimer = setTimeout(connect, retryDelayMs);
      retryDelayMs = Math.min(retryDelayMs * 2, 5000);
    });
  }

  function send(message) {
    if (socket && connected) socket.send(JSON.stringify(message));
  }

  function sendAsk(turn) {
    const options = {};
    if (turn.model && turn.model !== MODEL_AUTO) options.model = turn.model;
    if (turn.maxTokens) options.max_tokens = turn.maxTokens;
    send({ type: "ask", id: turn.id, question: turn.question, options });
  }

  function onMessage(message) {
    if (message.type === "accepted") {
      const turn = turns.find((t) => t.id === message.id);
      if (!turn) return;
      turn.requestId = message.request_id;
      byRequest.set(turn.requestId, turn);
      save();
      return;
    }
    const turn = byRequest.get(message.request_id) || turns.find((t) => message.id != null && t.id === message.id);
    if (!turn) {
      if (message.type === "error") ui.status.textContent = `Error: ${message.message}`;
      return;
    }
    if (message.type === "token") {
      if (message.seq <= turn.lastSeq) return; // a resume may send what we already have
      turn.text += message.text;
      turn.lastSeq = message.seq;
      appendText(turn, message.text);
    } else if (message.type === "citation") {
      if (!turn.citations.some((c) => c.number === message.number)) turn.citations.push(message);
    } else if (message.type === "done") {
      // The protocol's promise: the tokens add up to the done's text (across reconnects too).
      turn.el.dataset.complete = String(turn.text === message.text);
      turn.text = message.text;
      turn.final = {
        kind: "done", finishReason: message.finish_reason, cached: message.cached, model: message.model,
      };
      finish(turn);
    } else if (message.type === "error") {
      if (message.code === "unknown_request" && turn.requestId) {
        turn.final = { kind: "error", code: "lost", message: "This answer could not be resumed (it is older than the "
          + "bridge's resume window, or the bridge changed)." };
      } else {
        turn.final = { kind: "error", code: message.code, message: message.message, stage: message.stage };
      }
      finish(turn);
    }
  }

  function finish(turn) {
    render(turn);
    save();
    updateButtons();
    const what = turn.final.kind === "done" ? `Answer ${describe(turn.final)}` : `Error: ${turn.final.message}`;
    ui.status.textContent = what;
  }

  function describe(final) {
    if (final.cached) return "from the cache";
    return { stop: "complete", length: "cut at the token limit", cancelled: "stopped", refused: "refused",
      blocked: "blocked by the output guard" }[final.finishReason] || final.finishReason;
  }

  // --- rendering -----------------------------------------------------------------------------------------------
  function addTurn(question, model, id) {
    const el = document.createElement("li");
    el.className = "turn";
    const q = document.createElement("p");
    q.className = "question";
    q.append(who("You"), document.createTextNode(question));
    const answer = document.createElement("div");
    answer.className = "answer";
    const text = document.createElement("p");
    text.className = "text";
    answer.append(who(model && model !== MODEL_AUTO ? `ragstream (${model})` : "ragstream"), text);
    const badges = document.createElement("ul");
    badges.className = "badges";
    badges.setAttribute("aria-label", "About this answer");
    const reason = document.createElement("p");
    reason.className = "reason";
    reason.hidden = true;
    const sources = document.createElement("ol");
    sources.className = "citations";
    sources.setAttribute("aria-label", "Sources");
    el.append(q, answer, badges, reason, sources);
    ui.history.append(el);
    ui.empty.hidden = true;
    const turn = {
      id: id || `q${nextId++}`, question, model, requestId: null, lastSeq: -1, text: "", citations: [], final: null,
      resumed: false, dropped: false, el, textEl: text, badgesEl: badges, reasonEl: reason, sourcesEl: sources,
    };
    el.id = `turn-${turn.id}`;
    turns.push(turn);
    return turn;
  }

  function who(name) {
    const span = document.createElement("span");
    span.className = "who";
    span.textContent = name;
    return span;
  }

  function appendText(turn, text) {
    turn.textEl.append(document.createTextNode(text));
    turn.el.setAttribute("aria-busy", "true");
  }

  function render(turn) {
    turn.el.setAttribute("aria-busy", turn.final ? "false" : "true");
    const numbers = new Set(turn.citations.map((c) => c.number));
    turn.textEl.replaceChildren(...(turn.final ? withCitationLinks(turn, numbers) : [document.createTextNode(turn.text)]));

    const badges = [];
    const final = turn.final;
    if (!final) badges.push(badge(turn.requestId ? "streaming…" : "sent…", "pending"));
    if (turn.resumed) badges.push(badge("resumed after reconnect", "resumed"));
    turn.reasonEl.hidden = true;
    if (final && final.kind === "done") {
      if (final.cached) badges.push(badge("from cache", "cached"));
      if (final.finishReason === "refused") badges.push(badge("refused: no relevant source", "refused"));
      if (final.finishReason === "blocked") badges.push(badge("blocked by the output guard", "blocked"));
      if (final.finishReason === "cancelled") badges.push(badge("stopped", "cancelled"));
      if (final.finishReason === "length") badges.push(badge("cut at the token limit", "length"));
      if (final.model) badges.push(badge(`model ${final.model}`, "model"));
    } else if (final && final.kind === "error") {
      badges.push(badge(final.code === "blocked" ? "blocked" : `error: ${final.code}`, final.code === "blocked" ? "blocked" : "error"));
      turn.reasonEl.textContent = final.message;
      turn.reasonEl.hidden = false;
    }
    turn.badgesEl.replaceChildren(...badges);

    turn.sourcesEl.replaceChildren(...[...turn.citations].sort((a, b) => a.number - b.number).map((c) => source(turn, c)));
  }

  function badge(text, kind) {
    const li = document.createElement("li");
    li.className = `badge ${kind}`;
    li.textContent = text;
    return li;
  }

  // "[1]" and "[1, 2]" become links to the numbered sources below the answer (the project's one marker rule).
  function withCitationLinks(turn, numbers) {
    const nodes = [];
    const marker = /\[(\d+(?:\s*,\s*\d+)*)\]/g;
    let last = 0;
    for (const match of turn.text.matchAll(marker)) {
      const cited = match[1].split(",").map((n) => Number(n.trim()));
      if (!cited.some((n) => numbers.has(n))) continue;
      nodes.push(document.createTextNode(turn.text.slice(last, match.index)));
      for (const n of cited) {
        if (!numbers.has(n)) { nodes.push(document.createTextNode(`[${n}]`)); continue; }
        const a = document.createElement("a");
        a.className = "cite";
        a.href = `#cite-${turn.id}-${n}`;
        a.textContent = `[${n}]`;
        const c = turn.citations.find((x) => x.number === n);
        a.setAttribute("aria-label", `source ${n}: ${c.title || c.source_uri}`);
        nodes.push(a);
      }
      last = match.index + match[0].length;
    }
    nodes.push(document.createTextNode(turn.text.slice(last)));
    return nodes;
  }

  function source(turn, c) {
    const li = document.createElement("li");
    li.id = `cite-${turn.id}-${c.number}`;
    const label = `[${c.number}] ${c.title || c.doc_id || c.source_uri}`;
    if (/^(https?|file):/i.test(c.source_uri || "")) {
      const a = document.createElement("a");
      a.href = c.source_uri;
      a.textContent = label;
      a.className = "source";
      a.rel = "noopener noreferrer";
      a.target = "_blank";
      li.append(a);
    } else {
      li.append(document.createTextNode(label));
    }
    if (c.heading_path && c.heading_path.length) {
      const heading = document.createElement("span");
      heading.className = "heading";
      heading.textContent = ` — ${c.heading_path.join(" › ")}`;
      li.append(heading);
    }
    return li;
  }

  function running() {
    return turns.filter((t) => !t.final);
  }

  function updateButtons() {
    ui.stop.disabled = !connected || running().length === 0;
    ui.ask.disabled = !connected;
  }

  // --- actions -------------------------------------------------------------------------------------------------
  function ask() {
    const question = ui.question.value.trim();
    if (!question || !connected) return;
    const turn = addTurn(question, ui.model.value.trim());
    const maxTokens = Number.parseInt(ui.maxTokens.value, 10);
    if (maxTokens > 0) turn.maxTokens = maxTokens;
    render(turn);
    sendAsk(turn);
    save();
    ui.question.value = "";
    ui.status.textContent = "Asked; the answer streams below.";
    updateButtons();
    turn.el.scrollIntoView({ block: "nearest" });
  }

  function stop() {
    for (const turn of running()) {
      send(turn.requestId ? { type: "cancel", request_id: turn.requestId } : { type: "cancel", id: turn.id });
    }
    ui.status.textContent = "Stopping…";
  }

  function clearHistory() {
    if (running().length) stop();
    turns.length = 0;
    byRequest.clear();
    ui.history.replaceChildren();
    ui.empty.hidden = false;
    save();
    updateButtons();
    ui.question.focus();
  }

  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = ui.keyInput.value.trim();
    if (key) useKey(key);
  });
  ui.changeKey.addEventListener("click", changeKey);
  ui.askForm.addEventListener("submit", (event) => { event.preventDefault(); ask(); });
  ui.question.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); ask(); }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && running().length) { event.preventDefault(); stop(); }
  });
  ui.stop.addEventListener("click", stop);
  ui.clear.addEventListener("click", clearHistory);

  restore();
  updateButtons();
  if (apiKey) {
    useKey(apiKey).then((ok) => { if (!ok) changeKey(); });
  } else {
    ui.keyInput.focus();
  }
})();
