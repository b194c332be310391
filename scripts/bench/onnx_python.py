"""ONNX Runtime driven from Python on the graph the onnx plugin builds: the
reference the plugin must not fall below (issue: "no interpreter in its
loop"). Same session options as the plugin's defaults: intra-op threads,
1 inter-op thread, sequential execution, ORT_ENABLE_ALL.

    python3 onnx_python.py MODEL.onnx THREADS [--profile]

Prints TTFT of a 128-token prompt and TPOT of 64 greedy steps at batch 1
and batch 8 (medians of repeats), the figures of matrices/gpt2-targets.yaml.
With --profile, also ORT's per-operator time split for one decode and one
prefill. Run through scripts/bench/onnx-python, which builds the model.
"""
import collections, json, os, sys, time
import numpy as np
import onnxruntime as ort

path, threads = sys.argv[1], int(sys.argv[2])
profile = "--profile" in sys.argv[3:]


def session(prof=False):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.enable_profiling = prof
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


s = session()
past_inputs = [i for i in s.get_inputs() if i.name.startswith("past_key_values.")]
L = len(past_inputs) // 2
H, D = past_inputs[0].shape[1], past_inputs[0].shape[3]
V = s.get_outputs()[0].shape[2]
has_from = any(i.name == "logits_from" for i in s.get_inputs() + s.get_overridable_initializers())


def feed(ids, past, total):
    b, n = ids.shape
    f = {
        "input_ids": ids,
        "attention_mask": np.ones((b, total), np.int64),
        "position_ids": np.tile(np.arange(total - n, total, dtype=np.int64), (b, 1)),
    }
    for l in range(L):
        f[f"past_key_values.{l}.key"] = past[2 * l]
        f[f"past_key_values.{l}.value"] = past[2 * l + 1]
    if has_from:
        f["logits_from"] = np.array([-1], np.int64)
    return f


def generate(sess, b, prompt=128, steps=64):
    ids = np.random.default_rng(0).integers(0, V, (b, prompt), dtype=np.int64)
    empty = [np.zeros((b, H, 0, D), np.float32)] * (2 * L)
    t0 = time.perf_counter()
    out = sess.run(None, feed(ids, empty, prompt))
    ttft = time.perf_counter() - t0
    total = prompt
    t1 = time.perf_counter()
    for _ in range(steps - 1):
        total += 1
        tok = out[0][:, -1].argmax(-1).reshape(b, 1).astype(np.int64)
        out = sess.run(None, feed(tok, out[1:], total))
    tpot = (time.perf_counter() - t1) / (steps - 1)
    return ttft, tpot


print(f"onnxruntime {ort.__version__} from Python, {path}, {threads} threads")
for b, reps in [(1, 10), (8, 5)]:
    generate(s, b)  # warm-up
    runs = [generate(s, b) for _ in range(reps)]
    ttft = np.median([r[0] for r in runs]) * 1e3
    tpot = np.median([r[1] for r in runs]) * 1e3
    print(f"batch {b}: TTFT {ttft:.1f} ms, TPOT {tpot:.2f} ms = {1000 * b / tpot:.1f} tok/s (median of {reps})")

if profile:
    for what in ["decode", "prefill"]:
        p = session(prof=True)
        if what == "decode":
            past = [np.random.rand(1, H, 160, D).astype(np.float32) for _ in range(2 * L)]
            for _ in range(20):
                p.run(None, feed(np.zeros((1, 1), np.int64), past, 161))
            n = 20
        else:
            for _ in range(5):
                p.run(None, feed(np.zeros((1, 128), np.int64), [np.zeros((1, H, 0, D), np.float32)] * (2 * L), 128))
            n = 5
        trace = p.end_profiling()
        agg = collections.defaultdict(float)
        for e in json.load(open(trace)):
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                agg[e["args"].get("op_name")] += e["dur"]
        os.remove(trace)
        tot = sum(agg.values())
        print(f"{what}: {tot / n / 1e3:.2f} ms of kernels per run")
        for op, d in sorted(agg.items(), key=lambda x: -x[1])[:8]:
            print(f"  {op:20s} {d / n / 1e3:7.2f} ms {100 * d / tot:5.1f}%")
