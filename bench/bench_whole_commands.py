"""bench.py --first-run: what a learner times, as whole commands (start-up included), side by side.

In --rounds interleaved rounds, for each CPU regime this CPU has and each --train-epochs E:
- `python bench/tutorial_train.py --epochs E`: the tutorial's train.py as written (tutorial_train.py);
- `python train.py --epochs E --weights none --swanlab-mode disabled`: this project's, its engine lines kept;
- right after it, as a user would, `python predict.py PHOTOS --checkpoint best_checkpoint.pth`, even while a
  background engine build that train.py left (engines/build.pid beside the checkpoint) still runs; then
  that build is waited for (at most BUILD_WAIT_S), so that it slows no later measurement, and predict.py is
  timed once more (as for a learner who read train.py's last lines first);
- the tutorial's app function on the same photos (its start-up not counted), in a process of the regime.
Then `train.py --freeze-backbone --epochs --freeze-epochs` against that many times the tutorial's 1-epoch command
of the same round. Each figure is printed with the 1-minute load average before→after: the machine may be shared.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_first_run import REGIMES, load_average, run, tutorial_seconds
from cats_dogs.device import bf16_beats_fp32_cpu, has_native_bf16_cpu

REPO = Path(__file__).resolve().parents[1]
BUILD_WAIT_S = 300  # a background engine build left by train.py is waited for at most this long
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


def available_regimes(asked: list[str] | None) -> tuple[list[str], list[str]]:
    """The regimes to run (those asked, default all) that this CPU has, and a line for each left out."""
    names, notes = list(asked or REGIMES), []
    if "native bf16" in names and not has_native_bf16_cpu():
        names.remove("native bf16")
        notes.append("The native bf16 regime could not be measured on this CPU: it has no native bf16 "
                     "(AVX512-BF16 or AMX).")
    elif "native bf16" in names and not bf16_beats_fp32_cpu():
        names.remove("native bf16")
        notes.append("This CPU has native bf16 (AVX512-BF16), but bf16 was measured slower than fp32 here "
                     "(device.bf16_beats_fp32_cpu), so train.py, predict.py and the page use fp32 by default: "
                     "their defaults are the \"bf16 off\" regime, and a native bf16 regime cannot be measured.")
    try:
        avx512 = "avx512f" in Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        avx512 = True  # unknown: both regimes run
    if not avx512 and {"bf16 off", "AVX2, bf16 off"} <= set(names):
        names.remove("bf16 off")
        notes.append("This CPU has AVX2 only: \"bf16 off\" is the same machine state as \"AVX2, bf16 off\", "
                     "run once under the latter name.")
    return names, notes


def engine_lines(output: str) -> str:
    """train.py's last lines that start with "engine": what was built, in how many seconds, or that it builds on."""
    lines = [line.strip() for line in output.splitlines() if line.startswith("engine")]
    return "; ".join(lines[-2:]) or "no engine line"


def wait_for_build(output_dir: Path) -> str:
    """Wait until the background engine build that train.py left in output_dir has ended (its pid file gone)."""
    pid_file = output_dir / "engines" / "build.pid"
    if not pid_file.exists():
        return ""
    started = time.monotonic()
    while pid_file.exists() and time.monotonic() - started < BUILD_WAIT_S:
        time.sleep(1)
    waited = time.monotonic() - started
    return (f"the background build still ran {waited:.0f} s later" if pid_file.exists()
            else f"the background build ended {waited:.0f} s later")


def train_command(data_dir: Path, output: Path, epochs: int, flags: list[str]) -> list[str]:
    return [sys.executable, "train.py", "--data-dir", str(data_dir), "--epochs", str(epochs), "--weights", "none",
            "--swanlab-mode", "disabled", "--output-dir", str(output), *flags]


def tutorial_command_seconds(data_dir: Path, output: Path, epochs: int, env: dict[str, str]) -> float:
    return run([sys.executable, str(REPO / "bench/tutorial_train.py"), "--data-dir", str(data_dir), "--epochs",
                str(epochs), "--output-dir", str(output)], env)[0]


