// sandboxd's JavaScript/TypeScript kernel: one long-lived Node process per context, inside the
// sandbox (bound read-only at /opt/sandboxd/kernels). The host (sandboxd/interpreter/
// node_kernel.py) drives it:
//
//   stdin  <- one JSON request per line: {"id", "code", "env"} runs a cell,
//             {"id", "setenv"} sets variables for good.
//   stdout -> frames: FRAME_MARK + JSON + "\n", e.g. {"t":"out","s":"stdout","x":"hi\n"},
//             {"t":"result","id","text"}, {"t":"error","id","name","value","traceback"},
//             {"t":"done","id"}, {"t":"ready"}. Bytes outside frames (a child process writing
//             straight to fd 1) are the cell's stdout; fd 2 is its stderr.
//
// State persists between cells like a REPL: cells run as scripts in this realm, so globals and
// top-level declarations stay. A cell with top-level await is rewritten the way Node's own REPL
// does it (declarations hoisted, body in an async function). Static `import` statements become
// dynamic imports resolved from the context's cwd, so packages in /home/user/node_modules load
// with require() and import alike. TypeScript is transpiled without a type-check pass by the
// native esbuild binary.
"use strict";

const path = require("node:path");
const util = require("node:util");
const vm = require("node:vm");
const { createRequire } = require("node:module");
const { spawnSync } = require("node:child_process");
const { Console } = require("node:console");

const FRAME_MARK = "\x1e\x1fsbx:";
// The host passes the language and esbuild's path as arguments (not in the environment, which
// /proc/<pid>/environ keeps readable for the process's life); cells see a bare process.argv.
const [LANGUAGE = "javascript", ESBUILD = "/opt/sandboxd/node/esbuild"] = process.argv.splice(2);

let processTopLevelAwait = null;
let acorn = null;
try {
  // Node's REPL rewriter and its parser (need --expose-internals); without them a cell with
  // await still runs, but its declarations stay local to that cell.
  ({ processTopLevelAwait } = require("internal/repl/await"));
  acorn = require("internal/deps/acorn/acorn/dist/acorn");
} catch {
  processTopLevelAwait = processTopLevelAwait || null;
}

const rawStdoutWrite = process.stdout.write.bind(process.stdout);
const rawStderrWrite = process.stderr.write.bind(process.stderr);

function send(frame) {
  rawStdoutWrite(FRAME_MARK + JSON.stringify(frame) + "\n");
}

function textOf(chunk, encoding) {
  if (typeof chunk === "string") return chunk;
  return Buffer.from(chunk).toString(typeof encoding === "string" ? encoding : "utf8");
}

// The cell's own output goes through frames so it stays in order with results and the end.
function streamWriter(name) {
  return function write(chunk, encoding, callback) {
    send({ t: "out", s: name, x: textOf(chunk, encoding) });
    const cb = typeof encoding === "function" ? encoding : callback;
    if (typeof cb === "function") process.nextTick(cb);
    return true;
  };
}
process.stdout.write = streamWriter("stdout");
process.stderr.write = streamWriter("stderr");
globalThis.console = new Console({ stdout: process.stdout, stderr: process.stderr, colorMode: false });

const cwd = process.cwd();
const cellFilename = path.join(cwd, "<cell>");
globalThis.require = createRequire(cellFilename);
globalThis.module = { exports: {}, require: globalThis.require, id: "<cell>" };
globalThis.exports = globalThis.module.exports;
globalThis.__filename = cellFilename;
globalThis.__dirname = cwd;

// `import x from "m"` and friends → dynamic imports (var, so a cell can be run again).
const IMPORT_RE =
  /^([ \t]*)import\s+(?:([\w$]+)\s*(?:,\s*)?)?(?:\*\s*as\s+([\w$]+)|\{([^}]*)\})?\s*from\s*(["'][^"'\n]+["'])[ \t]*;?/gm;
