/*
 * The browser workspace: editor buffers (Monaco), live output over the websocket, and the
 * glue between them and the server-rendered (htmx) panels.
 *
 * Buffers: every open file (and each unsaved scratch text) is a tab with its own text and
 * language; a dot marks text that differs from what was saved. Nothing is discarded without
 * asking: opening or creating a file opens a tab, closing a changed tab asks, leaving the page
 * with changed text asks, and every buffer is kept per thread in localStorage so a reload (or
 * coming back tomorrow) finds it as it was.
 *
 * Protocol (README "Websocket protocol"): the page keeps one socket on ws/threads/<id>/,
 * sends {"type": "execute"} and {"type": "cancel"}, and renders every event of the thread's
 * runs with output.js, in the order they come. The socket reconnects by itself; a run that
 * was streaming when it dropped (or when the page was reloaded) is caught up through
 * ws/executions/<id>/, which replays what the database holds in the order it was produced
 * and then follows the run live. Events carry a per-run `seq`, so nothing is shown twice.
 */
(function () {
  "use strict";

  const EXTENSION_LANGUAGES = {
    py: "python", js: "javascript", mjs: "javascript", cjs: "javascript", ts: "typescript",
    mts: "typescript", sh: "bash", bash: "bash",
  };
  // Close codes after which reconnecting cannot help (see execution/consumers.py).
  const CLOSE_UNAUTHENTICATED = 4401;
  const CLOSE_NOT_FOUND = 4404;
  const RECONNECT_MAX_MS = 10000;
  // Drafts of one thread in localStorage; beyond this the oldest saved buffers are not kept.
  const DRAFT_MAX_CHARS = 2000000;
  const DRAFT_DELAY_MS = 250;

  /* --- small DOM helpers -------------------------------------------------------------- */

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  /** Show a message; `tone` is "error" (default) or "success". Replaces the previous one of
   * the same key. */
  function showAlert(message, key, tone) {
    const box = document.getElementById("alerts");
    if (!box) {
      window.alert(message);
      return;
    }
    const id = "alert-" + (key || "general");
    let item = document.getElementById(id);
    if (!item) {
      item = el("p", { id: id });
      box.append(item);
    }
    item.className = "alert alert-" + (tone || "error");
    item.textContent = "";
    item.append(el("span", {}, message));
    const close = el("button", { type: "button", class: "link", "aria-label": "Dismiss" }, "Dismiss");
    close.addEventListener("click", () => item.remove());
    item.append(" ", close);
  }

  function clearAlert(key) {
    const item = document.getElementById("alert-" + (key || "general"));
    if (item) item.remove();
  }

  /* --- htmx on every page: failures are said in the page, never swallowed --------------- */

  document.addEventListener("htmx:sendError", () => {
    showAlert("Could not reach the server. Check your connection and try again.", "network");
  });
  // 4xx answers are swapped in (htmx-config in the page) because ours carry the form with
  // its errors. Anything else is not ours to swap into a panel: say what happened instead.
  document.addEventListener("htmx:beforeSwap", (event) => {
    const xhr = event.detail.xhr;
    const target = event.detail.target;
    if (xhr.status < 400 || xhr.status >= 500) return;
    if (target && target.id && xhr.responseText.includes('id="' + target.id + '"')) return;
    event.detail.shouldSwap = false;
    const reason = xhr.status === 404 ? "it no longer exists (deleted elsewhere?)" : "the request was refused";
    showAlert("That did not work: " + reason + " (HTTP " + xhr.status + ").", "server");
  });
  document.addEventListener("htmx:responseError", (event) => {
    const status = event.detail.xhr ? event.detail.xhr.status : "?";
    showAlert("The server could not do that right now (HTTP " + status + "). Try again in a moment.", "server");
  });

  function languageOf(path, fallback) {
    const extension = path && path.includes(".") ? path.split(".").pop().toLowerCase() : "";
    return EXTENSION_LANGUAGES[extension] || fallback;
  }

  /* --- buffers ------------------------------------------------------------------------ */

  /**
   * The open buffers of one thread and the editor showing the active one. A buffer is
   * {key, path, language, text, saved}: `path` is "" for scratch text, `saved` the text last
   * saved (null when never saved). Monaco gets one model per buffer (its undo history stays
   * with the tab); until Monaco loads, the plain text area shows the active buffer.
   */
  function Buffers(root) {
    this.root = root;
    this.threadId = root.dataset.threadId;
    this.storageKey = "atlaschat:drafts:" + this.threadId;
    this.textarea = document.getElementById("code");
    this.host = document.getElementById("editor");
    this.select = document.getElementById("language");
    this.tabs = document.getElementById("tabs");
    this.filePath = document.getElementById("file-path");
    this.items = [];
    this.active = null;
    this.monaco = null;
    this.editor = null;
    this.nextKey = 1;
    this.onRun = () => {};
    this.onSave = () => {};
    this.draftTimer = null;

    const restored = this.restore();
    if (!restored) {
      // The last run's code, which the history keeps: not unsaved text.
      this.open({ path: "", language: this.select.value, text: this.textarea.value, saved: this.textarea.value });
    }
    this.textarea.addEventListener("input", () => this.changed(this.textarea.value));
    this.select.addEventListener("change", () => this.setLanguage(this.select.value));
    this.filePath.addEventListener("input", () => {
      // A file's language follows the name it is given.
      const language = languageOf(this.filePath.value.trim(), null);
      if (language && this.active && language !== this.active.language) this.setLanguage(language);
    });
    this.loadMonaco();
  }

  Buffers.prototype.restore = function () {
    let stored = null;
    try {
      stored = JSON.parse(window.localStorage.getItem(this.storageKey) || "null");
    } catch (error) {
      stored = null;
    }
    if (!stored || !Array.isArray(stored.buffers) || !stored.buffers.length) return false;
    for (const buffer of stored.buffers) {
      const restored = this.open({ path: buffer.path || "", language: buffer.language || "python", text: String(buffer.text || ""), saved: buffer.saved === null || buffer.saved === undefined ? null : String(buffer.saved) }, { quiet: true });
      // A file without changes is read again: code may have rewritten it since.
      if (restored.path && (buffer.stale || !this.isDirty(restored))) this.refresh(restored);
    }
    const index = Math.min(Math.max(0, stored.active || 0), this.items.length - 1);
    this.activate(this.items[index]);
    return true;
  };

  /** Read an unchanged file's text again from the server (a file gone is left as it was). */
  Buffers.prototype.refresh = async function (buffer) {
    const row = document.querySelector('#files .file-row[data-path="' + CSS.escape(buffer.path) + '"] a[data-open-file]');
    if (!row) return;
    try {
      const response = await fetch(row.href, { credentials: "same-origin" });
      if (!response.ok) return;
      const text = new TextDecoder("utf-8", { fatal: true }).decode(await response.arrayBuffer());
      this.sync();
      if (this.isDirty(buffer)) return; // typed into meanwhile: keep what was typed
      buffer.text = buffer.saved = text;
      if (buffer.model) buffer.model.setValue(text);
      else if (buffer === this.active) this.textarea.value = text;
      this.renderTabs();
    } catch (error) {
      /* keep what the draft had */
    }
  };

  Buffers.prototype.scheduleDraft = function () {
    window.clearTimeout(this.draftTimer);
    this.draftTimer = window.setTimeout(() => this.saveDraft(), DRAFT_DELAY_MS);
  };

  /** Keep every buffer in localStorage: changed ones first when they do not all fit (an
   * unchanged file is read again from the server anyway). */
  Buffers.prototype.saveDraft = function () {
    window.clearTimeout(this.draftTimer);
    this.sync();
    let budget = DRAFT_MAX_CHARS;
    const order = this.items.slice().sort((a, b) => Number(this.isDirty(b)) - Number(this.isDirty(a)));
    const kept = new Set();
    for (const buffer of order) {
      const size = buffer.text.length + (buffer.saved || "").length;
      if (size <= budget) {
        kept.add(buffer);
        budget -= size;
      }
    }
    const buffers = this.items.map((buffer) => (kept.has(buffer) || !buffer.path ? { path: buffer.path, language: buffer.language, text: kept.has(buffer) ? buffer.text : "", saved: kept.has(buffer) ? buffer.saved : null } : { path: buffer.path, language: buffer.language, text: "", saved: "", stale: true }));
    try {
      window.localStorage.setItem(this.storageKey, JSON.stringify({ buffers: buffers, active: this.items.indexOf(this.active) }));
      clearAlert("draft");
    } catch (error) {
      showAlert("Your unsaved text could not be kept in this browser (" + error.name + "); save it to a file.", "draft");
    }
  };

  Buffers.prototype.isDirty = function (buffer) {
    if (buffer.saved === null) return buffer.text.trim().length > 0;
    return buffer.text !== buffer.saved;
  };

  Buffers.prototype.anyDirty = function () {
    this.sync();
    return this.items.some((buffer) => this.isDirty(buffer));
  };

  /** Copy the editor's text into the active buffer. */
  Buffers.prototype.sync = function () {
    if (!this.active) return;
    this.active.text = this.editor ? this.active.model.getValue() : this.textarea.value;
  };

  Buffers.prototype.changed = function () {
    this.sync();
    this.renderTabs();
    this.scheduleDraft();
  };

  Buffers.prototype.find = function (path) {
    return this.items.find((buffer) => buffer.path === path) || null;
  };

  Buffers.prototype.open = function (spec, options) {
    const buffer = { key: this.nextKey++, path: spec.path, language: spec.language, text: spec.text, saved: spec.saved, model: null };
    this.items.push(buffer);
    if (this.monaco) this.attachModel(buffer);
    if (!(options && options.quiet)) {
      this.activate(buffer);
      this.scheduleDraft();
    }
    return buffer;
  };

  Buffers.prototype.attachModel = function (buffer) {
    const option = this.select.querySelector('option[value="' + buffer.language + '"]');
    buffer.model = this.monaco.editor.createModel(buffer.text, option ? option.dataset.monaco : "plaintext");
    buffer.model.onDidChangeContent(() => {
      if (buffer === this.active) this.changed();
    });
  };

  Buffers.prototype.activate = function (buffer) {
    this.sync();
    this.active = buffer;
    if (this.editor) this.editor.setModel(buffer.model);
    else this.textarea.value = buffer.text;
    this.select.value = buffer.language;
    this.filePath.value = buffer.path;
    this.root.dataset.currentFile = buffer.path;
    this.root.dataset.language = buffer.language;
    this.renderTabs();
  };

  Buffers.prototype.close = function (buffer) {
    this.sync();
    if (this.isDirty(buffer) && !window.confirm((buffer.path || "This scratch text") + " has unsaved changes. Close it and lose them?")) return;
    const index = this.items.indexOf(buffer);
    this.items.splice(index, 1);
    if (buffer.model) buffer.model.dispose();
    if (!this.items.length) this.open({ path: "", language: this.select.value, text: "", saved: null }, { quiet: true });
    if (buffer === this.active) {
      this.active = null;
      this.activate(this.items[Math.min(index, this.items.length - 1)]);
    } else {
      this.renderTabs();
    }
    this.saveDraft();
  };

  Buffers.prototype.setLanguage = function (language) {
    if (!this.active) return;
    this.active.language = language;
    this.select.value = language;
    this.root.dataset.language = language;
    if (this.editor && this.active.model) {
      const option = this.select.querySelector('option[value="' + language + '"]');
      this.monaco.editor.setModelLanguage(this.active.model, option.dataset.monaco);
    }
    this.scheduleDraft();
  };

  Buffers.prototype.renderTabs = function () {
    this.tabs.textContent = "";
    this.items.forEach((buffer, index) => {
      const dirty = this.isDirty(buffer);
      const name = buffer.path || "Scratch" + (this.items.filter((b) => !b.path).indexOf(buffer) > 0 ? " " + (index + 1) : "");
      const tab = el("div", { class: "tab" + (buffer === this.active ? " active" : "") + (dirty ? " dirty" : ""), "data-path": buffer.path });
      const select = el("button", { type: "button", role: "tab", class: "tab-name", "aria-selected": buffer === this.active ? "true" : "false", title: buffer.path || "Unsaved text" }, name);
      select.addEventListener("click", () => this.activate(buffer));
      const mark = el("span", { class: "dirty-mark", "aria-label": dirty ? "unsaved changes" : "" }, dirty ? "●" : "");
      const close = el("button", { type: "button", class: "tab-close", "aria-label": "Close " + name, title: "Close" }, "×");
      close.addEventListener("click", () => this.close(buffer));
      tab.append(select, mark, close);
      this.tabs.append(tab);
    });
    const add = el("button", { type: "button", class: "tab-new", title: "New scratch tab", "aria-label": "New scratch tab" }, "+");
    add.addEventListener("click", () => this.open({ path: "", language: this.select.value, text: "", saved: null }));
    this.tabs.append(add);
    this.root.dataset.dirty = this.items.some((buffer) => this.isDirty(buffer)) ? "1" : "";
  };

  Buffers.prototype.getValue = function () {
    this.sync();
    return this.active ? this.active.text : "";
  };

  Buffers.prototype.focus = function () {
    if (this.editor) this.editor.focus();
    else this.textarea.focus();
  };

  Buffers.prototype.loadMonaco = function () {
    if (typeof window.require !== "function" || !window.require.config) {
      showAlert("The code editor could not load; a plain text box is used instead.", "editor");
      return;
    }
    window.require.config({ paths: { vs: this.root.dataset.monacoBase } });
    window.require(
      ["vs/editor/editor.main"],
      () => {
        this.sync();
        this.monaco = window.monaco;
        for (const buffer of this.items) this.attachModel(buffer);
        this.editor = this.monaco.editor.create(this.host, {
          model: this.active.model,
          automaticLayout: true,
          minimap: { enabled: false },
          fontSize: 14,
          scrollBeyondLastLine: false,
          ariaLabel: "Code editor",
        });
        const monaco = this.monaco;
        this.editor.addCommand(monaco.KeyMod.CtrlCmd | monaco.KeyCode.Enter, () => this.onRun());
        this.editor.addCommand(monaco.KeyMod.CtrlCmd | monaco.KeyCode.KeyS, () => this.onSave());
        this.textarea.hidden = true;
        this.host.classList.add("loaded");
        this.root.dataset.editor = "monaco";
        window.atlaschatEditor = this.editor; // for people (and tests) poking at the page
      },
      (error) => showAlert("The code editor could not load (" + error + "); a plain text box is used instead.", "editor")
    );
  };

  /* --- the workspace ------------------------------------------------------------------- */

  function initWorkspace(root) {
    if (root.dataset.initialised) return;
    root.dataset.initialised = "1";
    const threadId = root.dataset.threadId;
    const output = document.getElementById("output");
    const runButton = document.getElementById("run");
    const stopButton = document.getElementById("stop");
    const saveForm = document.getElementById("save-form");
    const filePath = document.getElementById("file-path");
    const connection = document.getElementById("connection");
    const elapsed = document.getElementById("elapsed");
    const timeLimit = document.getElementById("time-limit");
    const follow = document.getElementById("follow");
    const wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
    const buffers = new Buffers(root);
    const RunView = window.AtlasOutput.RunView;

    let socket = null;
    let connected = false;
    let everConnected = false;
    let retryMs = 500;
    let current = null; // the RunView being shown live
    let awaitingStart = false; // an execute was sent, its `execution` event not yet seen
    let catchup = null; // {id, socket} while ws/executions/<id>/ replays a run
    let timer = null;
    let pendingSave = null; // {path, text} of the save in flight

    /* layout: the splitter between editor and output ----------------------------------- */
    const main = document.getElementById("ws-main");
    const splitter = document.getElementById("splitter");
    const SPLIT_KEY = "atlaschat:split";
    function setSplit(fraction) {
      const clamped = Math.min(0.8, Math.max(0.2, fraction));
      main.style.setProperty("--split", clamped.toFixed(3));
      window.localStorage.setItem(SPLIT_KEY, String(clamped));
    }
    const savedSplit = parseFloat(window.localStorage.getItem(SPLIT_KEY) || "");
    if (savedSplit) setSplit(savedSplit);
    splitter.addEventListener("pointerdown", (event) => {
      splitter.setPointerCapture(event.pointerId);
      const box = main.getBoundingClientRect();
      const move = (e) => setSplit((e.clientX - box.left) / box.width);
      const up = () => {
        splitter.removeEventListener("pointermove", move);
        splitter.removeEventListener("pointerup", up);
      };
      splitter.addEventListener("pointermove", move);
      splitter.addEventListener("pointerup", up);
    });
    splitter.addEventListener("keydown", (event) => {
      const now = parseFloat(main.style.getPropertyValue("--split")) || 0.5;
      if (event.key === "ArrowLeft") setSplit(now - 0.05);
      else if (event.key === "ArrowRight") setSplit(now + 0.05);
    });

    /* output pane: follow new output unless scrolled up -------------------------------- */
    output.addEventListener("scroll", () => {
      const atBottom = output.scrollHeight - output.scrollTop - output.clientHeight <= 48;
      if (atBottom) follow.hidden = true;
    });
    output.addEventListener("output:grew", (event) => {
      if (!event.detail.followed) follow.hidden = false;
    });
    follow.addEventListener("click", () => {
      output.scrollTop = output.scrollHeight;
      follow.hidden = true;
    });

    function setConnection(state, label) {
      connection.dataset.state = state;
      connection.querySelector(".label").textContent = label;
      root.dataset.connection = state;
    }

    function updateButtons() {
      const running = (current && !current.done) || awaitingStart;
      runButton.disabled = !connected || running;
      stopButton.hidden = !(current && !current.done);
      root.dataset.running = running ? "1" : "";
      markHistory();
    }

    function startTimer(since) {
      stopTimer();
      const start = since || Date.now();
      elapsed.hidden = false;
      const tick = () => {
        elapsed.textContent = ((Date.now() - start) / 1000).toFixed(1) + " s";
      };
      tick();
      timer = window.setInterval(tick, 100);
    }

    function stopTimer(durationMs) {
      if (timer) window.clearInterval(timer);
      timer = null;
      if (durationMs !== undefined && durationMs !== null) elapsed.textContent = window.AtlasOutput.formatDuration(durationMs);
    }

    /** Highlight, in History, the run shown in the output and the one running. */
    function markHistory() {
      const shown = output.querySelector("article.run");
      for (const row of document.querySelectorAll("#history .run-row")) {
        row.classList.toggle("selected", Boolean(shown) && row.dataset.executionId === shown.dataset.executionId);
        row.classList.toggle("running", Boolean(current) && !current.done && row.dataset.executionId === current.id);
      }
    }

    function connect() {
      setConnection(everConnected ? "reconnecting" : "connecting", everConnected ? "Reconnecting…" : "Connecting…");
      const ws = new WebSocket(wsBase + "/ws/threads/" + threadId + "/");
      socket = ws;
      ws.addEventListener("open", () => {
        connected = true;
        retryMs = 500;
        setConnection("connected", "Connected");
        clearAlert("connection");
        if (everConnected) {
          if (current && !current.done) catchUp(current.id);
          refreshPanels();
        }
        everConnected = true;
        updateButtons();
      });
      ws.addEventListener("message", (message) => handleFrame(JSON.parse(message.data), "thread"));
      ws.addEventListener("close", (event) => {
        if (socket !== ws) return;
        connected = false;
        awaitingStart = false;
        updateButtons();
        if (event.code === CLOSE_UNAUTHENTICATED) {
          setConnection("offline", "Signed out");
          showAlert("You are signed out. Reload the page to log in again.", "connection");
          return;
        }
        if (event.code === CLOSE_NOT_FOUND) {
          setConnection("offline", "Thread not found");
          showAlert("This thread no longer exists.", "connection");
          return;
        }
        setConnection("reconnecting", "Reconnecting…");
        window.setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, RECONNECT_MAX_MS);
      });
    }

    function catchUp(executionId) {
      if (catchup) catchup.socket.close();
      const ws = new WebSocket(wsBase + "/ws/executions/" + executionId + "/");
      catchup = { id: executionId, socket: ws };
      ws.addEventListener("message", (message) => handleFrame(JSON.parse(message.data), "replay"));
      ws.addEventListener("close", () => {
        if (catchup && catchup.socket === ws) catchup = null;
      });
    }

    function refreshPanels() {
      document.body.dispatchEvent(new CustomEvent("workspace:refresh-files"));
      document.body.dispatchEvent(new CustomEvent("workspace:refresh-history"));
    }

    function handleFrame(frame, via) {
      if (frame.type === "error" && !frame.execution_id) {
        awaitingStart = false;
        const error = frame.error || {};
        showAlert((error.message || "The request was refused.") + (error.code ? " (" + error.code + ")" : ""), "run");
        updateButtons();
        stopTimer();
        document.body.dispatchEvent(new CustomEvent("workspace:refresh-history"));
        return;
      }
      const id = frame.execution_id;
      if (via === "thread" && catchup && catchup.id === id) return;
      // Nothing follows a run's `done`. A page that reloaded mid-run follows it on
      // ws/executions/<id>/, but its new thread socket, seeing the run for the first time,
      // catches it up from the row on its own and can lag behind: its replayed frames, read
      // once the other socket closed after `done`, would set the run back to "running" (and
      // its own `done` would then be dropped as already seen).
      if (current && current.id === id && current.done) return;
      // A replay the page has already seen through (a second socket's catch-up arriving after
      // the first socket ended) must not redraw the run.
      const seen = Boolean(frame.replay && current && current.id === id && frame.seq <= current.lastSeq && frame.seq !== current.replaySeq);
      if (seen) return;
      if (frame.type === "execution") {
        if (!current || current.id !== id || frame.replay) {
          output.textContent = "";
          current = new RunView(output, { id: id, language: frame.language, status: frame.status }, output);
          root.dataset.executionId = id;
          follow.hidden = true;
          if (!frame.replay || !timer) startTimer();
        }
        awaitingStart = false;
        clearAlert("run");
      }
      if (!current || current.id !== id) return;
      if (!frame.replay && frame.seq <= current.lastSeq) return;
      // Every frame of one replay carries the same seq (the row's last): the batch is taken
      // whole, and nothing older after it.
      if (frame.replay) current.replaySeq = frame.seq;
      current.lastSeq = Math.max(current.lastSeq, frame.seq);
      switch (frame.type) {
        case "execution":
        case "status":
          current.setStatus(frame.status);
          break;
        case "stdout":
        case "stderr":
          current.text(frame.type, frame.text);
          break;
        case "result":
          current.result(frame.result);
          break;
        case "error":
          current.error(frame.error);
          break;
        case "input_request":
          current.askInput(frame, (value) => sendInput(frame.execution_id, value));
          break;
        case "done":
          current.finish(frame);
          stopTimer(frame.duration_ms);
          stopButton.disabled = false;
          stopButton.textContent = "Stop";
          refreshPanels();
          break;
      }
      updateButtons();
    }

    function run() {
      if (!connected) {
        showAlert("Not connected to the server yet; the run will be possible once it reconnects.", "run");
        return;
      }
      if ((current && !current.done) || awaitingStart) return;
      const code = buffers.getValue();
      if (!code.trim()) {
        showAlert("There is no code to run.", "run");
        return;
      }
      clearAlert("run");
      awaitingStart = true;
      updateButtons();
      startTimer();
      const message = { type: "execute", code: code, language: buffers.active.language };
      const limit = parseFloat(timeLimit.value);
      if (limit > 0) message.timeout = limit;
      socket.send(JSON.stringify(message));
    }

    function sendInput(executionId, value) {
      if (!connected) {
        showAlert("Not connected: the answer could not be sent. It can be sent once the page reconnects.", "run");
        return false;
      }
      socket.send(JSON.stringify({ type: "input", execution_id: executionId, value: value }));
      return true;
    }

    function stop() {
      if (!current || current.done || !connected) return;
      stopButton.disabled = true;
      stopButton.textContent = "Stopping…";
      socket.send(JSON.stringify({ type: "cancel", execution_id: current.id }));
    }

    function existingFiles() {
      return Array.from(document.querySelectorAll("#files .file-row")).map((row) => row.dataset.path);
    }

    function save() {
      const path = filePath.value.trim();
      if (!path) {
        showAlert("Type a file name to save as, e.g. main.py.", "file");
        filePath.focus();
        return;
      }
      clearAlert("file");
      saveForm.requestSubmit();
    }

    /** Saving under another file's name replaces that file: ask first. False to cancel. */
    function confirmSave(path) {
      const buffer = buffers.active;
      if (path !== buffer.path && existingFiles().includes(path)) {
        if (!window.confirm(path + " exists already. Replace it with this text?")) return false;
      }
      const other = buffers.find(path);
      if (other && other !== buffer && buffers.isDirty(other)) {
        return window.confirm(path + " is open with unsaved changes in another tab. Save over it anyway?");
      }
      return true;
    }

    async function openFile(path, url) {
      const open = buffers.find(path);
      if (open) {
        buffers.activate(open);
        buffers.focus();
        return;
      }
      let text;
      try {
        const response = await fetch(url, { credentials: "same-origin" });
        if (!response.ok) throw new Error("HTTP " + response.status);
        text = new TextDecoder("utf-8", { fatal: true }).decode(await response.arrayBuffer());
      } catch (error) {
        const reason = error instanceof TypeError && error.message.includes("decode") ? "it is not UTF-8 text" : String(error.message || error);
        showAlert("Could not open " + path + " in the editor (" + reason + "). Download it instead.", "file");
        return;
      }
      clearAlert("file");
      buffers.open({ path: path, language: languageOf(path, "python"), text: text, saved: text });
      buffers.focus();
    }

    buffers.onRun = run;
    buffers.onSave = save;
    runButton.addEventListener("click", run);
    stopButton.addEventListener("click", stop);
    // The text saved is the active buffer's (Monaco keeps its own, not the text area's).
    saveForm.addEventListener("htmx:configRequest", (event) => {
      const text = buffers.getValue();
      event.detail.parameters.content = text;
      pendingSave = { buffer: buffers.active, path: event.detail.parameters.path, text: text };
    });
    // Whether by the button, Enter or Ctrl/Cmd+S: the request can still be called off here.
    saveForm.addEventListener("htmx:beforeRequest", (event) => {
      if (!confirmSave(String(pendingSave ? pendingSave.path : filePath.value).trim())) {
        event.preventDefault();
        pendingSave = null;
        return;
      }
      clearAlert("file");
    });
    document.addEventListener("keydown", (event) => {
      if (!(event.ctrlKey || event.metaKey)) return;
      if (event.key === "Enter") {
        event.preventDefault();
        run();
      } else if (event.key === "s" || event.key === "S") {
        event.preventDefault();
        save();
      }
    });
    document.addEventListener("click", (event) => {
      const opener = event.target.closest("a[data-open-file]");
      if (opener && root.contains(opener)) {
        event.preventDefault();
        openFile(opener.dataset.openFile, opener.href);
        return;
      }
      const loader = event.target.closest("[data-load-code]");
      if (loader) {
        const code = document.querySelector('[data-code-of="' + loader.dataset.loadCode + '"]');
        if (code) {
          buffers.open({ path: "", language: code.dataset.language, text: code.textContent, saved: null });
          buffers.focus();
        }
      }
    });
    document.body.addEventListener("workspace:file-saved", (event) => {
      const path = event.detail.path;
      root.dataset.savedFile = path;
      if (pendingSave && pendingSave.path.trim() === path) {
        const buffer = pendingSave.buffer;
        const twin = buffers.find(path);
        if (twin && twin !== buffer) buffers.close(twin);
        buffer.path = path;
        buffer.saved = pendingSave.text;
        const language = languageOf(path, null);
        if (language && buffer === buffers.active) buffers.setLanguage(language);
        if (buffer === buffers.active) filePath.value = path;
      }
      pendingSave = null;
      buffers.renderTabs();
      buffers.saveDraft();
      showAlert("Saved " + path + " (" + window.AtlasOutput.humanSize(event.detail.size) + ").", "file", "success");
    });
    document.body.addEventListener("workspace:file-open", (event) => {
      const path = event.detail.path;
      const open = buffers.find(path);
      if (open) buffers.activate(open);
      else buffers.open({ path: path, language: languageOf(path, buffers.active.language), text: "", saved: "" });
      buffers.focus();
    });
    // Opening a past run puts it in the output pane: it is no longer the live one.
    document.body.addEventListener("htmx:afterSwap", (event) => {
      if (event.detail.target === output) {
        if (current && current.done) current = null;
        window.AtlasOutput.enhanceStoredRun(output.querySelector("article.run"));
        output.scrollTop = 0;
      }
      markHistory();
    });
    // Unsaved text is kept in this browser, but leaving still asks: it may be another browser
    // tomorrow.
    window.addEventListener("beforeunload", (event) => {
      buffers.saveDraft();
      if (buffers.anyDirty()) {
        event.preventDefault();
        event.returnValue = "";
      }
    });

    connect();
    if (root.dataset.activeRun) catchUp(root.dataset.activeRun);
    updateButtons();
    root.workspace = { buffers: buffers };
  }

  // A running install's log follows its newest lines, as a terminal would.
  document.addEventListener("htmx:afterSwap", () => {
    for (const log of document.querySelectorAll("[data-live-log]")) log.scrollTop = log.scrollHeight;
  });

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.querySelector("[data-workspace]");
    if (root) initWorkspace(root);
    // A run's own page (not inside a workspace) draws its stored output the same way.
    for (const article of document.querySelectorAll("article.run")) window.AtlasOutput.enhanceStoredRun(article);
  });
  document.addEventListener("htmx:load", (event) => {
    const root = event.detail.elt.querySelector && event.detail.elt.querySelector("[data-workspace]");
    if (root) initWorkspace(root);
  });
})();
