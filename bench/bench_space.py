"""Cold start of a Space folder (export.py --space), started as Hugging Face Spaces start it: `python app.py` with
GRADIO_SERVER_NAME=0.0.0.0 and GRADIO_SERVER_PORT. Seconds from the start to the first /predict answer (whoever
answers), to the engine's line (`engine: …`, printed once the engine answers), and to the first /predict answer
given by that engine. Each round starts a fresh copy of the folder: a start that builds its engine writes into it.

    python bench/bench_space.py my-space --photo datasets/val/cat/cat.1.jpg --rounds 2
    python bench/bench_space.py --pet-check resnet50 --image-size 256   # what the "not a cat or dog" hint costs

Prints Markdown rows for docs/share.md, with the CPU and the load average beside them.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python bench/bench_space.py`: the package is one folder up


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def engine_line(log: Path) -> str | None:
    return next((line for line in log.read_text(encoding="utf-8").splitlines() if line.startswith("engine: ")), None)


def cold_start(space: Path, photo: Path, timeout: float = 600) -> dict:
    """One start of a fresh copy of `space`: {first_answer_s, engine_line_s, engine_answer_s, engine}."""
    import psutil
    from gradio_client import Client, handle_file

    with tempfile.TemporaryDirectory() as scratch:
        copy = shutil.copytree(space, Path(scratch) / "space")
        port, log = free_port(), Path(scratch) / "app.log"
        env = {**os.environ, "GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": str(port), "PYTHONUNBUFFERED": "1"}
        started = time.perf_counter()
        with open(log, "w", encoding="utf-8") as output:
            # --port too: the variables alone are ignored by app.py before it took them (a folder exported then).
            process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=copy, env=env, stdout=output,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            client, result = None, {}
            while client is None:
                if process.poll() is not None or time.perf_counter() - started > timeout:
                    raise SystemExit(f"app.py did not start:\n{log.read_text(encoding='utf-8')}")
                try:
                    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                except Exception:  # not listening yet
                    time.sleep(0.2)
            client.predict(handle_file(str(photo)), api_name="/predict")
            result["first_answer_s"] = time.perf_counter() - started
            # No more requests until the engine is ready: the page suspends a build while it answers.
            while (line := engine_line(log)) is None:
                if process.poll() is not None or time.perf_counter() - started > timeout:
                    raise SystemExit(f"no engine line in {timeout:.0f} s:\n{log.read_text(encoding='utf-8')}")
                time.sleep(0.2)
            result.update(engine_line_s=time.perf_counter() - started, engine=line)
            client.predict(handle_file(str(photo)), api_name="/predict")
            result["engine_answer_s"] = time.perf_counter() - started
            # CPU seconds of app.py and its build process until then: on a machine shared with other work, the
            # part of the wall-clock time that was this start's own.
            times = psutil.Process(process.pid).cpu_times()
            result["cpu_s"] = times.user + times.system + times.children_user + times.children_system
            return result
        finally:
            process.terminate()
            process.wait(timeout=30)


def pet_check_cost(arch: str, image_size: int, photos: int = 10) -> dict:
    """What the pet check adds: ImageNet's classifier (random weights of the same shape: the same cost) read from a
    .pth as app.py reads it, and run on one photo at a time as the page runs it."""
    import torch
    from PIL import Image

    from cats_dogs.inference import make_batch_predict
    from cats_dogs.model import build_model
    from cats_dogs.weights import read_state_dict

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "imagenet.pth"
        torch.save(build_model(arch, 1000).state_dict(), path)
        started, cpu_started = time.perf_counter(), time.process_time()
        model = build_model(arch, 1000)
        model.load_state_dict(read_state_dict(path))
        meta = {"image_size": image_size, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
        predict = make_batch_predict(model, meta, torch.device("cpu"))
        load_s, load_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        photo = Image.new("RGB", (640, 480), (120, 90, 60))
        predict([photo])  # the first call allocates
        timings, cpu_timings = [], []
        for _ in range(photos):
            began, cpu_began = time.perf_counter(), time.process_time()
            predict([photo])
            timings.append(time.perf_counter() - began)
            cpu_timings.append(time.process_time() - cpu_began)
        return {"size_mb": path.stat().st_size / 1e6, "load_s": load_s, "load_cpu_s": load_cpu_s,
                "ms_per_photo": 1000 * statistics.median(timings), "cpu_ms_per_photo": 1000 * statistics.median(cpu_timings)}


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("spaces", nargs="*", help="Space folders (export.py --space), each measured in turn")
    parser.add_argument("--photo", default=None, help="the photo sent to /predict")
    parser.add_argument("--rounds", type=int, default=1, help="starts per folder, interleaved")
    parser.add_argument("--pet-check", default=None, metavar="ARCH", help="measure the pet check's cost for this model")
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args()
    if args.pet_check:
        cost = pet_check_cost(args.pet_check, args.image_size)
        print(f"| pet check, {args.pet_check} at {args.image_size} px | {cost['size_mb']:.0f} MB | load "
              f"{cost['load_s']:.1f} s ({cost['load_cpu_s']:.1f} s CPU) | {cost['ms_per_photo']:.0f} ms a photo "
              f"({cost['cpu_ms_per_photo']:.0f} ms CPU) | {machine()} |")
    if args.spaces and not args.photo:
        raise SystemExit("--photo: the photo to send to /predict")
    print("| folder | first answer | engine ready | first answer by the engine | CPU time till then | engine | machine |")
    print("|---|---|---|---|---|---|---|")
    for _ in range(args.rounds):
        for space in args.spaces:
            result = cold_start(Path(space), Path(args.photo).resolve())
            print(f"| {space} | {result['first_answer_s']:.1f} s | {result['engine_line_s']:.1f} s | "
                  f"{result['engine_answer_s']:.1f} s | {result['cpu_s']:.1f} s | {result['engine']} | {machine()} |",
                  flush=True)


if __name__ == "__main__":
    main()
