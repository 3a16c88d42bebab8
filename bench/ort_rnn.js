#!/usr/bin/env node
// bench/ort_rnn.js: the ONNX Runtime side of bench/compare.
//
// One ONNX LSTM / GRU node (built by bench/ort_model.py: fp32, seeded random weights as
// constant initializers, GRU linear_before_reset = 1) in an InferenceSession of
// onnxruntime-node (bench/ort/package.json pins it; install with `npm ci --prefix bench/ort`),
// CPU execution provider, intraOpNumThreads = --threads, interOpNumThreads = 1, graph
// optimizations "all". Timed the way `rnnd bench` times rnnd; prints the same JSON line plus
// "impl":"ort".
//
//   stream: B sessions advance one step per run() (X of shape [1, B, I]); the Y_h (and Y_c)
//           it returns are fed back as the next run()'s initial_h (and initial_c): the state
//           a server keeps per session.
//   seq:    B sequences of T steps in one run(), from the zero state; fetches Y.
//
// run() is awaited as the binding's users do (its promise resolves after the native call).
// --serve reads one set of options per line on stdin and answers each with one JSON line (a
// fresh session each time; models are built once per shape), so bench/compare pays for
// node's start-up and the model's construction once.
// --check: one seq run of 3 steps against bench/ort_model.py --reference (numpy, the ONNX
// operator's definition), and 3 stream steps with the state fed back against that seq run;
// exits 1 if they differ by more than 1e-4 or 1e-5.
'use strict';

const path = require('path');
const { spawnSync } = require('child_process');

const USAGE = 'usage: ort_rnn.js [--cell lstm|gru] [--hidden H] [--input I] [--batch B] ' +
    '[--mode stream|seq] [--steps T] [--threads N] [--seconds S] [--weights f32] [--check] ' +
    '[--serve]';

class OptionError extends Error {}

function fail(msg) {
    process.stderr.write('ort_rnn.js: ' + msg + '\n');
    process.exit(2);
}

// options -> o; throws OptionError (the caller decides whether that ends the process)
function parse(argv) {
    const bad = (msg) => { throw new OptionError(msg); };
    const o = { cell: 'lstm', hidden: 512, input: 0, batch: 1, mode: 'stream', steps: 100,
                threads: 1, seconds: 2.0, weights: 'f32', check: false, serve: false };
    const ints = { hidden: [1, 16384], input: [1, 16384], batch: [1, 4096],
                   steps: [1, 100000], threads: [1, 1024] };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (a === '--check' || a === '--serve') { o[a.slice(2)] = true; continue; }
        if (a === '--help' || a === '-h') { console.log(USAGE); process.exit(0); }
        const k = a.startsWith('--') ? a.slice(2) : null;
        if (!k || !(k in o) || typeof o[k] === 'boolean' || i + 1 >= argv.length) {
            bad('bad option ' + a);
        }
        const v = argv[++i];
        if (k in ints) {
            const n = Number(v);
            if (!Number.isInteger(n) || n < ints[k][0] || n > ints[k][1]) {
                bad('--' + k + ' must be ' + ints[k][0] + '..' + ints[k][1]);
            }
            o[k] = n;
        } else if (k === 'seconds') {
            o.seconds = Number(v);
            if (!(o.seconds > 0 && o.seconds < 3600)) bad('--seconds must be in (0, 3600)');
        } else {
            o[k] = v;
        }
    }
    if (!['lstm', 'gru'].includes(o.cell)) bad('--cell must be lstm or gru');
    if (!['stream', 'seq'].includes(o.mode)) bad('--mode must be stream or seq');
    if (o.weights !== 'f32') bad('--weights must be f32');
    o.input = o.input || o.hidden;
    return o;
}

function loadOrt() {
    const dir = path.join(__dirname, 'ort', 'node_modules', 'onnxruntime-node');
    try {
        return require(dir);
    } catch (e) {
        fail('cannot load onnxruntime-node (run `npm ci --prefix bench/ort`): ' +
             e.message.split('\n')[0]);
    }
}

// the model's bytes from bench/ort_model.py ($PYTHON3 or /usr/bin/python3, with onnx);
// throws if it fails
const models = new Map();
function buildModel(o) {
    const key = [o.cell, o.hidden, o.input].join(' ');
    if (models.has(key)) return models.get(key);
    const py = process.env.PYTHON3 || '/usr/bin/python3';
    const r = spawnSync(py, [path.join(__dirname, 'ort_model.py'), '--cell', o.cell,
                             '--hidden', String(o.hidden), '--input', String(o.input)],
                        { maxBuffer: 1 << 30 });
    if (r.error || r.status !== 0) {
        const why = r.error ? r.error.message : r.stderr.toString().trim().split('\n').pop();
        throw new Error('bench/ort_model.py failed: ' + why);
    }
    models.clear();                             // one shape at a time: H=1024 LSTM is 32 MB
    models.set(key, r.stdout);
    return r.stdout;
}

// the same input values as `rnnd bench` and bench/torch_rnn.py:
// ((i * 2654435761) mod 2001) / 1000 - 1, the product taken mod 2001 to stay exact
function inputs(n) {
    const x = new Float32Array(n);
    const m = 2654435761 % 2001;
    for (let i = 0; i < n; i++) x[i] = ((i % 2001) * m % 2001) / 1000.0 - 1.0;
    return x;
}

function zeros(ort, B, H) {
    return new ort.Tensor('float32', new Float32Array(B * H), [1, B, H]);
}