def side_by_side(work: Path, data_dir: Path, folder: Path, regime: str, epochs: int) -> dict:
    """One round for one regime and epoch count: both training commands, then predict.py and the tutorial's function."""
    env, flags = REGIMES[regime]
    load = load_average()
    tutorial = tutorial_command_seconds(data_dir, work / "tutorial", epochs, env)
    trained, out = run(train_command(data_dir, work / "trained", epochs, flags), env)
    checkpoint = work / "trained" / "best_checkpoint.pth"
    building = (work / "trained" / "engines" / "build.pid").exists()
    predicted, predict_out = run([sys.executable, "predict.py", str(folder), "--checkpoint", str(checkpoint), *flags],
                                 env)
    waited = wait_for_build(work / "trained")
    # A learner who reads train.py's last lines first: predict.py once that build has ended (the engine cached).
    predict_command = [sys.executable, "predict.py", str(folder), "--checkpoint", str(checkpoint), *flags]
    later = run(predict_command, env)[0] if building else None
    function = tutorial_seconds(checkpoint, folder, env)
    predict_engine = next((line for line in predict_out.splitlines() if line.startswith("engine")), "")
    shutil.rmtree(work)  # a ResNet50's checkpoints and engines: hundreds of MB per run
    return {"regime": regime, "epochs": epochs, "tutorial": tutorial, "train": trained, "engine": engine_lines(out),
            "building": building, "waited": waited, "predict": predicted, "later": later, "predict_engine": predict_engine,
            "function": function, "load": f"{load}→{load_average()}"}


def freeze_side_by_side(work: Path, data_dir: Path, regime: str, epochs: int, tutorial_epoch: float) -> dict:
    """train.py --freeze-backbone as a whole command against `epochs` times the tutorial's 1-epoch command."""
    env, flags = REGIMES[regime]
    load = load_average()
    seconds, out = run(train_command(data_dir, work, epochs, ["--freeze-backbone", *flags]), env)
    waited = wait_for_build(work)
    shutil.rmtree(work)
    return {"regime": regime, "tutorial_epoch": tutorial_epoch, "train": seconds, "engine": engine_lines(out),
            "waited": waited, "load": f"{load}→{load_average()}"}


def copy_photos(photo_dir: Path, folder: Path, count: int) -> int:
    folder.mkdir()
    for path in sorted(p for p in photo_dir.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)[:count]:
        shutil.copy(path, folder / path.name)
    return len(list(folder.iterdir()))


def whole_command_report(data_dir: Path, photo_dir: Path, photos: int, train_epochs: list[int], rounds: int,
                         regimes: list[str] | None, freeze_epochs: int) -> None:
    """Print the Markdown tables of bench.py --first-run."""
    names, notes = available_regimes(regimes)
    for note in notes:
        print(note)
    data_dir = data_dir.resolve()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        photos = copy_photos(photo_dir, work / "photos", photos)
        rows, frozen = [], []
        for round_number in range(1, rounds + 1):
            for regime in names:
                for epochs in train_epochs:
                    row = side_by_side(work / "run", data_dir, work / "photos", regime, epochs)
                    rows.append({**row, "round": round_number})
                    print(f"{regime}, {epochs} epoch(s), round {round_number}: tutorial {row['tutorial']:.1f} s, train.py "
                          f"{row['train']:.1f} s; predict.py {row['predict']:.1f} s, tutorial's function "
                          f"{row['function']:.1f} s (load {row['load']}); {row['engine']}", flush=True)
                if freeze_epochs:
                    tutorial_epoch = next((r["tutorial"] for r in rows if r["round"] == round_number
                                           and r["regime"] == regime and r["epochs"] == 1), None)
                    if tutorial_epoch is None:  # 1 is not among --train-epochs: measured for this
                        tutorial_epoch = tutorial_command_seconds(data_dir, work / "run", 1, REGIMES[regime][0])
                        shutil.rmtree(work / "run")
                    row = freeze_side_by_side(work / "run", data_dir, regime, freeze_epochs, tutorial_epoch)
                    frozen.append({**row, "round": round_number})
                    print(f"{regime}, --freeze-backbone {freeze_epochs} epochs, round {round_number}: train.py "
                          f"{row['train']:.1f} s (load {row['load']})", flush=True)
    print_whole_command_tables(rows, frozen, photos, freeze_epochs)


