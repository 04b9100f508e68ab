"""Hostile input through the real daemon: does a folder of bad files stay a counted skip, under a memory ceiling?

``python -m edge.tools.hostile --mutants 10000 --workdir var/hostile`` lays out one folder: real textile frames
(good files), the named cases of a hostile or unlucky line (a 30,000 × 30,000 PNG bomb of about 1 MB, a link to
/dev/zero, a FIFO, a directory and a link loop named like images, a sparse file beyond ``max_file_bytes``, a JPEG
whose header promises 3.6 gigapixels, a truncated JPEG, an empty and a text file, and frames of odd shape or depth
that must be decided: 16-bit, 1 × 1, 8000 × 50 and one at ``max_pixels``) and N mutants of real JPEG, PNG, BMP and
TIFF files (bytes flipped, cut, spliced, zeroed, inserted; header dimensions rewritten). Then it runs the real
``lineside run`` over it as a non-looping folder source, and checks from the daemon's own records (decision log,
status file, its log lines, /metrics) that

- it ran to the end: exit 0, no inference error, no capture error, no reconnect;
- every file is accounted for once: decided (in the decision log) or skipped with one log line naming it and a
  reason, and the per-reason counters of the status file (and of /metrics) are those log lines counted;
- every good file and every named case that must be decided was decided; every named bad case has its reason;
- the daemon's peak RSS (getrusage's high-water mark, from its status file) stayed under ``RSS_LIMIT_MB``.

The verdict and figures go to stdout and ``<workdir>/report.json``; exit 1 on FAIL. CI runs a small form
(``tests/tools/test_hostile.py``); README's "Hostile input" gives the full run's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from edge.config import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS
from edge.images import IMAGE_SUFFIXES, decode_image
from edge.tools.net import free_port

RSS_LIMIT_MB = 1024.0
GOOD_FILES = 40
DECIDE = "decided"
EITHER = "decided or undecodable"  # a cut JPEG: libjpeg decodes what is there, or gives up
LINESIDE = [sys.executable, "-m", "edge.cli"]


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit grey PNG of width × height whose rows are all zero: ~1 MB for 30,000 × 30,000."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = bytes(1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def _encode(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok, ext
    return buf.tobytes()


def with_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header saying width × height."""
    i = 2
    while jpeg[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack_from(">H", jpeg, i + 2)[0]
    return jpeg[:i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9:]


def named_cases(folder: Path, good_jpeg: bytes, defect_jpeg: bytes, rng: np.random.Generator) -> dict[str, str]:
    """The hostile and unlucky files a line can meet, written into `folder`; name → what must become of it."""
    noise = rng.integers(0, 256, (50, 8000, 3), np.uint8)
    files: dict[str, tuple[bytes | None, str]] = {
        "a_bomb.png": (png_bomb(30_000, 30_000), "too_many_pixels"),
        "a_giant_header.jpg": (with_jpeg_size(good_jpeg, 60_000, 60_000), "too_many_pixels"),
        "a_truncated.jpg": (good_jpeg[: len(good_jpeg) * 3 // 5], EITHER),
        "a_empty.png": (b"", "empty"),
        "a_text.jpg": (b"this is not an image\n" * 10, "undecodable"),
        "a_16bit.png": (_encode(".png", rng.integers(0, 65_536, (200, 300), np.uint16)), DECIDE),
        "a_1x1.png": (_encode(".png", np.full((1, 1, 3), 128, np.uint8)), DECIDE),
        "a_8000x50.png": (_encode(".png", noise), DECIDE),
        # frames at the pixel cap, a good one and a defect (regions are cut at full frame size): what the ceiling
        # must hold whatever the folder holds
        "a_at_max_pixels.jpg": (_encode(".jpg", cv2.resize(decode_image(good_jpeg, "good"),
                                                           (5000, DEFAULT_MAX_PIXELS // 5000))), DECIDE),
        "a_at_max_pixels_defect.jpg": (_encode(".jpg", cv2.resize(decode_image(defect_jpeg, "defect"),
                                                                  (5000, DEFAULT_MAX_PIXELS // 5000))), DECIDE),
    }
    for name, (data, _) in files.items():
        assert data is not None
        (folder / name).write_bytes(data)
    expected = {name: outcome for name, (_, outcome) in files.items()}
    (folder / "a_device.jpg").symlink_to("/dev/zero")  # a read that never ends
    (folder / "a_directory.png").mkdir()
    os.mkfifo(folder / "a_fifo.png")  # an open that would block for ever
    (folder / "a_loop.jpg").symlink_to(folder / "a_loop.jpg")
    with open(folder / "a_huge.jpg", "wb") as fh:  # sparse: beyond max_file_bytes, no disk spent
        fh.write(good_jpeg)
        fh.truncate(DEFAULT_MAX_FILE_BYTES + 1)
    expected.update({"a_device.jpg": "not_regular", "a_directory.png": "not_regular", "a_fifo.png": "not_regular",
                     "a_loop.jpg": "not_regular", "a_huge.jpg": "too_large"})
    return expected


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One to three random damages of the kinds a broken disk, a cut transfer or an attacker makes."""
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 7))
        n = len(out)
        if n < 16:
            break
        at = int(rng.integers(0, n))
        if kind == 0:  # flip bytes anywhere
            for i in rng.integers(0, n, int(rng.integers(1, 32))):
                out[int(i)] ^= int(rng.integers(1, 256))
        elif kind == 1:  # flip bytes in the header, where sizes and markers live
            for i in rng.integers(0, min(n, 64), int(rng.integers(1, 6))):
                out[int(i)] ^= int(rng.integers(1, 256))
        elif kind == 2:  # cut short
            del out[max(8, at):]
        elif kind == 3:  # zero a run
            end = min(n, at + int(rng.integers(1, 4096)))
            out[at:end] = bytes(end - at)
        elif kind == 4:  # insert garbage
            out[at:at] = rng.integers(0, 256, int(rng.integers(1, 512)), np.uint8).tobytes()
        elif kind == 5:  # splice a later part earlier
            cut = int(rng.integers(at, n))
            out = out[:at] + out[cut:]
        else:  # a dimension field made huge or zero (PNG IHDR, BMP header; elsewhere a random 4 bytes)
            offset = {b"\x89P": 16, b"BM": 18}.get(bytes(out[:2]), int(rng.integers(0, min(n - 4, 600))))
            out[offset:offset + 4] = struct.pack(">I", int(rng.choice([0, 1, 65_535, 2**31 - 1, int(rng.integers(
                0, 2**32))])))
    if out == data:  # a splice of nothing, a zeroed run of zeros: damage it all the same
        out[len(out) // 2] ^= 0xFF
    return bytes(out)


def build_folder(folder: Path, mutants: int, seed: int = 0) -> dict[str, str]:
    """Good frames, the named cases and `mutants` damaged files; name → expected outcome ("" for a mutant: decided
    or skipped with a reason, either will do)."""
    from edge.datasets import textile_split

    rng = np.random.default_rng(seed)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    split = textile_split("test")
    frames = [p for p, _ in split]
    picks = [frames[int(i)] for i in rng.permutation(len(frames))[:GOOD_FILES]]
    defect = next(p for p, label in split if label == "global")
    expected: dict[str, str] = {}
    seeds: list[tuple[str, bytes]] = []
    for i, path in enumerate(picks):
        data = path.read_bytes()
        (folder / f"g_{i:03d}{path.suffix}").write_bytes(data)
        expected[f"g_{i:03d}{path.suffix}"] = DECIDE
        image = decode_image(data, str(path))
        ext = (".jpg", ".png", ".bmp", ".tif")[i % 4]
        seeds.append((ext, data if ext == ".jpg" else _encode(ext, image)))
    expected.update(named_cases(folder, picks[0].read_bytes(), defect.read_bytes(), rng))
    for i in range(mutants):
        ext, data = seeds[int(rng.integers(0, len(seeds)))]
        name = f"m_{i:05d}{ext}"
        (folder / name).write_bytes(mutate(data, rng))
        expected[name] = ""  # decided or skipped with a reason: both fine, as long as it is one of them
    return expected


def _config(workdir: Path, folder: Path, profile: Path, pack: Path, health_port: int) -> Path:
    line = {
        "id": "hostile", "source": {"kind": "folder", "id": "cam0", "path": str(folder), "fps": 1000, "loop": False},
        "model": {"pack": str(pack), "provider": "cpu", "max_batch": 8, "batch_wait_ms": 5},
        "profile": str(profile),
        "transport": {"station": f"tcp://127.0.0.1:{free_port()}", "outbox_dir": str(workdir / "outbox"),
                      "drain_timeout_s": 0},
        "routing": {"audit_fraction": 0.0},
        "status_file": str(workdir / "status.json"), "decision_log": str(workdir / "decisions.jsonl"),
        "ops": {"health_port": health_port, "reload_watch_s": 0},
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump({"line": line}))
    return path


def _scrape(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith('lineside_capture_events_total{kind="'):
            kind, value = line.split('"')[1], line.rsplit(" ", 1)[1]
            out[kind] = float(value)
    return out


def run(workdir: Path, mutants: int, profile: Path | None = None, pack: Path | None = None, seed: int = 0,
        timeout_s: float = 3600, echo: Any = print) -> dict[str, Any]:
    """Build the folder, run `lineside run` over it, check; the report (``report["pass"]``, ``["failures"]``)."""
    from edge.demo import default_pack_dir
    from edge.tools.soak import textile_profile

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    pack = pack or default_pack_dir()
    textile_profile(workdir / "profile", pack, profile, "hostile")
    for stale in ("outbox", "decisions.jsonl", "decisions.jsonl.resume", "status.json"):
        shutil.rmtree(workdir / stale, ignore_errors=True) if (workdir / stale).is_dir() else (
            workdir / stale).unlink(missing_ok=True)
    t = time.monotonic()
    expected = build_folder(workdir / "folder", mutants, seed)
    echo(f"hostile: {len(expected)} files laid out in {time.monotonic() - t:.0f} s ({mutants} mutants)")
    health = free_port()
    config = _config(workdir, workdir / "folder", workdir / "profile", pack, health)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)
    started = time.monotonic()
    metrics: dict[str, float] = {}
    with open(workdir / "daemon.log", "wb") as log_file:
        proc = subprocess.Popen([*LINESIDE, "--log-format", "json", "run", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=log_file, env=env)
        try:
            while proc.poll() is None and time.monotonic() - started < timeout_s:
                metrics = _scrape(health) or metrics
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                proc.kill()
            code = proc.wait()
    seconds = time.monotonic() - started
    return check(workdir, expected, code, seconds, metrics)


def check(workdir: Path, expected: dict[str, str], code: int, seconds: float,
          metrics: dict[str, float]) -> dict[str, Any]:
    folder = workdir / "folder"
    status = json.loads((workdir / "status.json").read_text())
    capture = status["capture"]
    decisions = [json.loads(line) for line in (workdir / "decisions.jsonl").read_text().splitlines()]
    decided = Counter(Path(d["origin"]).name for d in decisions)
    at_cap = {Path(d["origin"]).name: d["verdict"] for d in decisions if "at_max_pixels" in d["origin"]}
    skipped: dict[str, str] = {}
    prefix = "capture cam0: skipped "
    for line in (workdir / "daemon.log").read_text(errors="replace").splitlines():
        msg = json.loads(line).get("msg", "") if line.startswith("{") else ""
        if msg.startswith(prefix):
            origin, kind = msg[len(prefix):].split(": ", 1)[0], msg.rsplit("(", 1)[1].rstrip(")")
            skipped[Path(origin).name] = kind
    listed = {p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    by_reason = Counter(skipped.values())
    failures = []
    if code != 0:
        failures.append(f"`lineside run` exited {code} (see {workdir / 'daemon.log'})")
    for key, value in (("errors", status["errors"]), ("capture errors", capture["errors"]),
                       ("reconnects", capture["reconnects"])):
        if value:
            failures.append(f"{key}: {value}")
    if max(decided.values(), default=1) > 1:
        failures.append(f"decided twice: {[n for n, c in decided.items() if c > 1][:5]}")
    both = set(decided) & set(skipped)
    missing = listed - set(decided) - set(skipped)
    if both or missing or set(decided) | set(skipped) != listed:
        failures.append(f"not accounted for once: {sorted(missing)[:5]} missing, {sorted(both)[:5]} both")
    for name, outcome in expected.items():
        got = DECIDE if name in decided else skipped.get(name, "nothing")
        if outcome and outcome != EITHER and got != outcome or outcome == EITHER and got not in (
                DECIDE, "undecodable"):
            failures.append(f"{name}: {got}, expected {outcome}")
    for reason, n in by_reason.items():
        if capture.get(reason) != n:
            failures.append(f"status counter {reason} = {capture.get(reason)}, {n} files logged with it")
        if metrics.get(reason, 0) > n:
            failures.append(f"/metrics {reason} = {metrics.get(reason)} > {n}")
    if status["frames"] != sum(decided.values()):
        failures.append(f"status frames {status['frames']} != {sum(decided.values())} decisions")
    if status["peak_rss_mb"] > RSS_LIMIT_MB:
        failures.append(f"peak RSS {status['peak_rss_mb']} MB > {RSS_LIMIT_MB:g} MB")
    report = {
        "pass": not failures, "failures": failures, "files": len(listed), "mutants": sum(
            1 for n in listed if n.startswith("m_")), "decided": sum(decided.values()),
        "skipped": dict(sorted(by_reason.items())), "good_decided": sum(1 for n in expected if n.startswith(
            "g_") and n in decided), "good_files": sum(1 for n in expected if n.startswith("g_")),
        "peak_rss_mb": status["peak_rss_mb"], "exit_code": code, "seconds": round(seconds, 1),
        "inference_errors": status["errors"], "capture_errors": capture["errors"],
        "metrics_seen": sorted(k for k, v in metrics.items() if v), "verdicts_at_max_pixels": at_cap, "cpu": _cpu(),
    }
    (workdir / "report.json").write_text(json.dumps(report, indent=1))
    return report


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return "unknown"


def describe(report: dict[str, Any]) -> str:
    lines = [
        f"files {report['files']} ({report['mutants']} mutants): decided {report['decided']} "
        f"(good files {report['good_decided']} of {report['good_files']}), skipped by reason {report['skipped']}",
        f"exit {report['exit_code']}, inference errors {report['inference_errors']}, capture errors "
        f"{report['capture_errors']}; peak RSS {report['peak_rss_mb']} MB (limit {RSS_LIMIT_MB:g}); "
        f"{report['seconds']} s on {report['cpu']}; frames at max_pixels decided {report['verdicts_at_max_pixels']}",
        "verdict: " + ("PASS" if report["pass"] else "FAIL — " + "; ".join(report["failures"])),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.tools.hostile", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mutants", type=int, default=10_000, help="mutated JPEG/PNG/BMP/TIFF files")
    parser.add_argument("--workdir", type=Path, default=Path("var/hostile"))
    parser.add_argument("--profile", type=Path, help="a line profile to use (default: calibrate a textile one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds the daemon may take")
    args = parser.parse_args(argv)
    report = run(args.workdir, args.mutants, args.profile, seed=args.seed, timeout_s=args.timeout)
    print(describe(report))
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
