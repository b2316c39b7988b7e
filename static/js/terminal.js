/*
 * The workspace's terminal: xterm.js (npm) attached to a shell in the thread's sandbox over
 * ws/threads/<id>/terminal/ (execution/sandbox_terminal.py). Opened when its panel is opened; the
 * socket carries {"type": "input", "data"} and {"type": "resize", "cols", "rows"} up and
 * {"type": "output", "data"} / {"type": "exit"} / {"type": "error"} down.
 */
(function () {
  "use strict";

  function start(panel) {
    const host = panel.querySelector("#terminal");
    if (!host || host.dataset.started || !window.Terminal) return;
    host.dataset.started = "1";
    const term = new window.Terminal({ convertEol: false, cursorBlink: true, fontSize: 13, scrollback: 5000 });
    const fit = window.FitAddon ? new window.FitAddon.FitAddon() : null;
    if (fit) term.loadAddon(fit);
    term.open(host);
    if (fit) fit.fit();
    const status = document.createElement("p");
    status.className = "hint terminal-status";
    status.setAttribute("role", "status");
    status.textContent = "Connecting to the sandbox…";
    host.after(status);
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + host.dataset.terminalUrl);
    const send = (message) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
    };
    socket.addEventListener("open", () => send({ type: "resize", cols: term.cols, rows: term.rows }));
    socket.addEventListener("message", (message) => {
      const frame = JSON.parse(message.data);
      if (frame.type === "ready") {
        status.textContent = "Connected: a shell in this thread's sandbox.";
        host.dataset.state = "ready";
        term.focus();
      } else if (frame.type === "output") {
        term.write(frame.data);
      } else if (frame.type === "exit") {
        status.textContent = "The shell ended. Close and reopen the panel for a new one.";
        host.dataset.state = "ended";
      } else if (frame.type === "error") {
        status.textContent = (frame.error && frame.error.message) || "The terminal failed.";
        host.dataset.state = "error";
      }
    });
    socket.addEventListener("close", () => {
      if (host.dataset.state === "ready") status.textContent = "Disconnected. Close and reopen the panel to start a new shell.";
      host.dataset.state = host.dataset.state === "error" ? "error" : "closed";
      host.dataset.started = "";
    });
    term.onData((data) => send({ type: "input", data: data }));
    term.onResize((size) => send({ type: "resize", cols: size.cols, rows: size.rows }));
    if (fit) new ResizeObserver(() => fit.fit()).observe(host);
    panel.addEventListener("toggle", () => {
      if (!panel.open) {
        socket.close();
        term.dispose();
        status.remove();
        host.textContent = "";
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const panel = document.getElementById("terminal-panel");
    if (!panel) return;
    panel.addEventListener("toggle", () => {
      if (panel.open) start(panel);
    });
  });
})();
