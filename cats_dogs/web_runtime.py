"""ONNX Runtime Web for export.py --web: the pinned npm package, fetched once, checked, cached, never from a CDN.

A Python user has no npm, so the export downloads the package's tarball from the npm registry itself, checks it
against the integrity hash pinned here (the registry's `dist.integrity`, sha512 of the .tgz), keeps it in a cache
folder and copies out the three files the page loads: the WASM build's script, the module it imports and the .wasm.
A user without the registry passes a copy instead (--web-runtime: the .tgz, or a folder holding the files).
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from cats_dogs.atomic import atomic_write_bytes
from cats_dogs.user_cache import CACHE_ENV, cache_dir

# Pinned: 1.31.1 runs the opset that torch.onnx.export writes (18) and ONNX Runtime's ConvInteger for --web-quantize int8.
ORT_WEB_VERSION = "1.31.1"
ORT_WEB_INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="
ORT_WEB_URL = f"https://registry.npmjs.org/onnxruntime-web/-/onnxruntime-web-{ORT_WEB_VERSION}.tgz"
# The files the page loads (ort.wasm.min.js imports the .mjs, which fetches the .wasm), with their sha256: a folder
# given by --web-runtime holds no tarball to check, so each file is checked on its own.
RUNTIME_FILES = {
    "ort.wasm.min.js": "b8a78c408c40da65fdc8ba0846f7b2948e92a4c6d6b23cc8e4165e428ad95443",
    "ort-wasm-simd-threaded.mjs": "30ed0b5cd1182ede931fea448afb567d4dc705ec957af09f108a2be5f770dac3",
    "ort-wasm-simd-threaded.wasm": "4b884c203b0fa48d057be3332c65513ff85aa3c5bddd6946acc0fab7ecda001d",
}
DOWNLOAD_TIMEOUT_S = 60
HOW_TO_PROVIDE = (f"download {ORT_WEB_URL} on a machine that can reach it (or run `npm pack onnxruntime-web@{ORT_WEB_VERSION}`) "
                  f"and pass --web-runtime path/to/onnxruntime-web-{ORT_WEB_VERSION}.tgz")


def integrity_of(data: bytes) -> str:
    """npm's Subresource Integrity string of a tarball."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def check_tarball(data: bytes, where: str) -> bytes:
    if integrity_of(data) != ORT_WEB_INTEGRITY:
        raise SystemExit(f"{where} is not onnxruntime-web {ORT_WEB_VERSION}: its sha512 differs from the pinned one; "
                         f"{HOW_TO_PROVIDE}")
    return data


def download_tarball() -> bytes:
    """The pinned tarball from the npm registry, over HTTPS, checked before anything is kept."""
    print(f"downloading onnxruntime-web {ORT_WEB_VERSION} (~35 MB, once) from {ORT_WEB_URL}", flush=True)
    try:
        with urllib.request.urlopen(ORT_WEB_URL, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise SystemExit(f"could not download the page's runtime ({reason}): {HOW_TO_PROVIDE}") from None
    return check_tarball(data, ORT_WEB_URL)


def cached_tarball() -> bytes:
    """The tarball from the cache, or downloaded into it; a cached file that fails the check is downloaded again."""
    path = cache_dir() / f"onnxruntime-web-{ORT_WEB_VERSION}.tgz"
    if path.is_file():
        data = path.read_bytes()
        if integrity_of(data) == ORT_WEB_INTEGRITY:
            return data
    data = download_tarball()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    except OSError as error:  # a read-only home still exports; it only downloads again next time
        print(f"could not cache the runtime in {path.parent} ({error.strerror}): set ${CACHE_ENV} to a writable folder")
    return data


def files_from_tarball(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        return {name: archive.extractfile(f"package/dist/{name}").read() for name in RUNTIME_FILES}


def files_from_folder(folder: Path) -> dict[str, bytes]:
    """The files from an unpacked package (package/dist/, dist/) or a folder holding them, each checked."""
    files = {}
    for name, digest in RUNTIME_FILES.items():
        found = next((path for sub in ("", "dist", "package/dist") if (path := folder / sub / name).is_file()), None)
        if found is None:
            raise SystemExit(f"--web-runtime {folder}: no {name} in it (nor in dist/); {HOW_TO_PROVIDE}")
        data = found.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise SystemExit(f"--web-runtime {found} is not onnxruntime-web {ORT_WEB_VERSION}'s (its sha256 differs)")
        files[name] = data
    return files


def runtime_files(runtime: str | None) -> dict[str, bytes]:
    """The page's runtime files by name: from --web-runtime when given (a .tgz or a folder), else from the cache."""
    if runtime is None:
        return files_from_tarball(cached_tarball())
    path = Path(runtime)
    if path.is_dir():
        return files_from_folder(path)
    if not path.is_file():
        raise SystemExit(f"--web-runtime {path}: no such file or folder")
    return files_from_tarball(check_tarball(path.read_bytes(), f"--web-runtime {path}"))
