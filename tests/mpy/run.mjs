// Run a script under the real MicroPython interpreter (WebAssembly port, Node).
// Usage: node run.mjs [--heap BYTES] [--lib DIR]... [--mpy DIR]... [--put SRC:DEST]... [--steps]
//                     SCRIPT.py
// Each --lib DIR (shared/, device/) becomes the package /lib/nightlink/<name of DIR>, as the
// clock's image lays it out, with a minimal /lib/nightlink/__init__.py above them;
// --mpy DIR copies a tree of mpy-cross output (nightlink/...) into /lib as it is;
// --put copies one more file (golden vectors, fixtures, doubles) to DEST in the virtual FS.
// --steps: after the script, call its tick() once per top-level runPython until it returns
// False, then its finish(). In this port the garbage collector frees memory only between
// top-level calls, so long runs (a night, a week of outbox) go in steps as on a board.
// Exit code 0 when the script ran, 1 when it raised (traceback on stderr).
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, dirname, basename, resolve } from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const args = process.argv.slice(2);
let heap = 256 * 1024;
const libs = [];
const mpys = [];
const puts = [];
let script = null;
let steps = false;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--heap") heap = parseInt(args[++i], 10);
  else if (args[i] === "--lib") libs.push(args[++i]);
  else if (args[i] === "--mpy") mpys.push(args[++i]);
  else if (args[i] === "--put") puts.push(args[++i]);
  else if (args[i] === "--steps") steps = true;
  else script = args[i];
}
if (!script) {
  process.stderr.write("usage: node run.mjs [--heap N] [--lib DIR]... [--mpy DIR]... " +
                       "[--put SRC:DEST]... [--steps] SCRIPT\n");
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

function copyTree(src, dest) {
  mkdirs(dest);
  for (const name of readdirSync(src)) {
    const path = join(src, name);
    if (statSync(path).isDirectory()) {
      if (name !== "__pycache__") copyTree(path, dest + "/" + name);
    } else if (name.endsWith(".mpy") || name.endsWith(".py")) {
      mp.FS.writeFile(dest + "/" + name, readFileSync(path));
    }
  }
}

mkdirs("/lib");
if (libs.length) {
  mkdirs("/lib/nightlink");
  mp.FS.writeFile("/lib/nightlink/__init__.py", "# Nightlink on the clock.\n");
}
for (const dir of libs) {
  const pkg = "/lib/nightlink/" + basename(resolve(dir));
  mkdirs(pkg);
  for (const name of readdirSync(dir)) {
    if (name.endsWith(".py")) mp.FS.writeFile(pkg + "/" + name, readFileSync(join(dir, name)));
  }
}
for (const dir of mpys) copyTree(dir, "/lib");
for (const spec of puts) {
  const at = spec.lastIndexOf(":");
  const src = spec.slice(0, at);
  const dest = spec.slice(at + 1);
  mkdirs(dirname(dest));
  mp.FS.writeFile(dest, readFileSync(src));
}

try {
  mp.runPython(readFileSync(script, "utf8"));
  if (steps) {
    for (;;) {
      mp.runPython("_go = tick()");
      if (!mp.globals.get("_go")) break;
    }
    mp.runPython("finish()");
  }
} catch (err) {
  process.stderr.write(String(err.message || err) + "\n");
  process.exit(1);
}
