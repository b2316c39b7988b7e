/*
 * How a run's output is drawn, live and from the history: one ordered stream of stdout,
 * stderr, rich results and the error, in the order the code produced them.
 *
 * Everything the code printed is untrusted:
 * - terminal text goes through ansi_up (npm), which escapes HTML and turns colour codes into
 *   styled spans; a carriage return overwrites the line from its start, as a terminal does;
 * - Markdown is rendered by marked and sanitised by DOMPurify before it touches the page,
 *   then LaTeX in it is typeset by KaTeX (auto-render); a LaTeX result by KaTeX alone;
 * - HTML (a DataFrame's table) is sanitised by DOMPurify and shown inline, styled by our CSS
 *   and sized to its content; no script, style element or event handler survives;
 * - images are data: URLs in <img> (an SVG there runs no script);
 * - E2B chart data (`result.chart`) is drawn by Chart.js, its static picture kept as fallback.
 * Text beyond MAX_RENDERED_CHARS per run is not drawn (a notice says so): the tab stays fast
 * whatever a run prints; the whole output stays stored and downloadable through the API.
 */
(function () {
  "use strict";

  const MAX_RENDERED_CHARS = 200000;
  const MAX_RENDERED_RESULTS = 200;
  const FOLLOW_SLACK_PX = 48;
  const STATUS_LABELS = {
    queued: "Queued", running: "Running", succeeded: "Succeeded", failed: "Failed",
    timed_out: "Timed out", cancelled: "Cancelled", rejected: "Rejected", error: "Error",
  };
  const LANGUAGE_LABELS = { python: "Python", javascript: "JavaScript", typescript: "TypeScript", bash: "Bash" };
  const SANITIZE = {
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed"],
    FORBID_ATTR: ["style"],
  };

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  /** A line's visible text after carriage returns: each \r goes back to the line's start
   * and what follows overwrites what was there (a progress bar ends as its last state). */
  function overwriteLine(line) {
    if (line.indexOf("\r") === -1) return line;
    let shown = "";
    for (const part of line.split("\r")) shown = part + shown.slice(part.length);
    return shown;
  }

  function sanitize(html) {
    return window.DOMPurify ? window.DOMPurify.sanitize(html, SANITIZE) : null;
  }

  function typeset(node) {
    if (typeof window.renderMathInElement !== "function") return;
    try {
      window.renderMathInElement(node, {
        delimiters: [
          { left: "$$", right: "$$", display: true },
          { left: "\\[", right: "\\]", display: true },
          { left: "$", right: "$", display: false },
          { left: "\\(", right: "\\)", display: false },
        ],
        throwOnError: false,
      });
    } catch (error) {
      /* leave the source visible */
    }
  }

  /** Terminal text of one stream, drawn as it arrives: finished lines once, the unfinished
   * last line redrawn on each chunk (that is where \r progress bars live). */
  function TextBlock(stream, view) {
    this.view = view;
    this.node = el("pre", { class: "stream " + stream, "data-stream": stream });
    this.done = el("span");
    this.tail = el("span", { class: "tail" });
    this.node.append(this.done, this.tail);
    this.ansi = window.AnsiUp ? new window.AnsiUp() : null;
    this.pending = "";
  }

  TextBlock.prototype.toHtml = function (ansi, text) {
    return ansi ? ansi.ansi_to_html(text) : null;
  };

  TextBlock.prototype.append = function (text) {
    this.pending += text.replace(/\r\n/g, "\n");
    const cut = this.pending.lastIndexOf("\n");
    if (cut !== -1) {
      const lines = this.pending.slice(0, cut + 1).split("\n");
      lines.pop();
      const finished = lines.map(overwriteLine).join("\n") + "\n";
      this.pending = this.pending.slice(cut + 1);
      const html = this.toHtml(this.ansi, finished);
      if (html === null) this.done.append(finished);
      else this.done.insertAdjacentHTML("beforeend", html);
    }
    // The unfinished line, drawn with a copy of the colour state so far.
    const line = overwriteLine(this.pending);
    const scratch = this.ansi ? Object.assign(Object.create(Object.getPrototypeOf(this.ansi)), this.ansi) : null;
    const html = this.toHtml(scratch, line);
    if (html === null) this.tail.textContent = line;
    else this.tail.innerHTML = html;
  };

  /** One run in an output pane. `pane` is the scrolling element it follows. */
  function RunView(container, info, pane) {
    this.id = info.id;
    this.lastSeq = -1;
    this.done = false;
    this.pane = pane || container;
    this.rendered = 0;
    this.results = 0;
    this.clipped = false;
    this.block = null;
    this.article = el("article", { class: "run", "data-execution-id": info.id, "data-status": info.status });
    const head = el("header", { class: "run-head" });
    this.statusEl = el("span", { class: "status status-" + info.status }, STATUS_LABELS[info.status] || info.status);
    this.durationEl = el("span", { class: "duration" });
    this.exitEl = el("span", { class: "exit" });
    head.append(this.statusEl, el("span", { class: "lang" }, LANGUAGE_LABELS[info.language] || info.language || ""), this.durationEl, this.exitEl);
    this.body = el("div", { class: "run-body" });
    this.article.append(head, this.body);
    container.append(this.article);
  }

  RunView.prototype.following = function () {
    const pane = this.pane;
    return pane.scrollHeight - pane.scrollTop - pane.clientHeight <= FOLLOW_SLACK_PX;
  };

  /** Add to the output, keeping the pane at the bottom if it was there. */
  RunView.prototype.add = function (draw) {
    const follow = this.following();
    draw();
    if (follow) this.pane.scrollTop = this.pane.scrollHeight;
    this.pane.dispatchEvent(new CustomEvent("output:grew", { detail: { followed: follow } }));
  };

  RunView.prototype.clip = function () {
    if (this.clipped) return;
    this.clipped = true;
    this.body.append(el("p", { class: "notice clipped" }, "This run printed more than the page shows (" + MAX_RENDERED_CHARS.toLocaleString() + " characters or " + MAX_RENDERED_RESULTS + " results); the rest is stored with the run and can be fetched from the API."));
  };

  RunView.prototype.setStatus = function (status) {
    this.article.dataset.status = status;
    this.statusEl.className = "status status-" + status;
    this.statusEl.textContent = STATUS_LABELS[status] || status;
  };

  RunView.prototype.text = function (stream, text) {
    if (this.clipped) return;
    if (this.rendered + text.length > MAX_RENDERED_CHARS) {
      text = text.slice(0, Math.max(0, MAX_RENDERED_CHARS - this.rendered));
    }
    this.rendered += text.length;
    this.add(() => {
      if (!this.block || this.block.stream !== stream || this.body.lastElementChild !== this.block.node) {
        this.block = new TextBlock(stream, this);
        this.block.stream = stream;
        this.body.append(this.block.node);
      }
      if (text) this.block.append(text);
      if (this.rendered >= MAX_RENDERED_CHARS) this.clip();
    });
  };

  RunView.prototype.result = function (result) {
    if (this.clipped) return;
    this.results += 1;
    if (this.results > MAX_RENDERED_RESULTS) {
      this.clip();
      return;
    }
    const n = this.results;
    this.add(() => {
      this.block = null;
      this.body.append(renderResult(result, n));
    });
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
    if (error.name === "StdinNotImplementedError") {
      box.append(el("p", { class: "hint" }, "This sandbox takes no input: input() works with the bundled sandbox server, not with E2B's cloud sandboxes. Pass values in the code or in a file instead."));
    }
    if (error.traceback) {
      const trace = el("pre", { class: "traceback" });
      const ansi = window.AnsiUp ? new window.AnsiUp() : null;
      if (ansi) trace.innerHTML = ansi.ansi_to_html(String(error.traceback));
      else trace.textContent = String(error.traceback);
      box.append(trace);
    }
    this.add(() => {
      this.block = null;
      const old = this.article.querySelector(".run-error");
      if (old) old.replaceWith(box);
      else this.body.append(box);
    });
  };

  /** The code waits in input(): ask here, in the output, and hand the answer to `answer`. */
  RunView.prototype.askInput = function (frame, answer) {
    this.dropInput();
    const form = el("form", { class: "input-prompt", autocomplete: "off" });
    const id = "input-" + this.id;
    const label = el("label", { for: id }, frame.prompt || "The code asks for input:");
    const field = el("input", { id: id, type: frame.password ? "password" : "text", name: "value", autocomplete: "off", spellcheck: "false" });
    const send = el("button", { type: "submit" }, "Send");
    form.append(label, field, send);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!answer(field.value)) return;
      // The prompt and the answer come back as output, where they belong.
      form.remove();
    });
    this.add(() => {
      this.block = null;
      this.body.append(form);
    });
    this.inputForm = form;
    field.focus({ preventScroll: true });
  };

  RunView.prototype.dropInput = function () {
    if (this.inputForm) this.inputForm.remove();
    this.inputForm = null;
  };

  RunView.prototype.finish = function (frame) {
    this.dropInput();
    this.done = true;
    this.setStatus(frame.status);
    if (frame.duration_ms !== null && frame.duration_ms !== undefined) this.durationEl.textContent = formatDuration(frame.duration_ms);
    if (frame.exit_code !== null && frame.exit_code !== undefined) this.exitEl.textContent = "exit " + frame.exit_code;
    if (frame.truncated && !this.article.querySelector(".truncated:not(.clipped)")) {
      this.add(() => this.article.append(el("p", { class: "notice truncated" }, "Output was truncated: it reached the output limit, and what came after it is not shown or stored.")));
    }
  };

  function humanSize(bytes) {
    if (bytes < 1024) return bytes + " bytes";
    const units = ["KB", "MB", "GB"];
    let size = bytes / 1024;
    let unit = 0;
    while (size >= 1024 && unit < units.length - 1) {
      size /= 1024;
      unit += 1;
    }
    return size.toFixed(size < 10 ? 1 : 0) + " " + units[unit];
  }

  function formatDuration(ms) {
    return ms < 1000 ? ms + " ms" : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  }

  function renderResult(result, n) {
    const box = el("div", { class: "result", "data-result": n });
    if (result.ref) {
      // Too large for a websocket frame: the server says where to GET it (same session).
      const image = ["png", "jpeg", "svg"].find((format) => (result.formats || []).indexOf(format) >= 0);
      if (image) {
        box.append(el("img", { class: "result-image", src: result.ref + "?part=" + image, alt: "Image output " + n }));
      } else {
        const line = el("p", { class: "result-text" });
        line.append(el("a", { href: result.ref }, "Result " + n + " (" + humanSize(result.size || 0) + ")"));
        if (result.text) line.append(": " + result.text);
        box.append(line);
      }
      return box;
    }
    if (result.chart && window.Chart && drawChart(box, result.chart, n)) {
      box.classList.add("result-chart");
      if (result.png) {
        const still = el("details", { class: "chart-still" });
        still.append(el("summary", {}, "Static picture"), el("img", { class: "result-image", src: "data:image/png;base64," + result.png, alt: "Chart " + n }));
        box.append(still);
      }
      return box;
    }
    if (result.png || result.jpeg) {
      const type = result.png ? "png" : "jpeg";
      box.append(el("img", { class: "result-image", src: "data:image/" + type + ";base64," + result[type], alt: "Image output " + n }));
    } else if (result.svg) {
      box.append(el("img", { class: "result-image", src: "data:image/svg+xml;charset=utf-8," + encodeURIComponent(result.svg), alt: "Image output " + n }));
    } else if (result.html && window.DOMPurify) {
      // Sanitised once: each parse of hostile markup is a parse Chromium reports to the CSP.
      const html = el("div", { class: "result-html-inline" });
      html.innerHTML = sanitize(result.html);
      box.append(html);
    } else if (result.markdown && window.marked && window.DOMPurify) {
      const md = el("div", { class: "result-markdown" });
      md.innerHTML = sanitize(window.marked.parse(String(result.markdown)));
      typeset(md);
      box.append(md);
    } else if (result.latex && window.katex) {
      const math = el("div", { class: "result-latex" });
      const source = String(result.latex).trim().replace(/^\$\$?|\$\$?$/g, "").replace(/^\\\[|\\\]$/g, "");
      try {
        window.katex.render(source, math, { displayMode: true, throwOnError: false });
      } catch (error) {
        math.textContent = result.latex;
      }
      box.append(math);
    } else {
      let text = result.markdown || result.latex || result.text;
      if (!text && result.json !== undefined) text = JSON.stringify(result.json, null, 2);
      if (!text && result.data !== undefined) text = JSON.stringify(result.data, null, 2);
      box.append(el("pre", { class: "result-text" }, text || ""));
    }
    return box;
  }

  /** E2B chart data (e2b-charts' JSON) as an interactive Chart.js chart; false when the
   * chart's type is one we do not draw (the static picture is shown instead). */
  function drawChart(box, chart, n) {
    const kinds = { line: "line", scatter: "scatter", bar: "bar", pie: "pie" };
    const type = kinds[chart.type];
    if (!type || !Array.isArray(chart.elements)) return false;
    let data;
    if (type === "line" || type === "scatter") {
      data = { datasets: chart.elements.map((series) => ({ label: series.label, data: (series.points || []).map((p) => ({ x: p[0], y: p[1] })), showLine: type === "line" })) };
    } else if (type === "bar") {
      const labels = [...new Set(chart.elements.map((bar) => bar.label))];
      const groups = [...new Set(chart.elements.map((bar) => bar.group))];
      data = {
        labels: labels,
        datasets: groups.map((group) => ({ label: group, data: labels.map((label) => {
          const bar = chart.elements.find((b) => b.label === label && b.group === group);
          return bar ? Number(bar.value) : null;
        }) })),
      };
    } else {
      data = { labels: chart.elements.map((slice) => slice.label), datasets: [{ data: chart.elements.map((slice) => slice.angle) }] };
    }
    const canvas = el("canvas", { role: "img", "aria-label": chart.title || "Chart " + n });
    const frame = el("div", { class: "chart-frame" });
    frame.append(canvas);
    box.append(frame);
    const numeric = (axis) => ({ type: "linear", title: { display: Boolean(chart[axis + "_label"]), text: chart[axis + "_label"] || "" } });
    try {
      new window.Chart(canvas, {
        type: type === "scatter" ? "scatter" : type,
        data: data,
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: false,
          plugins: { title: { display: Boolean(chart.title), text: chart.title || "" } },
          scales: type === "pie" ? {} : type === "bar" ? {} : { x: numeric("x"), y: numeric("y") },
        },
      });
    } catch (error) {
      frame.remove();
      return false;
    }
    return true;
  }

  /** Draw a stored run (templates/execution/partials/run_output.html) with the live
   * renderer, from the JSON the page carries beside its server-rendered fallback. */
  function enhanceStoredRun(article) {
    if (!article || article.dataset.enhanced) return;
    const body = article.querySelector("[data-stored-output]");
    const data = body && document.getElementById(body.dataset.storedOutput);
    if (!data) return;
    article.dataset.enhanced = "1";
    const pieces = JSON.parse(data.textContent);
    const holder = el("div");
    const view = new RunView(holder, { id: article.dataset.executionId, status: article.dataset.status, language: article.dataset.language }, holder);
    for (const piece of pieces) {
      if (piece.type === "result") view.result(piece.result);
      else view.text(piece.type, piece.text);
    }
    body.replaceWith(view.body);
    for (const trace of article.querySelectorAll(".run-error .traceback")) {
      if (window.AnsiUp) trace.innerHTML = new window.AnsiUp().ansi_to_html(trace.textContent);
    }
  }

  window.AtlasOutput = { RunView: RunView, enhanceStoredRun: enhanceStoredRun, formatDuration: formatDuration, humanSize: humanSize, overwriteLine: overwriteLine, maxRenderedChars: MAX_RENDERED_CHARS };
})();