def print_whole_command_tables(rows: list[dict], frozen: list[dict], photos: int, freeze_epochs: int) -> None:
    print("\nWhole commands, start-up included: the tutorial's train.py (bench/tutorial_train.py: it tests every 4 "
          "epochs, so never over 1 or 3) against `train.py --weights none --swanlab-mode disabled`; then, right "
          f"after it, `predict.py` on {photos} photos against the tutorial's app function on the same photos (its "
          "start-up not counted); load: 1-minute load average before→after:\n")
    print("| regime | epochs | round | tutorial | train.py | vs tutorial | engine (train.py; predict.py) | predict.py "
          "| tutorial's function | vs function | predict.py once the build ended | vs function | load |\n"
          + "|---" * 13 + "|")
    for row in rows:
        engine = row["engine"] + (" (building in the background when predict.py started)" if row["building"] else "")
        engine += f"; predict.py: {row['predict_engine']}" if row["predict_engine"] else ""
        engine += f"; {row['waited']}" if row["waited"] else ""
        later = (f"{row['later']:.1f} s | **{row['function'] / row['later']:.2f}×**" if row["later"]
                 else "(built in train.py) | ")
        print(f"| {row['regime']} | {row['epochs']} | {row['round']} | {row['tutorial']:.1f} s | {row['train']:.1f} s | "
              f"**{row['tutorial'] / row['train']:.2f}×** | {engine.replace('|', '/')} | {row['predict']:.1f} s | "
              f"{row['function']:.1f} s | **{row['function'] / row['predict']:.2f}×** | {later} | {row['load']} |")
    print()
    for regime, epochs in dict.fromkeys((row["regime"], row["epochs"]) for row in rows):
        group = [row for row in rows if (row["regime"], row["epochs"]) == (regime, epochs)]
        print(f"- {regime}, {epochs} epoch(s), median over {len(group)} rounds: train.py "
              f"**{statistics.median(r['tutorial'] / r['train'] for r in group):.2f}×** the tutorial's command, "
              f"predict.py **{statistics.median(r['function'] / r['predict'] for r in group):.2f}×** its function"
              + (f", once the build ended **{statistics.median(r['function'] / r['later'] for r in group):.2f}×**"
                 if all(r["later"] for r in group) else ""))
    if not frozen:
        return
    print(f"\n`train.py --freeze-backbone --epochs {freeze_epochs}` (whole command) against {freeze_epochs} × the "
          "tutorial's 1-epoch command of the same round:\n")
    print(f"| regime | round | tutorial, 1 epoch | × {freeze_epochs} | train.py --freeze-backbone | vs tutorial "
          "| engine | load |\n" + "|---" * 8 + "|")
    for row in frozen:
        tutorial = freeze_epochs * row["tutorial_epoch"]
        engine = row["engine"] + (f"; {row['waited']}" if row["waited"] else "")
        print(f"| {row['regime']} | {row['round']} | {row['tutorial_epoch']:.1f} s | {tutorial:.0f} s | "
              f"{row['train']:.1f} s | **{tutorial / row['train']:.1f}×** | {engine.replace('|', '/')} | {row['load']} |")
    print()
    for regime in dict.fromkeys(row["regime"] for row in frozen):
        group = [row for row in frozen if row["regime"] == regime]
        ratio = statistics.median(freeze_epochs * r["tutorial_epoch"] / r["train"] for r in group)
        print(f"- {regime}, --freeze-backbone, median over {len(group)} rounds: **{ratio:.1f}×**")