const BARE_IMPORT_RE = /^([ \t]*)import\s*(["'][^"'\n]+["'])[ \t]*;?/gm;

function rewriteImports(code) {
  let out = code.replace(IMPORT_RE, (all, indent, def, ns, named, source) => {
    if (!def && !ns && named === undefined) return all;
    const parts = [];
    if (ns) {
      parts.push(`var ${ns} = await import(${source});`);
      if (def) parts.push(`var ${def} = ${ns}.default;`);
    } else {
      const fields = [];
      if (def) fields.push(`default: ${def}`);
      for (const item of (named || "").split(",")) {
        const spec = item.trim();
        if (!spec || spec.startsWith("type ")) continue;
        const m = spec.match(/^([\w$]+|["'][^"']+["'])\s+as\s+([\w$]+)$/);
        fields.push(m ? `${m[1]}: ${m[2]}` : spec);
      }
      parts.push(`var { ${fields.join(", ")} } = await import(${source});`);
    }
    return indent + parts.join(" ");
  });
  out = out.replace(BARE_IMPORT_RE, (all, indent, source) => `${indent}await import(${source});`);
  return out;
}

// Top-level `let`/`const`/`class` become `var`, so a later cell may declare the same name again
// (re-running a cell is normal in a notebook; V8's REPL mode in DevTools allows it too).
function redeclarable(code) {
  if (!acorn) return code;
  let ast;
  try {
    ast = acorn.parse(code, {
      ecmaVersion: "latest",
      sourceType: "script",
      allowAwaitOutsideFunction: true,
      allowHashBang: true,
    });
  } catch {
    return code; // V8 reports the syntax error with its own message
  }
  const edits = [];
  for (const node of ast.body) {
    if (node.type === "VariableDeclaration" && node.kind !== "var") {
      edits.push([node.start, node.start + node.kind.length, "var"]);
    } else if (node.type === "ClassDeclaration" && node.id) {
      edits.push([node.start, node.start, `var ${node.id.name} = `]);
      edits.push([node.end, node.end, ";"]);
    }
  }
  let out = code;
  for (const [start, end, text] of edits.reverse()) {
    out = out.slice(0, start) + text + out.slice(end);
  }
  return out;
}

function transpileTypeScript(code) {
  const res = spawnSync(
    ESBUILD,
    [
      "--loader=ts",
      "--log-level=error",
      "--color=false",
      // Keep every import that is not marked `type`: a later cell may use what this one
      // imported, so unused-looking imports must not be dropped.
      '--tsconfig-raw={"compilerOptions":{"verbatimModuleSyntax":true}}',
    ],
    { input: code, encoding: "utf8", maxBuffer: 64 << 20 },
  );
  if (res.error && res.error.code === "ENOENT") {
    throw new Error(`TypeScript needs esbuild at ${ESBUILD}: run \`make setup\` on the server`);
  }
  if (res.error) throw res.error;
  if (res.status !== 0) {
    const err = new SyntaxError(String(res.stderr || "TypeScript transpilation failed").trim());
    err.stack = `SyntaxError: ${err.message}`;
    throw err;
  }
  return res.stdout;
}

