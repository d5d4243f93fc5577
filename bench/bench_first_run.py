"""bench.py --first-run --page-photos N: what a learner times, right after training, in two CPU regimes side by side.

For each regime (native bf16 where the CPU has it; the same CPU with bf16 off; AVX2 only, bf16 off: oneDNN,
OpenVINO's copy of it and PyTorch's own ATen kernels held to AVX2, as on a laptop without AVX-512), one run of
`train.py --weights none --epochs 1` (ResNet50 at 256², the engine built after the last epoch, as by default),
then in interleaved rounds on the same --predict-photos photos:
- the tutorial's app function, once per photo, in a process of the regime (its start-up not counted);
- `predict.py`'s whole command on the checkpoint train.py left (the engine it built found in the cache);
- `predict.py`'s whole command on a copy of the checkpoint without a cache (as after `train.py --no-engine`);
- the page's first --page-photos answers right after `app.py` starts on that copy (the engine not built yet:
  a child process at the lowest priority builds it, suspended while the page answers), sent one after another,
  then PACED_PHOTOS more at a user's pace, alternating photo by photo with the tutorial's page (its app.py, the
  same HTTP calls) and its function called directly.
Each figure is printed with the load average (`uptime`) when it was taken: the machine may be shared.
Speed does not depend on the weights; the INT8 check does, and its verdict for a 1-epoch model is printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# After the page's first answers, how long to look for its engine line (a whole build under load takes minutes).
READY_LOOK_S = 30
PACED_PHOTOS = 5  # after the burst, answers at a user's pace (IDLE_S + 1 s apart)
# ATen's kernels (BatchNorm, ReLU, the additions, resizing, normalizing) pick AVX-512 unless held too, which an AVX2
# laptop cannot (in three pairs here, holding them made no consistent difference to either side).
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
REGIMES = {"native bf16": ({}, []), "bf16 off": ({}, ["--no-amp"]), "AVX2, bf16 off": (AVX2_ONLY, ["--no-amp"])}


def load_average() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def run(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:3])} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stdout + done.stderr


def train(data_dir: Path, output: Path, env: dict[str, str], flags: list[str]) -> tuple[float, str]:
    """train.py for 1 epoch; its wall time and the engine line it printed after the last epoch."""
    seconds, out = run([sys.executable, "train.py", "--data-dir", str(data_dir), "--weights", "none", "--epochs", "1",
                        "--swanlab-mode", "disabled", "--output-dir", str(output), *flags], env)
    return seconds, next((line for line in out.splitlines() if line.startswith("engine:")), "no engine line")


def tutorial_seconds(checkpoint: Path, folder: Path, env: dict[str, str]) -> float:
    """The tutorial's function on every photo of the folder, timed in a process of the regime."""
    out = run([sys.executable, __file__, "--tutorial", str(checkpoint), str(folder)], env)[1]
    return float(re.findall(r"^tutorial ([\d.]+)$", out, re.M)[-1])


def predict_seconds(checkpoint: Path, folder: Path, env: dict[str, str], flags: list[str]) -> tuple[float, str]:
    seconds, out = run([sys.executable, "predict.py", str(folder), "--checkpoint", str(checkpoint), *flags], env)
    return seconds, next((line for line in out.splitlines() if line.startswith("engine:")), "")


def first_run_report(data_dir: Path, photo_dir: Path, photos: int = 300, page_photos: int = 10, rounds: int = 2) -> None:
    """Print the Markdown tables of bench.py --first-run."""
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        folder = work / "photos"
        folder.mkdir()
        for path in sorted(p for p in photo_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:photos]:
            shutil.copy(path, folder / path.name)
        trained = {}
        for name, (env, flags) in REGIMES.items():
            load = load_average()
            seconds, line = train(data_dir.resolve(), work / name / "trained", env, flags)
            (work / name / "fresh").mkdir()
            shutil.copy(work / name / "trained/best_checkpoint.pth", work / name / "fresh")
            trained[name] = (seconds, line, load)
            print(f"{name}: train.py 1 epoch + engine {seconds:.0f} s (load {load}); {line}", flush=True)
        rows = {name: [] for name in REGIMES}
        for _ in range(rounds):
            for name, (env, flags) in REGIMES.items():
                checkpoint, fresh = work / name / "trained/best_checkpoint.pth", work / name / "fresh/best_checkpoint.pth"
                load = load_average()
                tutorial = tutorial_seconds(checkpoint, folder, env)
                cached = predict_seconds(checkpoint, folder, env, flags)
                uncached = predict_seconds(fresh, folder, env, flags)
                page = json.loads(run([sys.executable, __file__, "--page", str(fresh), str(folder), str(page_photos),
                                       *flags], env)[1].splitlines()[-1])
                shutil.rmtree(fresh.parent / "engines", ignore_errors=True)  # the next round's app starts bare again
                rows[name].append((tutorial, cached, uncached, page, f"{load}→{load_average()}"))
                print(f"{name}: tutorial {tutorial:.1f} s, after train.py {cached[0]:.1f} s, no cache {uncached[0]:.1f} s, "
                      f"page p50 {statistics.median(page['page']):.0f} ms vs {statistics.median(page['tutorial_page']):.0f} ms "
                      f"(tutorial's page), {statistics.median(page['tutorial']):.0f} ms (its function)",
                      flush=True)
        print_tables(trained, rows, photos, page_photos)


