#!/usr/bin/env python3
"""Measures events per second through the two-handler chain of the embedded
pipeline (`tests/fixtures/chain`: handler `first` on `in` emits one event to
`mid`, handler `second` on `mid` emits one event to `out`), durable
(synchronous=full unless --synchronous normal).

It preloads N events into `in` with the handlers off, then starts the host
with both handlers and times from "admin API up" to "every `out` event
committed". Run from the repository root after:

    cargo build --release -p sluice-cli
    cargo build --release --target wasm32-wasip2 -p chain

    python3 scripts/measure-chain.py --events 20000 --keys 1000
"""
import argparse, json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)

def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)

def wait_up(base, proc):
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit("host exited early")
        try:
            get(base + "/healthz"); return
        except Exception:
            time.sleep(0.05)
    sys.exit("host did not start")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--synchronous", default="full", choices=["full", "normal"])
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--binary", default="target/release/sluice")
    ap.add_argument("--component", default="target/wasm32-wasip2/release/chain.wasm")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-measure-")
    port = free_port(); base = f"http://127.0.0.1:{port}"
    common = f"""
[store]
url = "sqlite://{work}/sluice.db"
synchronous = "{a.synchronous}"
[admin]
addr = "127.0.0.1:{port}"
max_body_bytes = 67108864
[runtime]
cache_dir = "{work}/cache"
max_concurrent_instances = 256
"""
    handlers = f"""
[[handlers]]
name = "first"
component = "{os.path.abspath(a.component)}"
topics = ["in"]
types = ["step.a"]
concurrency = {a.concurrency}
[[handlers]]
name = "second"
component = "{os.path.abspath(a.component)}"
topics = ["mid"]
types = ["step.b"]
concurrency = {a.concurrency}
"""
    open(f"{work}/load.toml", "w").write(common)
    open(f"{work}/run.toml", "w").write(common + handlers)
    env = dict(os.environ, SLUICE_LOG="warn")
    # 1. Preload with no handlers running.
    p = subprocess.Popen([a.binary, "run", "--config", f"{work}/load.toml"], env=env)
    wait_up(base, p)
    batch = []
    for i in range(a.events):
        batch.append({"id": f"in-{i}", "type": "step.a", "key": f"k{i % a.keys}", "data": {"n": i // a.keys}})
        if len(batch) == 2000:
            post(base + "/v1/topics/in/events", batch); batch = []
    if batch:
        post(base + "/v1/topics/in/events", batch)
    p.terminate(); p.wait()
    # 2. Run the chain and time it.
    p = subprocess.Popen([a.binary, "run", "--config", f"{work}/run.toml"], env=env)
    wait_up(base, p)
    t0 = time.monotonic()
    cpu0 = os.times()
    while True:
        h = get(base + "/v1/handlers/second")["stats"]
        if h["processed"] >= a.events:
            break
        if time.monotonic() - t0 > 600:
            sys.exit(f"timeout: {h}")
        time.sleep(0.02)
    t1 = time.monotonic()
    topics = {t["name"]: t["events"] for t in get(base + "/v1/topics")["topics"]}
    p.terminate(); p.wait()
    elapsed = t1 - t0
    print(json.dumps({
        "events": a.events, "keys": a.keys, "synchronous": a.synchronous,
        "seconds": round(elapsed, 3),
        "events_per_second": round(a.events / elapsed),
        "topic_events": topics,
    }, indent=2))
    shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