async function timeIt(ort, sess, o) {
    const H = o.hidden, I = o.input, B = o.batch;
    const lstm = o.cell === 'lstm';
    const T = o.mode === 'seq' ? o.steps : 1;
    const x = new ort.Tensor('float32', inputs(T * B * I), [T, B, I]);
    const feeds = { X: x, initial_h: zeros(ort, B, H) };
    if (lstm) feeds.initial_c = zeros(ort, B, H);
    const fetches = o.mode === 'seq' ? ['Y'] : lstm ? ['Y_h', 'Y_c'] : ['Y_h'];
    let calls = 0, elapsed = 0;
    for (const phase of [0, 1]) {               // 0: warm-up (a fifth of the time)
        const limit = phase ? o.seconds : o.seconds / 5;
        calls = 0;
        const t0 = process.hrtime.bigint();
        for (;;) {
            const r = await sess.run(feeds, fetches);
            if (o.mode === 'stream') {          // carry the state to the next step
                feeds.initial_h = r.Y_h;
                if (lstm) feeds.initial_c = r.Y_c;
            }
            calls++;
            elapsed = Number(process.hrtime.bigint() - t0) * 1e-9;
            if (elapsed >= limit) break;
        }
    }
    const G = lstm ? 4 : 3;
    const steps = calls * B * T;
    const flops = 2.0 * G * H * (I + H) * steps;
    return { impl: 'ort', cell: o.cell, mode: o.mode, H, I, B, T, threads: o.threads,
             weights: o.weights, isa: 'mlas-ort-' + ort.env.versions.node,
             steps_per_s: Math.round(steps / elapsed * 10) / 10,
             us_per_step: Math.round(elapsed / calls * 1e9) / 1e3,
             gflops: Math.round(flops / elapsed * 1e-7) / 100 };
}

// numpy's Y for T steps of the same inputs from the zero state (bench/ort_model.py)
function referenceY(o, T) {
    const py = process.env.PYTHON3 || '/usr/bin/python3';
    const r = spawnSync(py, [path.join(__dirname, 'ort_model.py'), '--cell', o.cell,
                             '--hidden', String(o.hidden), '--input', String(o.input),
                             '--reference', '--batch', String(o.batch), '--steps', String(T)],
                        { maxBuffer: 1 << 30 });
    if (r.error || r.status !== 0) {
        const why = r.error ? r.error.message : r.stderr.toString().trim().split('\n').pop();
        throw new Error('bench/ort_model.py --reference failed: ' + why);
    }
    return JSON.parse(r.stdout.toString());
}

// seq against numpy; stream with the state fed back against seq over the same inputs
async function check(ort, sess, o) {
    const H = o.hidden, I = o.input, B = o.batch, T = 3;
    const lstm = o.cell === 'lstm';
    const xs = inputs(T * B * I);
    const seq = await sess.run(Object.assign(
        { X: new ort.Tensor('float32', xs, [T, B, I]), initial_h: zeros(ort, B, H) },
        lstm ? { initial_c: zeros(ort, B, H) } : {}));
    const feeds = { initial_h: zeros(ort, B, H) };
    if (lstm) feeds.initial_c = zeros(ort, B, H);
    const ref = referenceY(o, T);
    let refErr = 0;
    if (ref.length !== seq.Y.data.length) throw new Error('reference has the wrong size');
    for (let i = 0; i < ref.length; i++) {
        refErr = Math.max(refErr, Math.abs(seq.Y.data[i] - ref[i]));
    }
    let err = 0, mag = 0;
    for (let t = 0; t < T; t++) {
        feeds.X = new ort.Tensor('float32', xs.slice(t * B * I, (t + 1) * B * I), [1, B, I]);
        const r = await sess.run(feeds);
        feeds.initial_h = r.Y_h;
        if (lstm) feeds.initial_c = r.Y_c;
        const want = seq.Y.data.subarray(t * B * H, (t + 1) * B * H);
        for (let i = 0; i < B * H; i++) {
            err = Math.max(err, Math.abs(r.Y_h.data[i] - want[i]));
            mag = Math.max(mag, Math.abs(want[i]));
        }
    }
    const ok = refErr <= 1e-4 && err <= 1e-5 && mag > 1e-3;  // all zeros: nothing ran
    return { impl: 'ort', check: ok ? 'ok' : 'FAILED', cell: o.cell, H, I, B, T,
             max_abs_err_reference: refErr, max_abs_err_stream: err, max_abs_out: mag };
}

async function runOne(ort, o) {
    const sess = await ort.InferenceSession.create(buildModel(o), {
        executionProviders: ['cpu'], intraOpNumThreads: o.threads, interOpNumThreads: 1,
        graphOptimizationLevel: 'all', executionMode: 'sequential' });
    try {
        return o.check ? await check(ort, sess, o) : await timeIt(ort, sess, o);
    } finally {
        await sess.release();
    }
}

async function serve(ort) {
    const rl = require('readline').createInterface({ input: process.stdin });
    for await (const line of rl) {
        if (!line.trim()) continue;
        let res;
        try {                                   // keep serving: one bad point is not fatal
            res = await runOne(ort, parse(line.trim().split(/\s+/)));
        } catch (e) {
            res = { impl: 'ort', error: (e instanceof OptionError ? 'bad options: ' : '') +
                    String(e && e.message || e).split('\n')[0] };
        }
        console.log(JSON.stringify(res));
    }
    return 0;
}

async function main() {
    let o;
    try {
        o = parse(process.argv.slice(2));
    } catch (e) {
        fail(e.message + '\n' + USAGE);
    }
    const ort = loadOrt();
    if (o.serve) return serve(ort);
    const res = await runOne(ort, o);
    console.log(JSON.stringify(res));
    return res.check === 'FAILED' ? 1 : 0;
}

main().then((rc) => { process.exitCode = rc; },
            (e) => fail(String(e && e.message || e).split('\n')[0]));
