/*
 * The browser workspace: the Monaco editor, live output over the websocket, and the glue
 * between them and the server-rendered (htmx) panels.
 *
 * Protocol (README "Websocket protocol"): the page keeps one socket on ws/threads/<id>/,
 * sends {"type": "execute"} and {"type": "cancel"}, and renders every event of the thread's
 * runs. The socket reconnects by itself; a run that was streaming when it dropped (or when
 * the page was reloaded) is caught up through ws/executions/<id>/, which replays what the
 * database holds and then follows the run live. Events carry a per-run `seq`, so nothing is
 * shown twice.
 *
 * Output from code is untrusted: it is written with textContent, images as data: URLs in
 * <img>, and HTML only inside <iframe sandbox srcdoc> (no allow-scripts), so no script of
 * the code ever runs in this page. This file is loaded as a file (no inline script), as the
 * Content-Security-Policy requires.
 */
(function () {
  "use strict";

  const STATUS_LABELS = {
    queued: "Queued",
    running: "Running",
    succeeded: "Succeeded",
    failed: "Failed",
    timed_out: "Timed out",
    cancelled: "Cancelled",
    rejected: "Rejected",
    error: "Error",
  };
  const LANGUAGE_LABELS = {
    python: "Python",
    javascript: "JavaScript",
    typescript: "TypeScript",
    bash: "Bash",
  };
  const EXTENSION_LANGUAGES = {
    py: "python",
    js: "javascript",
    mjs: "javascript",
    cjs: "javascript",
    ts: "typescript",
    sh: "bash",
    bash: "bash",
  };
  // Close codes after which reconnecting cannot help (see execution/consumers.py).
  const CLOSE_UNAUTHENTICATED = 4401;
  const CLOSE_NOT_FOUND = 4404;
  const RECONNECT_MAX_MS = 10000;
  const ANSI_ESCAPE = /\x1b\[[0-9;?]*[A-Za-z]/g;

  /* --- small DOM helpers -------------------------------------------------------------- */

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      node.setAttribute(name, value);
    }
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function alerts() {
    return document.getElementById("alerts");
  }

  /** Show a message a person can act on; replaces the previous one of the same key. */
  function showAlert(message, key) {
    const box = alerts();
    if (!box) {
      window.alert(message);
      return;
    }
    const id = "alert-" + (key || "general");
    let item = document.getElementById(id);
    if (!item) {
      item = el("p", { id: id, class: "alert" });
      box.append(item);
    }
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
  // its errors. Anything else, such as Django's own 404 page or a request that was too
  // large, is not ours to swap into a panel: say what happened instead.
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

  /* --- the editor: Monaco when it loads, the plain text area until then ------------------ */

  function createEditor(root) {
    const textarea = document.getElementById("code");
    const host = document.getElementById("editor");
    const select = document.getElementById("language");
    let monacoEditor = null;
    const editor = {
      ready: false,
      getValue: () => (monacoEditor ? monacoEditor.getValue() : textarea.value),
      setValue: (value) => {
        if (monacoEditor) monacoEditor.setValue(value);
        else textarea.value = value;
      },
      focus: () => (monacoEditor ? monacoEditor.focus() : textarea.focus()),
      setLanguage: (language) => {
        select.value = language;
        if (monacoEditor) {
          const option = select.selectedOptions[0];
          window.monaco.editor.setModelLanguage(monacoEditor.getModel(), option.dataset.monaco);
        }
      },
      onRun: () => {},
      onSave: () => {},
    };
    select.addEventListener("change", () => editor.setLanguage(select.value));

    if (typeof window.require !== "function" || !window.require.config) {
      showAlert("The code editor could not load; a plain text box is used instead.", "editor");
      return editor;
    }
    window.require.config({ paths: { vs: root.dataset.monacoBase } });
    window.require(
      ["vs/editor/editor.main"],
      () => {
        const monaco = window.monaco;
        monacoEditor = monaco.editor.create(host, {
          value: textarea.value,
          language: select.selectedOptions[0].dataset.monaco,
          automaticLayout: true,
          minimap: { enabled: false },
          fontSize: 14,
          scrollBeyondLastLine: false,
          ariaLabel: "Code editor",
        });
        monacoEditor.addCommand(monaco.KeyMod.CtrlCmd | monaco.KeyCode.Enter, () => editor.onRun());
        monacoEditor.addCommand(monaco.KeyMod.CtrlCmd | monaco.KeyCode.KeyS, () => editor.onSave());
        textarea.hidden = true;
        host.classList.add("loaded");
        editor.ready = true;
        root.dataset.editor = "monaco";
        window.atlaschatEditor = monacoEditor; // for people (and tests) poking at the page
      },
      (error) => {
        showAlert("The code editor could not load (" + error + "); a plain text box is used instead.", "editor");
      }
    );
    return editor;
  }

  /* --- rendering a run ----------------------------------------------------------------- */

  /** The markup of templates/execution/partials/run_output.html, built live. */
  function RunView(output, executionId, language, status) {
    output.textContent = "";
    this.id = executionId;
    this.lastSeq = -1;
    this.done = false;
    this.article = el("article", { class: "run", "data-execution-id": executionId, "data-status": status });
    const head = el("header", { class: "run-head" });
    this.statusEl = el("span", { class: "status status-" + status }, STATUS_LABELS[status] || status);
    this.durationEl = el("span", { class: "duration" });
    this.exitEl = el("span", { class: "exit" });
    head.append(this.statusEl, el("span", { class: "lang" }, LANGUAGE_LABELS[language] || language || ""), this.durationEl, this.exitEl);
    this.stream = el("pre", { class: "stream" });
    this.results = el("div", { class: "results" });
    this.article.append(head, this.stream, this.results);
    output.append(this.article);
  }

  RunView.prototype.setStatus = function (status) {
    this.article.dataset.status = status;
    this.statusEl.className = "status status-" + status;
    this.statusEl.textContent = STATUS_LABELS[status] || status;
  };

  RunView.prototype.text = function (stream, text) {
    const last = this.stream.lastElementChild;
    if (last && last.className === stream) {
      last.append(text);
    } else {
      this.stream.append(el("span", { class: stream }, text));
    }
  };

  RunView.prototype.result = function (result) {
    const n = this.results.children.length + 1;
    if (result.ref) {
      // Too large for a websocket frame: the server sent where to GET it (same session).
      const image = ["png", "jpeg", "svg"].find((format) => result.formats.indexOf(format) >= 0);
      if (image) {
        this.results.append(el("img", { class: "result-image", src: result.ref + "?part=" + image, alt: "Image output " + n }));
      } else {
        this.results.append(el("p", { class: "result-text" }, el("a", { href: result.ref }, "Result " + n + " (" + result.size + " bytes)")));
      }
      return;
    }
    if (result.png || result.jpeg) {
      const type = result.png ? "png" : "jpeg";
      this.results.append(el("img", { class: "result-image", src: "data:image/" + type + ";base64," + result[type], alt: "Image output " + n }));
    } else if (result.svg) {
      // An SVG in an <img> is a picture: its scripts never run.
      this.results.append(el("img", { class: "result-image", src: "data:image/svg+xml;charset=utf-8," + encodeURIComponent(result.svg), alt: "Image output " + n }));
    } else if (result.html) {
      // sandbox="" (no allow-scripts, no allow-same-origin): the HTML renders, inert.
      const frame = el("iframe", { class: "result-html", sandbox: "", title: "HTML output " + n });
      frame.srcdoc = result.html;
      this.results.append(frame);
    } else {
      let text = result.markdown || result.latex || result.text;
      if (!text && result.json !== undefined) text = JSON.stringify(result.json, null, 2);
      if (text) this.results.append(el("pre", { class: "result-text" }, text));
    }
  };

  RunView.prototype.error = function (error) {
    const box = el("div", { class: "run-error" });
    const line = el("p");
    if (error.name !== undefined) {
      line.append(el("strong", {}, error.name || "Error"));
      if (error.value) line.append(": " + error.value);
    } else {
      line.append(el("strong", {}, "Refused"), ": " + (error.message || ""));
    }
    if (error.code) line.append(" ", el("code", {}, "(" + error.code + ")"));
    box.append(line);
    if (error.traceback) {
      box.append(el("pre", { class: "traceback" }, String(error.traceback).replace(ANSI_ESCAPE, "")));
    }
    const old = this.article.querySelector(".run-error");
    if (old) old.replaceWith(box);
    else this.article.append(box);
  };

  RunView.prototype.finish = function (frame) {
    this.done = true;
    this.setStatus(frame.status);
    if (frame.duration_ms !== null && frame.duration_ms !== undefined) {
      this.durationEl.textContent = frame.duration_ms + " ms";
    }
    if (frame.exit_code !== null && frame.exit_code !== undefined) {
      this.exitEl.textContent = "exit " + frame.exit_code;
    }
    if (frame.truncated && !this.article.querySelector(".truncated")) {
      this.article.append(el("p", { class: "notice truncated" }, "Output was truncated: it reached the output limit, and what came after it is not shown or stored."));
    }
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
    const select = document.getElementById("language");
    const wsBase = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
    const editor = createEditor(root);

    let socket = null;
    let connected = false;
    let everConnected = false;
    let retryMs = 500;
    let current = null; // the RunView being shown live
    let awaitingStart = false; // an execute was sent, its `execution` event not yet seen
    let catchup = null; // {id, socket} while ws/executions/<id>/ replays a run

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
        // Whatever happened while we were away: catch up the run that was streaming, and
        // refresh the lists it may have changed.
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
        // A request the server refused (validation, quota, sandbox): nothing started.
        awaitingStart = false;
        const error = frame.error || {};
        showAlert((error.message || "The request was refused.") + (error.code ? " (" + error.code + ")" : ""), "run");
        updateButtons();
        // A refused run is kept in the history (status rejected), like every run.
        document.body.dispatchEvent(new CustomEvent("workspace:refresh-history"));
        return;
      }
      const id = frame.execution_id;
      // While a replay socket covers a run, it alone delivers that run's events (in order).
      if (via === "thread" && catchup && catchup.id === id) return;
      if (frame.type === "execution") {
        if (!current || current.id !== id || frame.replay) {
          current = new RunView(output, id, frame.language, frame.status);
          root.dataset.executionId = id;
        }
        awaitingStart = false;
        clearAlert("run");
      }
      if (!current || current.id !== id) return;
      if (!frame.replay) {
        if (frame.seq <= current.lastSeq) return;
      }
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
        case "done":
          current.finish(frame);
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
      const code = editor.getValue();
      if (!code.trim()) {
        showAlert("There is no code to run.", "run");
        return;
      }
      clearAlert("run");
      awaitingStart = true;
      updateButtons();
      socket.send(JSON.stringify({ type: "execute", code: code, language: select.value }));
    }

    function stop() {
      if (!current || current.done || !connected) return;
      stopButton.disabled = true;
      stopButton.textContent = "Stopping…";
      socket.send(JSON.stringify({ type: "cancel", execution_id: current.id }));
    }

    function save() {
      if (!filePath.value.trim()) {
        showAlert("Type a file name to save as, e.g. main.py.", "file");
        filePath.focus();
        return;
      }
      clearAlert("file");
      saveForm.requestSubmit();
    }

    async function openFile(path, url) {
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
      showFile(path, text);
    }

    function showFile(path, text) {
      editor.setValue(text);
      filePath.value = path;
      const extension = path.includes(".") ? path.split(".").pop().toLowerCase() : "";
      if (EXTENSION_LANGUAGES[extension]) editor.setLanguage(EXTENSION_LANGUAGES[extension]);
      root.dataset.currentFile = path;
      editor.focus();
    }

    editor.onRun = run;
    editor.onSave = save;
    runButton.addEventListener("click", run);
    stopButton.addEventListener("click", stop);
    // The text saved is the editor's (Monaco keeps its own, not the hidden text area's).
    saveForm.addEventListener("htmx:configRequest", (event) => {
      event.detail.parameters.content = editor.getValue();
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
          editor.setValue(code.textContent);
          editor.setLanguage(code.dataset.language);
          editor.focus();
        }
      }
    });
    document.body.addEventListener("workspace:file-saved", (event) => {
      root.dataset.savedFile = event.detail.path;
      showAlert("Saved " + event.detail.path + " (" + event.detail.size + " bytes).", "file");
    });
    document.body.addEventListener("workspace:file-open", (event) => showFile(event.detail.path, ""));
    // Opening a past run puts it in the output pane: it is no longer the live one.
    document.body.addEventListener("htmx:afterSwap", (event) => {
      if (event.detail.target === output && current && current.done) current = null;
    });

    connect();
    if (root.dataset.activeRun) catchUp(root.dataset.activeRun);
    updateButtons();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.querySelector("[data-workspace]");
    if (root) initWorkspace(root);
  });
  document.addEventListener("htmx:load", (event) => {
    const root = event.detail.elt.querySelector && event.detail.elt.querySelector("[data-workspace]");
    if (root) initWorkspace(root);
  });
})();