def print_tables(trained: dict, rows: dict, photos: int, page_photos: int) -> None:
    print(f"\npredict.py's whole command on {photos} photos right after training, against the tutorial's function "
          "on the same photos (its start-up not counted), per round; load: 1-minute load average before→after:\n")
    print("| regime | round | tutorial | predict.py after train.py | vs tutorial | predict.py, no cache | vs tutorial "
          "| load |\n|---|---|---|---|---|---|---|---|")
    for name, results in rows.items():
        for i, (tutorial, cached, uncached, _, load) in enumerate(results, 1):
            print(f"| {name} | {i} | {tutorial:.1f} s | {cached[0]:.1f} s | **{tutorial / cached[0]:.2f}×** | "
                  f"{uncached[0]:.1f} s | {tutorial / uncached[0]:.2f}× | {load} |")
    for name, results in rows.items():
        print(f"\n{name}: train.py {trained[name][0]:.0f} s (load {trained[name][2]}), {trained[name][1]}; "
              f"predict.py after it: {results[0][1][1]}; without a cache: {results[0][2][1]}")
    print(f"\nThe page's first {page_photos} answers right after `app.py` starts (no engine cached: a child process at the "
          "lowest priority builds it, suspended while the page answers), sent one after another, each alternating with the "
          "tutorial's page (its app.py: the same function behind gr.Interface, the same HTTP calls) and the tutorial's "
          "function called directly (no HTTP):\n")
    print("| regime | round | tutorial's function p50 | tutorial's page p50 | page p50 | page p90 | page vs tutorial's page "
          "| page vs tutorial's function | engine ready after | load |\n" + "|---" * 10 + "|")
    for name, results in rows.items():
        for i, (*_, page, load) in enumerate(results, 1):
            p50, function_p50, tutorial_p50 = (statistics.median(page[key]) for key in ("page", "tutorial", "tutorial_page"))
            p90 = sorted(page["page"])[int(0.9 * (len(page["page"]) - 1))]
            print(f"| {name} | {i} | {function_p50:.0f} ms | {tutorial_p50:.0f} ms | {p50:.0f} ms | {p90:.0f} ms | "
                  f"**{p50 / tutorial_p50:.2f}×** | {p50 / function_p50:.2f}× | {page['ready']} | {load} |")
    print(f"\nThen {PACED_PHOTOS} answers at a user's pace (IDLE_S + 1 s apart: the build goes on between them, and is "
          "suspended when a photo comes), each followed by the tutorial's page:\n")
    print("| regime | round | tutorial's page p50 | page p50 | page slowest | page vs tutorial's page |\n" + "|---" * 6 + "|")
    for name, results in rows.items():
        for i, (*_, page, _) in enumerate(results, 1):
            p50, tutorial_p50 = statistics.median(page["paced"]), statistics.median(page["paced_tutorial_page"])
            print(f"| {name} | {i} | {tutorial_p50:.0f} ms | {p50:.0f} ms | {max(page['paced']):.0f} ms | "
                  f"**{p50 / tutorial_p50:.2f}×** |")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child_tutorial(checkpoint: Path, folder: Path) -> None:
    """--tutorial: seconds for the tutorial's function on every photo of the folder, after one warm-up call."""
    from PIL import Image

    from bench_engines import make_tutorial_predict
    from cats_dogs.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    tutorial = make_tutorial_predict(model, torch_cpu(), meta["class_names"], meta["image_size"])
    files = sorted(folder.iterdir())
    tutorial(Image.open(files[0]).convert("RGB"))
    started = time.perf_counter()
    for path in files:
        tutorial(Image.open(path).convert("RGB"))
    print(f"tutorial {time.perf_counter() - started:.3f}")


def torch_cpu():
    import torch

    return torch.device("cpu")


