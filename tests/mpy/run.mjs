// Run a script under the real MicroPython interpreter (WebAssembly port, Node).
// Usage: node run.mjs [--heap BYTES] [--lib DIR]... [--put SRC:DEST]... SCRIPT.py
// Every .py file of each --lib DIR is copied flat into /lib, as on the board;
// --put copies one more file (golden vectors, fixtures) to DEST in the virtual FS.
// Exit code 0 when the script ran, 1 when it raised (traceback on stderr).
import { readFileSync, readdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const args = process.argv.slice(2);
let heap = 256 * 1024;
const libs = [];
const puts = [];
let script = null;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--heap") heap = parseInt(args[++i], 10);
  else if (args[i] === "--lib") libs.push(args[++i]);
  else if (args[i] === "--put") puts.push(args[++i]);
  else script = args[i];
}
if (!script) {
  process.stderr.write("usage: node run.mjs [--heap N] [--lib DIR]... [--put SRC:DEST]... SCRIPT\n");
  process.exit(2);
}

const mp = await loadMicroPython({
  heapsize: heap,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});

function mkdirs(path) {
  let cur = "";
  for (const part of path.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { mp.FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}

mkdirs("/lib");
for (const dir of libs) {
  for (const name of readdirSync(dir)) {
    if (name.endsWith(".py") && name !== "__init__.py") {
      mp.FS.writeFile("/lib/" + name, readFileSync(join(dir, name)));
    }
  }
}
for (const spec of puts) {
  const at = spec.lastIndexOf(":");
  const src = spec.slice(0, at);
  const dest = spec.slice(at + 1);
  mkdirs(dirname(dest));
  mp.FS.writeFile(dest, readFileSync(src));
}

try {
  mp.runPython(readFileSync(script, "utf8"));
} catch (err) {
  process.stderr.write(String(err.message || err) + "\n");
  process.exit(1);
}
