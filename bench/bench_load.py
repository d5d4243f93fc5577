"""The page under load, for long: app.py started on 127.0.0.1, then --requests photo requests from --clients clients
at once through the HTTP API (upload, then /gradio_api/call/<endpoint>), as a script or a crowd of browsers sends them.

    python bench/bench_load.py --checkpoint checkpoint/best_checkpoint.pth --data-dir datasets --requests 10000

Each request sends a photo of --data-dir/val.csv with a few different bytes after its end (decoders ignore them), so
that every upload is a new file to Gradio, as users' photos are. Printed: requests/s, p50/p95 of the answer time,
the page's resident memory (with its children) after the first 1,000 requests and at each --report-every, and every
answer that was not a result: refused as busy (HTTP 503, the queue full), an error event, anything else. A burst of
--burst requests at once at the end checks that the ones the queue cannot take are refused at once.
Only 127.0.0.1; bounded by --requests and --time-limit. Each line carries the load average (`uptime`): the machine
may be shared.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data-dir", required=True, help="photos sent: those of DATA_DIR/val.csv")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=16, help="requests in flight at once")
    parser.add_argument("--endpoint", default="classify", choices=["classify", "predict"],
                        help="classify: what the page's photo box calls (probabilities, verdict with the pet check, "
                             "heat map if --heatmap); predict: the probabilities alone")
    parser.add_argument("--heatmap", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--report-every", type=int, default=1000)
    parser.add_argument("--time-limit", type=float, default=3600, help="seconds; requests not sent by then are not")
    parser.add_argument("--burst", type=int, default=0, help="at the end, this many requests at once")
    parser.add_argument("--app-args", default="", help="more arguments for app.py, e.g. '--engine torch'")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for app.py's environment")
    parser.add_argument("--json", default=None, help="also write the figures here")
    return parser


def load_average() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def start_app(args: argparse.Namespace, folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **dict(item.split("=", 1) for item in args.env)}
    log = open(folder / "app.log", "w", encoding="utf-8")  # noqa: SIM115 -- open while the page runs
    process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--checkpoint", str(Path(args.checkpoint).resolve()),
                                "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(folder),
                                *args.app_args.split()], cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"app.py exited {process.returncode}: see {folder / 'app.log'}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit("app.py did not answer within 600 s")


def resident_mb(process: subprocess.Popen) -> float:
    page = psutil.Process(process.pid)
    return sum(p.memory_info().rss for p in [page, *page.children(recursive=True)]) / 2**20


def ask(http: httpx.Client, url: str, endpoint: str, photo: bytes, heatmap: bool,
        uploaded_all: threading.Barrier | None = None, called: list | None = None) -> str:
    """One request as a script sends it: 'ok', 'busy' (refused at once: the queue is full), or what went wrong.
    uploaded_all: the request is sent once every thread of the burst has uploaded its photo; called: the time it
    was sent is appended to it."""
    uploaded = http.post(f"{url}gradio_api/upload", files={"files": ("photo.jpg", photo, "image/jpeg")})
    if uploaded_all is not None:
        uploaded_all.wait()
    if uploaded.status_code != 200:
        return f"upload HTTP {uploaded.status_code}"
    data = [{"path": uploaded.json()[0], "meta": {"_type": "gradio.FileData"}}]
    data += [0.7, heatmap, False] if endpoint == "classify" else []
    if called is not None:
        called.append(time.monotonic())
    joined = http.post(f"{url}gradio_api/call/{endpoint}", json={"data": data})
    if joined.status_code == 503:
        return "busy"
    if joined.status_code != 200:
        return f"call HTTP {joined.status_code}: {joined.text[:120]}"
    answer = http.get(f"{url}gradio_api/call/{endpoint}/{joined.json()['event_id']}").text
    if "event: complete" in answer:
        return "ok"
    return "error event: " + answer.strip().replace("\n", " ")[:200]


def run_load(args: argparse.Namespace, url: str, page: subprocess.Popen, photos: list[bytes]) -> dict:
    counter, lock = iter(range(args.requests)), threading.Lock()
    latencies, outcomes, memory = [], {}, []
    started = time.monotonic()
    deadline = started + args.time_limit

    def worker() -> None:
        with httpx.Client(timeout=600) as http:
            while time.monotonic() < deadline and page.poll() is None:  # a page that died ends the run
                with lock:
                    number = next(counter, None)
                if number is None:
                    return
                photo = photos[number % len(photos)] + number.to_bytes(8, "little")  # a new file each time
                began = time.monotonic()
                try:
                    outcome = ask(http, url, args.endpoint, photo, args.heatmap)
                except httpx.HTTPError as error:
                    outcome = f"{type(error).__name__}: {error}"
                with lock:
                    latencies.append(time.monotonic() - began)
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
                    done = len(latencies)
                    if done % args.report_every == 0 or done == 1000:
                        memory.append((done, resident_mb(page)))
                        rate = done / (time.monotonic() - started)
                        print(f"{done} requests: {rate:.1f} req/s, page {memory[-1][1]:.0f} MB, {outcomes}, "
                              f"{load_average()}", flush=True)

    with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
        for future in [pool.submit(worker) for _ in range(args.clients)]:
            future.result()
    seconds = time.monotonic() - started
    ordered = sorted(latencies)
    return {"requests": len(latencies), "seconds": round(seconds, 1), "requests_per_s": round(len(latencies) / seconds, 2),
            "p50_ms": round(statistics.median(ordered) * 1000), "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000),
            "outcomes": outcomes, "memory_mb": {str(done): round(mb) for done, mb in memory}, "load": load_average()}


def run_burst(url: str, endpoint: str, photo: bytes, count: int, heatmap: bool) -> dict:
    """count requests at once (their photos uploaded first): each answered, or refused at once as busy; how long
    the refusals took."""
    uploaded_all = threading.Barrier(count)

    def one(number: int) -> tuple[str, float]:
        with httpx.Client(timeout=600) as http:
            called = []  # from the request's call, its photo uploaded: how long until the answer or the refusal
            outcome = ask(http, url, endpoint, photo + number.to_bytes(8, "little"), heatmap, uploaded_all, called)
            return outcome, time.monotonic() - called[0] if called else 0.0

    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        results = list(pool.map(one, range(count)))
    outcomes = {}
    for outcome, _ in results:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    busy = [seconds for outcome, seconds in results if outcome == "busy"]
    return {"burst": count, "outcomes": outcomes, "slowest_refusal_ms": round(max(busy) * 1000) if busy else None}


def main(args: argparse.Namespace) -> None:
    data = Path(args.data_dir)
    rows = [line.split(",")[0] for line in (data / "val.csv").read_text(encoding="utf-8-sig").split()]
    photos = [(data / row).read_bytes() for row in rows]
    with tempfile.TemporaryDirectory(prefix="bench_load_") as folder:
        page, url = start_app(args, Path(folder))
        try:
            print(f"app.py at {url} ({args.checkpoint}, {args.app_args or 'defaults'}): {args.requests} {args.endpoint} "
                  f"requests from {args.clients} clients, heat map {'on' if args.heatmap else 'off'}; "
                  f"page {resident_mb(page):.0f} MB, {load_average()}", flush=True)
            result = run_load(args, url, page, photos)
            print(json.dumps(result), flush=True)  # kept if the page dies before the burst
            if args.burst and page.poll() is None:
                result["burst"] = run_burst(url, args.endpoint, photos[0], args.burst, args.heatmap)
            engine = [line for line in (Path(folder) / "app.log").read_text(encoding="utf-8").splitlines()
                      if line.startswith("engine:")]
            result["engine"] = engine[-1] if engine else "engine: torch"
        finally:
            page.terminate()
            page.wait(timeout=60)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