def page_answer(http, base: str, api_name: str, photo: Path) -> float:
    """One answer of a Gradio page, as a browser gets it: the photo uploaded, the call queued, its result read
    (Gradio's HTTP API, three requests on one connection). Milliseconds. gradio_client adds about 120 ms of
    its own to each call, which no page pays in a browser: it is not used here."""
    started = time.perf_counter()
    uploaded = http.post(f"{base}/gradio_api/upload", files={"files": photo.open("rb")}).json()[0]
    event = http.post(f"{base}/gradio_api/call/{api_name}",
                      json={"data": [{"path": uploaded, "meta": {"_type": "gradio.FileData"}}]}).json()["event_id"]
    result = http.get(f"{base}/gradio_api/call/{api_name}/{event}").text
    if "event: complete" not in result:
        raise SystemExit(f"{base} /{api_name} failed: {result[-500:]}")
    return (time.perf_counter() - started) * 1000


def tutorial_page(model, meta: dict, port: int):
    """The tutorial's app.py: its function behind gr.Interface (PIL image in, Label out), in this process."""
    import gradio as gr

    from bench_engines import make_tutorial_predict

    tutorial = make_tutorial_predict(model, torch_cpu(), meta["class_names"], meta["image_size"])
    page = gr.Interface(fn=tutorial, inputs=gr.Image(type="pil"), outputs=gr.Label(num_top_classes=2))
    page.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    return tutorial, page


def child_page(checkpoint: Path, folder: Path, count: int, flags: list[str]) -> None:
    """--page: app.py started on a checkpoint without an engine; its first `count` answers to /predict, then
    PACED_PHOTOS at a user's pace, each alternating with the tutorial's page (the same HTTP calls) and the
    tutorial's function called directly (ms); and when the engine line came. One JSON line."""
    import httpx
    from PIL import Image

    from cats_dogs.checkpoint import load_checkpoint
    from cats_dogs.engine_build import IDLE_S

    model, meta = load_checkpoint(checkpoint)
    port, tutorial_port, log_path = free_port(), free_port(), checkpoint.parent / "app.log"
    tutorial, tutorial_demo = tutorial_page(model, meta, tutorial_port)
    started = time.monotonic()
    with open(log_path, "w+", encoding="utf-8") as log:
        app = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--checkpoint", str(checkpoint), "--port",
                                str(port), "--data-dir", str(meta["config"]["data_dir"]), *flags], cwd=REPO,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            with httpx.Client(timeout=120) as http:
                while "Running on" not in log_path.read_text(encoding="utf-8"):
                    if app.poll() is not None:
                        raise SystemExit(f"app.py ended:\n{log_path.read_text(encoding='utf-8')[-2000:]}")
                    time.sleep(0.2)
                timings = {key: [] for key in ("page", "tutorial_page", "tutorial", "paced", "paced_tutorial_page")}
                answered_before_ready = 0
                photos = sorted(folder.iterdir())
                # A burst (photos sent one after another), then a user's pace: a look at each answer longer than the
                # page's IDLE_S, during which the build goes on.
                for i, path in enumerate(photos[:count + PACED_PHOTOS]):
                    paced = i >= count
                    time.sleep(IDLE_S + 1 if paced else 0.05)
                    timings["paced" if paced else "page"].append(page_answer(http, f"http://127.0.0.1:{port}", "predict", path))
                    answered_before_ready += "engine: openvino" not in log_path.read_text(encoding="utf-8")
                    time.sleep(0.05)
                    timings["paced_tutorial_page" if paced else "tutorial_page"].append(
                        page_answer(http, f"http://127.0.0.1:{tutorial_port}", "tutorial_predict", path))
                    if not paced:
                        time.sleep(0.05)
                        t = time.perf_counter()
                        tutorial(Image.open(path).convert("RGB"))
                        timings["tutorial"].append((time.perf_counter() - t) * 1000)
            while "engine: " not in log_path.read_text(encoding="utf-8") and time.monotonic() - started < READY_LOOK_S:
                time.sleep(0.5)
            line = next((x for x in log_path.read_text(encoding="utf-8").splitlines() if x.startswith("engine:")), "")
            timings["ready"] = (f"{time.monotonic() - started:.0f} s from start ({answered_before_ready} of "
                                f"{count + PACED_PHOTOS} answers before it; {line.removeprefix('engine: ')[:40] or 'not ready'})")
        finally:
            os.killpg(app.pid, 15)  # the app and its engine build, started in a session of their own
            app.wait(timeout=30)
            tutorial_demo.close()
    print(json.dumps(timings))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    if sys.argv[1] == "--tutorial":
        child_tutorial(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "--page":
        child_page(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
