// Run a script under the real MicroPython interpreter (WebAssembly port, Node), then call its
// tick() once per top-level runPython until it returns False, then its finish().
// Why: in this port gc.collect() only frees memory at the top level (between runPython calls;
// within one call it is deferred), so a long simulated night run in one call would never
// free anything. One simulated minute per call lets the collector work as it does on a board.
// Usage: node mpy_steps.mjs [--lib DIR]... [--mpy DIR]... SCRIPT.py
// --lib copies DIR/*.py flat into /lib; --mpy copies DIR/*.mpy flat into /lib (mpy-cross
// output, as deployed to the board). Exit code 1 with the traceback when the script raises.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

const args = process.argv.slice(2);
const dirs = [];
let script = null;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--lib") dirs.push([args[++i], ".py"]);
  else if (args[i] === "--mpy") dirs.push([args[++i], ".mpy"]);
  else script = args[i];
}
const mp = await loadMicroPython({
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});
try { mp.FS.mkdir("/lib"); } catch (e) { /* exists */ }
for (const [dir, ext] of dirs) {
  for (const name of readdirSync(dir)) {
    if (name.endsWith(ext) && !name.startsWith("__init__")) {
      mp.FS.writeFile("/lib/" + name, readFileSync(join(dir, name)));
    }
  }
}
try {
  mp.runPython(readFileSync(script, "utf8"));
  for (;;) {
    mp.runPython("_go = tick()");
    if (!mp.globals.get("_go")) break;
  }
  mp.runPython("finish()");
} catch (err) {
  process.stderr.write(String(err.message || err) + "\n");
  process.exit(1);
}
