"""PyTorch eager from Python — Hugging Face transformers' GPT2LMHeadModel
with its KV cache — on the same synthetic checkpoint, libtorch version and
threads as the torch plugin: the reference the plugin must beat by 1.3x
(issue 4). Prefill keeps only the last position's logits
(`logits_to_keep=1`, what `generate()` does), decode feeds one token per
step with `past_key_values`, autograd off (`torch.no_grad()`, as the plugin).

    python3 torch_python.py MODEL_DIR THREADS

Prints TTFT of a 128-token prompt and TPOT of 64 greedy steps at batch 1
and batch 8 (medians). Run through scripts/bench/torch-python.
"""
import os, sys, time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import torch
from transformers import GPT2LMHeadModel

path, threads = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(threads)
model = GPT2LMHeadModel.from_pretrained(path, torch_dtype=torch.float32).eval()
V = model.config.vocab_size


def generate(b, prompt=128, steps=64):
    ids = torch.randint(0, V, (b, prompt), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
        ttft = time.perf_counter() - t0
        past = out.past_key_values
        t1 = time.perf_counter()
        for _ in range(steps - 1):
            out = model(input_ids=tok, past_key_values=past, use_cache=True)
            past = out.past_key_values
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
        tpot = (time.perf_counter() - t1) / (steps - 1)
    return ttft, tpot


print(f"torch {torch.__version__} eager + transformers from Python, {path}, {torch.get_num_threads()} threads")
for b, reps in [(1, 10), (8, 5)]:
    generate(b)  # warm-up
    runs = [generate(b) for _ in range(reps)]
    ttft = np.median([r[0] for r in runs]) * 1e3
    tpot = np.median([r[1] for r in runs]) * 1e3
    print(f"batch {b}: TTFT {ttft:.1f} ms, TPOT {tpot:.2f} ms = {1000 * b / tpot:.1f} tok/s (median of {reps})")