function compile(source) {
  let code = source;
  let wrapped = false;
  if (/\bawait\b/.test(code) && processTopLevelAwait) {
    try {
      const rewritten = processTopLevelAwait(code);
      if (rewritten !== null) {
        code = rewritten;
        wrapped = true;
      }
    } catch {
      // Not parseable by the rewriter: compile as is and let V8 report the syntax error.
    }
  }
  const script = new vm.Script(code, {
    filename: cellFilename,
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  return { script, wrapped };
}

let interruptCurrent = null;

async function evaluate(source) {
  let code = LANGUAGE === "typescript" ? transpileTypeScript(source) : source;
  code = redeclarable(rewriteImports(code));
  const { script, wrapped } = compile(code);
  // breakOnSigint stops a synchronous loop on SIGINT; the await below is raced with it too.
  let value = script.runInThisContext({ breakOnSigint: true, displayErrors: false });
  if (wrapped) {
    const interrupted = new Promise((_, reject) => {
      interruptCurrent = () => reject(interruptError());
    });
    try {
      const box = await Promise.race([value, interrupted]);
      value = box && typeof box === "object" && "value" in box ? box.value : undefined;
    } finally {
      interruptCurrent = null;
    }
  }
  return value;
}

function interruptError() {
  const err = new Error("Script execution was interrupted by `SIGINT`");
  err.name = "KeyboardInterrupt";
  return err;
}

process.on("SIGINT", () => {
  if (interruptCurrent) interruptCurrent();
});

// Frames of this kernel and of node:vm say nothing about the user's code.
const KERNEL_FRAME = /^\s+at .*(node_kernel\.cjs|node:vm|sigintHandlersWrap|runInThisContext)/;

function userStack(stack) {
  return String(stack)
    .split("\n")
    .filter((line) => !KERNEL_FRAME.test(line))
    .join("\n");
}

function describeError(err) {
  if (err instanceof Error || (err && typeof err === "object" && "stack" in err)) {
    let name = err.name || "Error";
    let message = err.message === undefined ? "" : String(err.message);
    if (typeof err.code === "string" && err.code === "ERR_SCRIPT_EXECUTION_INTERRUPTED") {
      name = "KeyboardInterrupt";
    }
    return { name: String(name), value: message, traceback: userStack(err.stack || `${name}: ${message}`) };
  }
  const text = util.inspect(err);
  return { name: "Error", value: text, traceback: `Uncaught ${text}` };
}

function applyEnv(env, saved) {
  for (const [k, v] of Object.entries(env || {})) {
    if (saved && !(k in saved)) saved[k] = Object.prototype.hasOwnProperty.call(process.env, k) ? process.env[k] : null;
    process.env[k] = String(v);
  }
}

function restoreEnv(saved) {
  for (const [k, v] of Object.entries(saved)) {
    if (v === null) delete process.env[k];
    else process.env[k] = v;
  }
}

async function handle(request) {
  const id = request.id;
  if (request.setenv) {
    applyEnv(request.setenv, null);
    send({ t: "done", id });
    return;
  }
  const saved = {};
  applyEnv(request.env, saved);
  try {
    const value = await evaluate(String(request.code || ""));
    if (value !== undefined) {
      send({ t: "result", id, text: util.inspect(value, { colors: false, depth: 4 }) });
    }
  } catch (err) {
    send({ t: "error", id, ...describeError(err) });
  } finally {
    restoreEnv(saved);
    send({ t: "done", id });
  }
}

// A callback that throws after its cell ended must not kill the kernel (and its state).
process.on("uncaughtException", (err) => {
  send({ t: "out", s: "stderr", x: `Uncaught ${describeError(err).traceback}\n` });
});
process.on("unhandledRejection", (err) => {
  send({ t: "out", s: "stderr", x: `Unhandled rejection: ${describeError(err).traceback}\n` });
});

// Requests are handled one at a time, in order (the host also serialises runs).
let queue = Promise.resolve();
let pending = "";
// process.stdin (a non-blocking pipe handle), not an fs stream: a blocking read of fd 0 in
// libuv's thread pool would keep process.exit() from finishing while the host holds the pipe.
const input = process.stdin;
input.setEncoding("utf8");
input.on("data", (chunk) => {
  pending += chunk;
  let nl;
  while ((nl = pending.indexOf("\n")) >= 0) {
    const line = pending.slice(0, nl);
    pending = pending.slice(nl + 1);
    if (!line.trim()) continue;
    let request;
    try {
      request = JSON.parse(line);
    } catch {
      continue;
    }
    queue = queue.then(() => handle(request));
  }
});
input.on("end", () => queue.then(() => process.exit(0)));

send({ t: "ready" });
