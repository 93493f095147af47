// Runs the firmware's heap scenario on a 32-bit MicroPython: the official WebAssembly port
// (pinned in package.json), whose objects have the sizes they have on an ESP32-S3 or RP2040
// (4-byte words, 16-byte GC blocks). The x86-64 Unix port used everywhere else needs about 1.6
// times the heap for the same objects, so its `-X heapsize` is not the chip's figure.
//
// This port never collects garbage in the middle of Python code (it cannot see the roots held
// in WebAssembly locals): when an allocation fails it adds a heap area instead, and it collects
// when control returns to JavaScript. So the scenario is driven one tick of the virtual clock
// per call, with a collection after each, and "fits in N bytes" means the heap never had to
// grow past the N it started with. That is stricter than a chip, which collects whenever an
// allocation fails, even halfway through a tick.
//
// usage: node heap32.mjs --heap 96k --fw DIR --harness FILE --script FILE
// Prints the harness's own lines, then one line "@@HEAP32 {...}" with the figures.
import fs from "node:fs";
import path from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

function args() {
  const a = process.argv.slice(2);
  const out = {};
  for (let i = 0; i < a.length; i += 2) out[a[i].replace(/^--/, "")] = a[i + 1];
  for (const k of ["heap", "fw", "harness", "script"]) {
    if (!out[k]) {
      console.error(`heap32: --${k} is required`);
      process.exit(2);
    }
  }
  return out;
}

function bytes(s) {
  const m = /^(\d+)([km]?)$/i.exec(s);
  if (!m) throw new Error(`bad size ${s}`);
  return Number(m[1]) * { "": 1, k: 1024, m: 1048576 }[m[2].toLowerCase()];
}

function copyTree(mp, src, dst) {
  mp.FS.mkdirTree(dst);
  for (const e of fs.readdirSync(src, { withFileTypes: true })) {
    const s = path.join(src, e.name);
    const d = dst + "/" + e.name;
    if (e.isDirectory()) copyTree(mp, s, d);
    else if (/\.(mpy|py)$/.test(e.name)) mp.FS.writeFile(d, fs.readFileSync(s));
  }
}

async function interpreter(heap, quiet) {
  const print = quiet ? () => {} : (line) => process.stdout.write(line + "\n");
  const mp = await loadMicroPython({
    heapsize: heap,
    linebuffer: true,
    stdout: print,
    stderr: (line) => process.stderr.write(line + "\n"),
  });
  copyTree(mp, opt.fw, "/fw");
  mp.FS.writeFile("/fw/simharness.py", fs.readFileSync(opt.harness));
  mp.FS.mkdirTree("/tmp");
  mp.runPython("import sys\nsys.path[:0] = ['/fw']");
  return mp;
}

// The modules the firmware's boot imports, in a throw-away interpreter with room to spare.
// On a chip the GC runs between (and during) these imports; here it only runs between calls
// from JavaScript, so the measured run imports them one call each before it boots.
async function bootModules(script) {
  const mp = await interpreter(64 * 1048576, true);
  mp.globals.set("SCRIPT", JSON.stringify(script));
  mp.runPython(`
import json, simharness
_before = set(sys.modules)
_run = simharness.Run(json.loads(SCRIPT))
next(_run.steps())
_mods = json.dumps(sorted((m for m in sys.modules if m not in _before), key=lambda m: (m.count('.'), m), reverse=True))
`);
  return JSON.parse(mp.globals.get("_mods"));
}

const opt = args();
const heap = bytes(opt.heap);
const script = JSON.parse(fs.readFileSync(opt.script, "utf8"));
script.flash_path = "/tmp/flash";
const preimport = opt.preimport !== "no";
const mods = preimport ? await bootModules(script) : [];
const mp = await interpreter(heap, false);

// Nothing is imported yet: the firmware's modules load inside the measured run, as on a chip.
mp.runPython(`
import gc, json
def _total():
    return gc.mem_free() + gc.mem_alloc()
def _alloc():
    return gc.mem_alloc()
`);
const total = mp.globals.get("_total");
const collect = () => mp.runPython("gc.collect()"); // pending; runs as the call returns
const alloc = mp.globals.get("_alloc");
collect();
const start = total();
const base = alloc();

mp.runPython("import simharness");
collect();
const harness = alloc();
mp.runPython("def _imp(m):\n    __import__(m)\n    gc.collect()");
const imp = mp.globals.get("_imp");
for (const m of mods) imp(m);
mp.globals.set("SCRIPT", JSON.stringify(script));
mp.runPython(`
_run = simharness.Run(json.loads(SCRIPT))
del SCRIPT
_steps = _run.steps()
_peak = [0, 0]
def _step():
    try:
        next(_steps)
    except StopIteration:
        return False
    a = gc.mem_alloc()
    if a > _peak[0]:
        _peak[0] = a
        _peak[1] = _run.t
    gc.collect()
    return True
def _peak_bytes():
    return _peak[0]
def _peak_ms():
    return _peak[1]
`);
const step = mp.globals.get("_step");

let steps = 0;
let maxTotal = start;
let maxLive = 0;
let liveBoot = null;
let firstGrowth = null;
for (;;) {
  const more = step();
  steps += 1;
  const t = total();
  if (t > maxTotal && firstGrowth === null) firstGrowth = steps;
  maxTotal = Math.max(maxTotal, t);
  // mem_alloc() right after a collected step is the live heap: sample it every few ticks.
  if (steps === 1 || steps % 25 === 0 || !more) {
    const live = alloc();
    if (steps === 1) liveBoot = live;
    maxLive = Math.max(maxLive, live);
  }
  if (!more) break;
}
mp.runPython("_run.report()");
const out = {
  heap_bytes: heap,
  fits: maxTotal === start,
  grew_by_bytes: maxTotal - start,
  first_growth_at_step: firstGrowth,
  steps,
  interpreter_bytes: base,
  sim_and_harness_bytes: harness - base,
  boot_modules: mods.length,
  live_after_boot_bytes: liveBoot,
  max_live_bytes: maxLive,
  end_live_bytes: alloc(),
  max_uncollected_bytes: mp.globals.get("_peak_bytes")(),
  max_uncollected_at_ms: mp.globals.get("_peak_ms")(),
};
process.stdout.write("@@HEAP32 " + JSON.stringify(out) + "\n");
