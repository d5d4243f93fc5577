"""A disk that refuses to write (full, a quota, read-only, a file-size limit): train.py and prepare_data.py stop with one
line naming the folder and the space needed, nothing saved before is lost, and the same command works once space is
back. The photo cache and the engine only save time: without room for them the run goes on.

The refusal is a file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored, so a write past it fails with EFBIG), set in the
script's own process by a small wrapper: no tmpfs or root needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, make_dataset, make_photo, run_script

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")


def run_with_file_limit(limit_bytes: int, script: str, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`python script args` where no file may grow past limit_bytes."""
    wrapper = ("import os, resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes})); "
               "sys.argv = sys.argv[1:]; sys.path.insert(0, os.path.dirname(sys.argv[0])); "
               "runpy.run_path(sys.argv[0], run_name='__main__')")
    return subprocess.run([sys.executable, "-c", wrapper, str(REPO / script), *args], cwd=cwd, capture_output=True,
                          text=True, encoding="utf-8", timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", **env})


def test_a_checkpoint_the_disk_refuses_stops_the_run_with_one_line_and_resume_works_once_space_is_back(
        trained_run: Path, tmp_path: Path) -> None:
    from cats_dogs.checkpoint import read_checkpoint

    shutil.copytree(trained_run / "datasets", tmp_path / "datasets")  # a new place: its photo cache is built anew
    shutil.copytree(trained_run / "checkpoint", tmp_path / "checkpoint", ignore=shutil.ignore_patterns("engines"))
    latest, best = tmp_path / "checkpoint/latest_checkpoint.pth", tmp_path / "checkpoint/best_checkpoint.pth"
    before, best_before = latest.read_bytes(), best.read_bytes()
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    # 40 kB: room for args.json and train_batch.jpg, not for the photo cache (48 kB) nor for a checkpoint.
    limited = run_with_file_limit(40_000, "train.py", "--resume", "--epochs", "3", "--swanlab-mode", "disabled",
                                  cwd=tmp_path, env=env)
    output = limited.stdout + limited.stderr
    assert limited.returncode == 1 and "Traceback" not in output, output
    assert "photo cache: not written, cannot write into" in limited.stdout and "read from their files" in limited.stdout
    [line] = [line for line in limited.stderr.splitlines() if line.startswith("cannot write")]
    # best_checkpoint.pth is written before latest_checkpoint.pth (the last, so that a stop redoes the epoch)
    assert line.startswith(f"cannot write best_checkpoint.pth into {latest.parent.resolve()}: the file is larger than"), line
    assert "MB needed" in line and "run the same command with --resume" in line
    assert latest.read_bytes() == before and read_checkpoint(latest)["epoch"] == 2  # the previous ones, whole
    assert best.read_bytes() == best_before
    assert not [path.name for path in latest.parent.iterdir() if ".tmp-" in path.name]

    run_script("train.py", "--resume", "--epochs", "3", "--swanlab-mode", "disabled", cwd=tmp_path, env=env, timeout=600)
    assert read_checkpoint(latest)["epoch"] == 3


def test_photos_the_disk_refuses_stop_prepare_data_with_one_line_and_the_same_command_works_after(tmp_path: Path) -> None:
    source = make_dataset(tmp_path / "source", per_class_train=4, per_class_val=2)
    make_photo(source / "train/cat/big.png", 0, seed=1, size=(300, 300))  # about 270 kB of noise: over the limit
    command = ("prepare_data.py", "--from", str(source / "train"), "--out", "imported")
    limited = run_with_file_limit(100_000, *command, cwd=tmp_path, env={})
    output = limited.stdout + limited.stderr
    assert limited.returncode == 1 and "Traceback" not in output, output
    [line] = [line for line in limited.stderr.splitlines() if line.startswith("cannot write")]
    assert f"into {(tmp_path / 'imported').resolve()}" in line and " kB needed, " in line, line  # the photos' 250 kB
    assert line.endswith("Free some space, then run the same command again.")
    assert not (tmp_path / "imported/train.csv").exists()  # no CSV listing photos that are not there
    run_script(*command, cwd=tmp_path)
    assert "big.png" in (tmp_path / "imported/train.csv").read_text(encoding="utf-8")


def test_only_the_disk_refusing_the_folder_written_to_becomes_the_one_line(tmp_path: Path) -> None:
    import errno

    from cats_dogs.atomic import exit_when_cannot_write

    target = tmp_path / "checkpoint/latest_checkpoint.pth"
    target.parent.mkdir()
    with pytest.raises(SystemExit) as stopped, exit_when_cannot_write(target, 2_500_000, "Then --resume."):
        raise OSError(errno.ENOSPC, "No space left on device", f"{target}.tmp-123-abc")  # its temporary file
    assert str(stopped.value).startswith(f"cannot write latest_checkpoint.pth into {target.parent.resolve()}: the disk "
                                         "is full (about 2 MB needed, ") and str(stopped.value).endswith("Then --resume.")
    with pytest.raises(SystemExit, match="the folder is read-only"), exit_when_cannot_write(target):
        raise PermissionError(errno.EACCES, "Permission denied", str(target))
    # A photo that could not be read (copied from elsewhere) is not the disk: its error passes as it is.
    with pytest.raises(PermissionError), exit_when_cannot_write(tmp_path / "checkpoint"):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "elsewhere/photo.jpg"))
    with pytest.raises(FileNotFoundError), exit_when_cannot_write(target):
        raise FileNotFoundError(errno.ENOENT, "No such file", str(target))
