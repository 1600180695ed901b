"""Requests per second and latency of the running app under concurrent API clients.

    python bench/serving.py [--clients 8] [--requests 200] [--seconds 60] [--photo P ...]
    python bench/serving.py --url http://127.0.0.1:7860          # an app you started yourself

Without ``--url`` it starts ``python app.py`` on a free port of 127.0.0.1 (a throw-away feedback
store, the default model), waits for ``/healthz``, and stops it at the end. ``--clients``
``gradio_client.Client``s, one thread each, call ``/predict`` with the fixture's FG-NET photos in
turn (upload, queue, result JSON and the boxed photo downloaded, as an API user gets them) until
``--requests`` have been answered or ``--seconds`` have passed. The clients run on the same machine
as the server, so they take some of its CPU: the CPU time per request of the server and of the
clients is printed too (it depends far less on what else runs on the machine than requests/s do).
Prints a markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("AGECHECK_SHARED", REPO_ROOT.parent / "shared"))
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running app (default: start python app.py on a free port)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--requests", type=int, default=200, help="stop after this many answers (default 200)")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop after this long in any case (default 60)")
    parser.add_argument(
        "--photo",
        nargs="*",
        type=Path,
        default=None,
        help="photos to send (default: the 8 uncropped FG-NET photos of the shared fixture)",
    )
    parser.add_argument(
        "--download",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="clients download the boxed photo of each answer (default; --no-download: the JSON only)",
    )
    parser.add_argument(
        "--app-args", default="", help="extra options for the app this bench starts, e.g. '--threads 1'"
    )
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen | None, timeout: float = 120.0) -> float:
    """Seconds until /healthz answers ok."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if process is not None and process.poll() is not None:
            sys.exit(f"the app exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"the app did not answer on {url}/healthz within {timeout:.0f} s")


def start_app(extra: str, folder: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    command = [
        sys.executable,
        str(REPO_ROOT / "app.py"),
        "--port",
        str(port),
        "--store",
        f"sqlite:///{folder / 'feedback.db'}",
        *extra.split(),
    ]
    log = (folder / "app.log").open("w")
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env={**os.environ, **OFFLINE}, stdout=log, stderr=subprocess.STDOUT
    )
    return f"http://127.0.0.1:{port}", process


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process has used so far: this process when ``pid`` is None."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_clients(
    url: str, photos: list[Path], clients: int, requests: int, seconds: float, download: bool = True
) -> tuple[list[float], list[str], float, float]:
    """Latencies of answered requests, error messages, the wall time of the run, and the first request's time."""
    from gradio_client import Client, handle_file

    options = {} if download else {"download_files": False}
    connections = [Client(url, verbose=False, analytics_enabled=False, **options) for _ in range(clients)]
    first = time.perf_counter()
    connections[0].predict(handle_file(str(photos[0])), 25, api_name="/predict")  # the first request after start
    first = time.perf_counter() - first
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = iter(range(requests))
    deadline = time.perf_counter() + seconds

    def work(client: Client, offset: int) -> None:
        while time.perf_counter() < deadline:
            with lock:
                number = next(issued, None)
            if number is None:
                return
            start = time.perf_counter()
            try:
                client.predict(handle_file(str(photos[(number + offset) % len(photos)])), 25, api_name="/predict")
            except Exception as error:  # every failure is counted and shown, none stops the run
                with lock:
                    errors.append(f"{type(error).__name__}: {error}"[:200])
                continue
            with lock:
                latencies.append(time.perf_counter() - start)

    threads = [threading.Thread(target=work, args=(c, i)) for i, c in enumerate(connections)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - start, first


def main() -> None:
    args = parse_args()
    os.environ.update(OFFLINE)
    photos = args.photo or sorted((SHARED / "data" / "fixture" / "images").glob("fgnet_*"))
    if not photos:
        sys.exit("No photos: pass --photo, or put the shared data beside the repo (or set AGECHECK_SHARED).")
    with tempfile.TemporaryDirectory(prefix="agecheck-serving-bench-") as folder:
        process = None
        url = args.url
        if url is None:
            url, process = start_app(args.app_args, Path(folder))
        try:
            started = wait_healthy(url, process)
            cpu_before = (cpu_seconds(process.pid) if process else float("nan"), cpu_seconds(None))
            latencies, errors, wall, first = run_clients(
                url, photos, args.clients, args.requests, args.seconds, args.download
            )
            cpu_after = (cpu_seconds(process.pid) if process else float("nan"), cpu_seconds(None))
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)
    values = np.asarray(latencies) * 1000
    p50, p95 = (float(np.percentile(values, q)) for q in (50, 95)) if len(values) else (float("nan"),) * 2
    what = "result photo downloaded" if args.download else "JSON only"
    print(f"### {args.clients} concurrent `gradio_client` clients on `/predict` ({what}), {url.split('//')[1]}\n")
    answered = max(1, len(latencies))
    server_ms, client_ms = ((after - before) * 1000 / answered for after, before in zip(cpu_after, cpu_before))
    print(
        "| answered | errors | seconds | requests/s | p50 ms | p95 ms | server CPU ms / request | clients' CPU ms / "
        "request |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {len(latencies)} | {len(errors)} | {wall:.1f} | **{len(latencies) / wall:.1f}** | {p50:.0f} | {p95:.0f} "
        f"| {server_ms:.0f} | {client_ms:.0f} |"
    )
    if errors:
        print("\nFirst errors: " + "; ".join(sorted(set(errors))[:3]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nThe first request after the app answered /healthz took {first * 1000:.0f} ms (one client alone).")
    print(
        f"\n{os.cpu_count()} cores, load average at the end {load:.2f}; app ready {started:.1f} s after the bench "
        f"started waiting; `python bench/serving.py {' '.join(sys.argv[1:])}`".rstrip()
    )


if __name__ == "__main__":
    main()
