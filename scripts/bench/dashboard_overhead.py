"""The dashboard overhead benchmark; run through scripts/bench/dashboard-overhead."""

import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

MATRIX = """name: dashboard-overhead
models:
  - {name: gpt2, weights: synthetic, config: gpt2}
engines:
  - {name: candle, options: {threads: 2}}
scenarios:
  - {name: decode, kind: latency, warmup: 1, iterations: 5, input_tokens: 32, output_tokens: 64}
  - {name: batch8, kind: latency, warmup: 1, iterations: 3, input_tokens: 32, output_tokens: 64, batch_size: 8}
  - {name: closed, kind: concurrency, warmup: 1, iterations: 1, input_tokens: 128, output_tokens: 32, concurrency: 4, requests: 16}
"""
MODES = ["off", "idle", "client"]
OUT = "target/bench-dashboard"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class Client:
    """What a browser on the live page does: reads the event stream, and
    fetches the three rolling charts every two seconds."""

    def __init__(self, url):
        self.url = url
        self.stop = threading.Event()
        self.events = 0
        self.charts = 0
        self.threads = [
            threading.Thread(target=self.stream, daemon=True),
            threading.Thread(target=self.poll, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def stream(self):
        try:
            with urllib.request.urlopen(self.url + "/live/events", timeout=600) as r:
                for line in r:
                    if line.startswith(b"event:"):
                        self.events += 1
                    if self.stop.is_set():
                        return
        except OSError:
            pass

    def poll(self):
        while not self.stop.wait(2.0):
            for what in ("throughput", "latency", "memory"):
                try:
                    with urllib.request.urlopen(
                        f"{self.url}/live/chart.svg?what={what}", timeout=10
                    ) as r:
                        r.read()
                        self.charts += 1
                except OSError:
                    pass  # 404 between cells

    def close(self):
        self.stop.set()


def run(mode, round_no):
    out = f"{OUT}/r{round_no}-{mode}"
    subprocess.run(["rm", "-rf", out], check=True)
    cmd = ["./target/release/engine-matrix", "run", f"{OUT}/m.yaml", "--out", out]
    if mode != "off":
        cmd += ["--dashboard", "127.0.0.1:0"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = None
    log = []
    for line in p.stderr:
        log.append(line)
        if line.startswith("dashboard on ") and mode == "client":
            client = Client(line.split(" ", 2)[2].strip())
            break
    rest = p.stderr.read()
    log.append(rest)
    code = p.wait()
    if client:
        client.close()
    if code != 0:
        sys.exit(f"{mode} run failed ({code}):\n{''.join(log)}")
    with open(f"{out}/summary.json") as f:
        s = json.load(f)
    figures = {}
    for c in s["cells"]:
        m = c["metrics"]
        name = c["cell"]["scenario"]
        figures[name] = {
            "tok_s": m["output_throughput"],
            "ttft_p50_ms": (m.get("ttft_ms") or {}).get("p50"),
            "itl_p50_ms": (m.get("itl_ms") or {}).get("p50"),
        }
    seen = {"events": client.events, "charts": client.charts} if client else None
    return figures, seen


def main():
    rounds = int(sys.argv[1])
    os.makedirs(OUT, exist_ok=True)
    with open(f"{OUT}/m.yaml", "w") as f:
        f.write(MATRIX)
    results = []
    for r in range(rounds):
        # The order rotates, so no mode always runs first (warm caches,
        # a neighbour's load that comes and goes).
        order = MODES[r % 3:] + MODES[: r % 3]
        got = {}
        for mode in order:
            got[mode] = run(mode, r)
            print(f"round {r + 1}/{rounds} {mode}: "
                  + ", ".join(f"{k} {v['tok_s']:.1f} tok/s" for k, v in got[mode][0].items()),
                  file=sys.stderr)
        results.append(got)
    table = []
    for mode in ("idle", "client"):
        for scenario in results[0]["off"][0]:
            for metric in ("tok_s", "ttft_p50_ms", "itl_p50_ms"):
                ratios = []
                for got in results:
                    a = got["off"][0][scenario][metric]
                    b = got[mode][0][scenario][metric]
                    if a and b:
                        ratios.append(b / a)
                if ratios:
                    table.append({
                        "mode": mode, "scenario": scenario, "metric": metric,
                        "median_ratio": statistics.median(ratios),
                        "min": min(ratios), "max": max(ratios), "rounds": len(ratios),
                    })
    clients = [g["client"][1] for g in results]
    report = {
        "cpu": cpu_model(), "rounds": rounds,
        "command": f"scripts/bench/dashboard-overhead {rounds}",
        "client_saw": clients, "ratios": table, "runs": results,
    }
    with open("target/bench-dashboard.json", "w") as f:
        json.dump(report, f, indent=1)
    print(f"CPU: {report['cpu']}; {rounds} rounds; ratio = with / without the dashboard, median [min, max]")
    print("| dashboard | scenario | metric | ratio |")
    print("|---|---|---|---:|")
    for t in table:
        print(f"| {t['mode']} | {t['scenario']} | {t['metric']} | "
              f"{t['median_ratio']:.3f} [{t['min']:.3f}, {t['max']:.3f}] |")
    print(f"client events and charts fetched per round: {clients}")


main()
