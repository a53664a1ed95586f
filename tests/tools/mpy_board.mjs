// A clock's serial REPL for mpremote tests: real MicroPython (WebAssembly port) behind
// MicroPython's raw-REPL protocol, on this process's stdin/stdout (the test bridges them to
// a pty). Only the serial line is a stand-in; the code mpremote sends runs in MicroPython.
// Usage: node mpy_board.mjs [SRC:DEST]...   (files put on the board's filesystem first)
import { readFileSync } from "node:fs";
import { dirname } from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

let captured = [];
const mp = await loadMicroPython({
  heapsize: 1024 * 1024,
  linebuffer: false,
  stdout: (bytes) => { for (const b of bytes) captured.push(b); },
  stderr: (bytes) => { for (const b of bytes) captured.push(b); },
});

function mkdirs(path) {
  let cur = "";
  for (const part of path.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { mp.FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}
for (const spec of process.argv.slice(2)) {
  const at = spec.lastIndexOf(":");
  const dest = spec.slice(at + 1);
  mkdirs(dirname(dest));
  mp.FS.writeFile(dest, readFileSync(spec.slice(0, at)));
}

const send = (s) => process.stdout.write(typeof s === "string" ? Buffer.from(s, "latin1") : s);
const PROMPT = "raw REPL; CTRL-B to exit\r\n>";
let raw = false;
let code = [];
let paste = 0; // progress through the raw-paste request ctrl-E 'A' ctrl-A

// The WebAssembly port reports Emscripten's errno numbers ("OSError: 44"); the ESP32 port
// reports newlib's with their names ("OSError: [Errno 2] ENOENT"), which mpremote reads.
const ERRNO = { 44: "[Errno 2] ENOENT", 20: "[Errno 17] EEXIST", 31: "[Errno 21] EISDIR",
  54: "[Errno 20] ENOTDIR" };

function run() {
  const text = Buffer.from(code).toString("utf8").replace(/^[\r\n]+/, "");
  code = [];
  captured = [];
  let err = "";
  try {
    mp.runPython(text);
  } catch (e) {
    err = String(e.message || e);
    if (!err.startsWith("Traceback")) err = "Traceback (most recent call last):\r\n" + err;
    err = err.replace(/OSError: (\d+)/, (m, n) => (ERRNO[n] ? "OSError: " + ERRNO[n] : m));
  }
  send("OK");
  send(Buffer.from(captured));
  send("\x04" + err + "\x04>");
}

function feed(c) {
  if (!raw) {
    if (c === 0x01) { raw = true; code = []; send(PROMPT); }
    else if (c === 0x03) send("\r\n>>> ");
    return;
  }
  if (paste === 1) { paste = c === 0x41 ? 2 : 0; if (paste) return; }
  else if (paste === 2) { paste = 0; if (c === 0x01) { send("R\x00"); return; } }
  if (c === 0x05 && code.length === 0) { paste = 1; return; }
  if (c === 0x02) { raw = false; send("\r\n>>> "); return; }
  if (c === 0x03) { code = []; return; }
  if (c === 0x01) { code = []; send(PROMPT); return; }
  if (c === 0x04) {
    if (code.length === 0) send("OK\r\nMPY: soft reboot\r\n" + PROMPT);
    else run();
    return;
  }
  code.push(c);
}

process.stdin.on("data", (data) => { for (const c of data) feed(c); });
process.stdin.on("end", () => process.exit(0));
