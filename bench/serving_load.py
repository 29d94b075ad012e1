"""Serving load: how fast a learner trains while 16 clients sample it, against the same learner unloaded, in one run.

Target: "training steps/s within 20 % of unloaded with 16 concurrent ``/sample?n=10000`` clients".

For each dimension d (default 2 and 10), on one embedded stack (Tansu + Redis, :class:`sketchgen.local_stack.
LocalStack`): ``sketchgen create NAME --estimate-from PILOT.npy``, ``sketchgen produce`` of ``--records`` rows
(d = 2: the spiral; d > 2: a mixture of 8 Gaussians), ``sketchgen ingest`` until the stream holds them all (then
stopped), ``sketchgen learn NAME --port P`` with defaults, and ``--warmup`` seconds of training. Then windows of
``--window`` seconds, one after the other on the same learner:

* **unloaded**: no client;
* **sample**: ``--clients`` client processes each calling ``/sample?n=10000`` in a loop; a 429 is counted and the
  client waits its ``Retry-After`` (what :class:`sketchgen.client.LearnerClient` does by default) before asking again;
* **unloaded 2**: no client;
* **sample+density**: half the clients on ``/sample?n=10000``, half on ``/density?n=10000``, as above;
* **sample, no wait**: as *sample*, but a client asks again at once after a 429 (a client that ignores Retry-After);
* **unloaded 3**: no client. The baseline is the mean of the three unloaded windows, interleaved with the loaded
  ones so that a drift of the training rate over the run (other jobs on the machine) does not pass for the load's
  effect.

The warm-up (90 s after ``/readyz``) lets the drift's one-minute recent window empty of the just-ingested stream:
the learner's main thread runs the drift update between rounds, and in a first run with 20 s of warm-up the first
unloaded window trained at a fifth of the later ones (and at a seventh per CPU second of the main thread).

Per window: the learner's training steps/s, from ``/status`` ``steps`` (counted per step) and from the Prometheus
counter ``sketchgen_learner_steps_total`` (counted per 200-step round, so coarser over a window), both read at the
window's start and end; requests/s, p50/p99 latency of 200 answers per endpoint, answers per status code (429 apart);
CPU seconds of the learner process and of its main thread (the training loop; the rest is torch's pool and the HTTP
layer's threads that sample and encode), from ``/proc``; the clients' CPU. After the windows, the bench
times one ``/sample?n=10000``'s server-side work alone (the generator's forward pass, the JSON encoding) and a
client's decoding, in this process, so CPU demand per answer can be set against the cores.

The client processes run at nice 19 (on this 2-core machine they stand in for clients on other machines; at nice
0 sixteen of them would take the cores from the learner), started once and idle between windows. Outputs
``serving_load.md`` and ``.json`` in ``--out-dir`` (default docs/bench). Each dimension runs once per OpenMP
setting of the learner (``--threads``: torch's default and one thread; ``passive`` = ``OMP_WAIT_POLICY=PASSIVE``). Run:
``.venv/bin/python bench/serving_load.py`` (about 2.5 min of setup + 6 windows per dimension and setting). Smoke
run: ``.venv/bin/python bench/serving_load.py --dims 2 --threads 1 --records 3000 --window 4 --warmup 2 --clients 4
--out-dir /tmp/sl``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_USER_THREADS = {var: os.environ.get(var) for var in THREAD_VARS}
_USER_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")

from bench._report import DOCS, machine, markdown_table, write_report  # noqa: E402
from bench.tabular import cli  # noqa: E402
from bench.tabular_stream import spawn, stop, wait_for_count  # noqa: E402
from sketchgen.client import BusyError, LearnerClient, LearnerError, metric_value  # noqa: E402
from sketchgen.datasets import make_dataset  # noqa: E402
from sketchgen.local_stack import LocalStack, free_port  # noqa: E402

# bench.tabular pins one thread for its own subprocesses on import; give the learner the user's environment back.
for _var, _value in _USER_THREADS.items():
    if _value is None:
        os.environ.pop(_var, None)
    else:
        os.environ[_var] = _value

log = logging.getLogger("bench.serving_load")

DEFAULT_RECORDS = 50_000
DEFAULT_DIMS = (2, 10)
DEFAULT_CLIENTS = 16
DEFAULT_WINDOW = 30.0
DEFAULT_WARMUP = 90.0
SAMPLE_N = 10_000
PILOT_ROWS = 5_000
#: The target: loaded steps/s at least this share of unloaded.
TARGET_SHARE = 0.8
#: Seconds between dispatching a window's clients and its start (they wait for it).
LEAD_SECONDS = 2.0
CLIENT_NICE = 19
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Phase:
    """One window: its name, the endpoint of each client ('' = no clients), and whether clients honour Retry-After."""

    name: str
    endpoints: tuple[str, ...]
    polite: bool = True


def phases(clients: int) -> list[Phase]:
    """The windows of one dimension, in order (module docstring)."""
    half = clients // 2
    return [Phase("unloaded", ()), Phase("sample", ("sample",) * clients), Phase("unloaded 2", ()),
            Phase("sample+density", ("sample",) * (clients - half) + ("density",) * half),
            Phase("sample, no wait", ("sample",) * clients, polite=False), Phase("unloaded 3", ())]


def stream_data(d: int, n: int, seed: int) -> np.ndarray:
    """``n`` rows in dimension ``d``: the spiral for d = 2, else a mixture of 8 Gaussians of random centres."""
    if d == 2:
        return make_dataset("spiral", n, seed=seed)
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, size=(8, d))
    return centres[rng.integers(0, 8, size=n)] + rng.normal(0.0, 0.5, size=(n, d))


# -- the clients (each in its own process) ------------------------------------------------


def client_loop(job: dict) -> dict:
    """One client: ``job['endpoint']`` in a loop from ``start_at`` to ``end_at`` (Unix times); its answers."""
    os.nice(CLIENT_NICE - os.nice(0))
    client = LearnerClient(job["url"], timeout=120, max_retries=0)
    answers: list[tuple[int, float]] = []  # (status, seconds)
    time.sleep(max(0.0, job["start_at"] - time.time()))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    while time.time() < job["end_at"]:
        t0 = time.perf_counter()
        wait = 0.0
        try:
            if job["endpoint"] == "sample":
                client.sample(SAMPLE_N)
            else:
                client.density(n=SAMPLE_N)
            status = 200
        except BusyError as exc:
            status, wait = 429, (exc.retry_after or 1.0) if job["polite"] else 0.0
        except LearnerError as exc:
            status, wait = exc.status or 0, 0.5
        answers.append((status, time.perf_counter() - t0))
        if wait:
            time.sleep(min(wait, max(0.0, job["end_at"] - time.time())))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"endpoint": job["endpoint"], "pid": os.getpid(), "answers": answers, "cpu_seconds": cpu}


def warm(_: int) -> int:
    """A trivial task: each pool process imports this module (numpy, the client) before the first window."""
    os.nice(CLIENT_NICE - os.nice(0))
    return os.getpid()


# -- what the learner did ----------------------------------------------------------------------


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each live thread of process ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def process_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` (all its threads, ended ones included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def probe(learner: LearnerClient, pid: int) -> dict:
    """The learner's steps (``/status`` and the counter), its CPU per thread and in all, and when."""
    status = learner.status()
    counter = metric_value(learner.metrics(), "sketchgen_learner_steps_total")
    return {"time": time.monotonic(), "steps": status["steps"], "counter": counter,
            "threads": thread_cpu(pid), "cpu": process_cpu(pid)}


def learner_figures(pid: int, before: dict, after: dict) -> dict:
    """Steps/s (both sources) and the learner's CPU over a window: in all, and its main thread's (the training loop;
    torch's pool and the HTTP layer's request threads are the rest)."""
    span = after["time"] - before["time"]
    main_cpu = after["threads"].get(pid, 0.0) - before["threads"].get(pid, 0.0)
    total_cpu = after["cpu"] - before["cpu"]
    return {"seconds": span, "steps": after["steps"] - before["steps"],
            "steps_per_s": (after["steps"] - before["steps"]) / span,
            "counter_steps_per_s": (after["counter"] - before["counter"]) / span,
            "learner_cpu_per_s": total_cpu / span, "main_thread_cpu_per_s": main_cpu / span,
            "steps_per_main_cpu_s": (after["steps"] - before["steps"]) / main_cpu if main_cpu > 0 else None,
            "other_threads_cpu_per_s": (total_cpu - main_cpu) / span}


# -- the clients' side of a window ---------------------------------------------------------------


def client_figures(results: list[dict], window: float) -> dict:
    """Per endpoint: requests/s, 200s/s, p50/p99 latency of 200 answers, answers per status; the clients' CPU/s."""
    out: dict = {"clients": len(results), "distinct_processes": len({r["pid"] for r in results}),
                 "clients_cpu_per_s": sum(r["cpu_seconds"] for r in results) / window, "endpoints": {}}
    for endpoint in sorted({r["endpoint"] for r in results}):
        answers = [a for r in results if r["endpoint"] == endpoint for a in r["answers"]]
        ok = np.array([s for code, s in answers if code == 200])
        codes: dict[str, int] = {}
        for code, _ in answers:
            codes[str(code)] = codes.get(str(code), 0) + 1
        out["endpoints"][endpoint] = {
            "requests_per_s": len(answers) / window, "ok_per_s": len(ok) / window, "codes": codes,
            "share_429": codes.get("429", 0) / max(1, len(answers)),
            "p50_ms": float(np.percentile(ok, 50) * 1e3) if len(ok) else None,
            "p99_ms": float(np.percentile(ok, 99) * 1e3) if len(ok) else None,
        }
    return out


def run_window(pool: multiprocessing.pool.Pool, phase: Phase, url: str, learner: LearnerClient, pid: int,
               window: float) -> dict:
    """One window: the clients of ``phase`` from its start to its end, the learner probed at both."""
    start_at = time.time() + LEAD_SECONDS
    end_at = start_at + window
    jobs = [{"url": url, "endpoint": e, "polite": phase.polite, "start_at": start_at, "end_at": end_at}
            for e in phase.endpoints]
    pending = pool.map_async(client_loop, jobs, chunksize=1) if jobs else None
    time.sleep(max(0.0, start_at - time.time()))
    before = probe(learner, pid)
    time.sleep(max(0.0, end_at - time.time()))
    after = probe(learner, pid)
    results = pending.get(timeout=window + 600) if pending is not None else []
    row = {"phase": phase.name, "polite": phase.polite, "learner": learner_figures(pid, before, after),
           **client_figures(results, window)}
    fig = row["learner"]
    log.info("%s: %.1f steps/s (counter %.1f), learner CPU %.2f/s (main thread %.2f), %s", phase.name,
             fig["steps_per_s"], fig["counter_steps_per_s"], fig["learner_cpu_per_s"], fig["main_thread_cpu_per_s"],
             {e: (round(v["ok_per_s"], 1), v["codes"]) for e, v in row["endpoints"].items()})
    return row


# -- one dimension -----------------------------------------------------------------------------


def start_learner(d: int, records: int, warmup: float, work: Path, seed: int) -> tuple:
    """A stream of ``records`` rows in dimension ``d``, ingested, and a learner on it past ``warmup`` seconds.

    Returns (learner process, its client, its URL, ingest seconds).
    """
    work.mkdir(parents=True, exist_ok=True)
    name = f"load-d{d}-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-rows"
    data = stream_data(d, records, seed)
    np.save(work / "pilot.npy", data[:PILOT_ROWS])
    np.save(work / "stream.npy", data)
    cli("create", name, "--estimate-from", str(work / "pilot.npy"))
    cli("produce", topic, "--file", str(work / "stream.npy"))
    worker = spawn("ingest", name, "--topic", topic, log_file=work / "ingest.log")
    try:
        ingest_seconds = wait_for_count(name, records, worker)
    finally:
        stop(worker)
    port = free_port()
    proc = spawn("learn", name, "--port", str(port), log_file=work / "learn.log")
    url = f"http://127.0.0.1:{port}"
    learner = LearnerClient(url, timeout=120)
    try:
        learner.wait_ready(timeout=300)
    except TimeoutError:
        stop(proc)
        raise RuntimeError(f"the learner was not ready in 300 s; see {work / 'learn.log'}") from None
    time.sleep(warmup)
    return proc, learner, url, ingest_seconds


def learner_env(threads: str) -> None:
    """The OpenMP environment of the learner spawned next: ``default`` = the user's (torch's default thread count
    when unset), ``passive`` = that with ``OMP_WAIT_POLICY=PASSIVE`` (idle threads sleep instead of spinning), a
    number = ``OMP_NUM_THREADS``."""
    settings = {"OMP_NUM_THREADS": _USER_THREADS["OMP_NUM_THREADS"], "OMP_WAIT_POLICY": _USER_WAIT_POLICY}
    if threads == "passive":
        settings["OMP_WAIT_POLICY"] = "PASSIVE"
    elif threads != "default":
        settings["OMP_NUM_THREADS"] = threads
    for var, value in settings.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def run_dimension(d: int, threads: str, args: argparse.Namespace, pool: multiprocessing.pool.Pool,
                  work: Path) -> dict:
    """Every window of :func:`phases` on one learner of a ``d``-dimensional stream (``OMP_NUM_THREADS`` ``threads``)."""
    learner_env(threads)
    try:
        proc, learner, url, ingest_seconds = start_learner(d, args.records, args.warmup, work, args.seed)
    finally:
        learner_env("default")
    try:
        windows = [run_window(pool, phase, url, learner, proc.pid, args.window) for phase in phases(args.clients)]
    finally:
        code = stop(proc)
    base = float(np.mean([w["learner"]["steps_per_s"] for w in windows if not w["endpoints"]]))
    base_counter = float(np.mean([w["learner"]["counter_steps_per_s"] for w in windows if not w["endpoints"]]))
    for w in windows:
        w["ratio"] = w["learner"]["steps_per_s"] / base if base else None
        w["counter_ratio"] = w["learner"]["counter_steps_per_s"] / base_counter if base_counter else None
    return {"d": d, "openmp": threads, "records": args.records, "ingest_seconds": ingest_seconds,
            "learner_exit_code": code, "unloaded_steps_per_s": base, "windows": windows, "costs": request_costs(d)}


def request_costs(d: int, repeats: int = 5) -> list[dict]:
    """Median seconds, alone in this process, of one ``/sample?n=10000``'s parts at the learner's default generator.

    The generator's forward pass over 10 000 latents, the JSON encoding (:func:`learner.json_safe.dumps`, as the
    server does it) and a client's decoding (:func:`json.loads` and the array), each the median of ``repeats``;
    with torch's default thread count and with one thread.
    """
    import torch

    from learner import json_safe
    from learner.generator import Generator, GeneratorConfig
    from learner.serving import sample_in_chunks, seeded_rng

    generator = Generator(GeneratorConfig(latent=10, hidden=(128, 128, 128), output=d)).eval()
    default_threads, out = torch.get_num_threads(), []
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        times: dict[str, list[float]] = {"forward": [], "encode": [], "decode": []}
        for _ in range(repeats):
            t0 = time.perf_counter()
            x = sample_in_chunks(generator, SAMPLE_N, seeded_rng(None))
            t1 = time.perf_counter()
            body = json_safe.dumps({"samples": x})
            t2 = time.perf_counter()
            np.asarray(json.loads(body)["samples"], dtype=np.float64)
            t3 = time.perf_counter()
            for key, s in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                times[key].append(s)
        out.append({"torch_threads": threads, "body_bytes": len(body),
                    **{f"{k}_ms": float(np.median(v) * 1e3) for k, v in times.items()}})
    torch.set_num_threads(default_threads)
    return out


# -- the report ------------------------------------------------------------------------------


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _endpoint_cells(w: dict, endpoint: str) -> list[str]:
    e = w["endpoints"].get(endpoint)
    if e is None:
        return ["-", "-", "-", "-"]
    others = ", ".join(f"{k}: {v}" for k, v in sorted(e["codes"].items()) if k not in ("200", "429"))
    return [f"{e['ok_per_s']:.2f}", f"{_ms(e['p50_ms'])} / {_ms(e['p99_ms'])}",
            f"{e['codes'].get('429', 0)} ({100 * e['share_429']:.0f} %)" + (f"; {others}" if others else ""),
            f"{e['requests_per_s']:.1f}"]


def results_table(dims: list[dict]) -> str:
    """One row per dimension and window: training steps/s and its ratio, the endpoints' answers, the CPU split."""
    head = ["d", "OpenMP", "window", "steps/s", "× unloaded", "counter steps/s (×)", "/sample 200/s",
            "/sample p50/p99 ms", "/sample 429s", "/sample req/s", "/density 200/s", "/density p50/p99 ms",
            "/density 429s", "learner CPU/s", "main thread CPU/s", "steps per main-thread CPU s", "clients CPU/s"]
    rows = []
    for dim in dims:
        for w in dim["windows"]:
            fig = w["learner"]
            rows.append([dim["d"], dim["openmp"], w["phase"], f"{fig['steps_per_s']:.1f}", _x(w["ratio"]),
                         f"{fig['counter_steps_per_s']:.1f} ({_x(w['counter_ratio'])})",
                         *_endpoint_cells(w, "sample")[:4], *_endpoint_cells(w, "density")[:3],
                         f"{fig['learner_cpu_per_s']:.2f}", f"{fig['main_thread_cpu_per_s']:.2f}",
                         "-" if fig["steps_per_main_cpu_s"] is None else f"{fig['steps_per_main_cpu_s']:.0f}",
                         f"{w['clients_cpu_per_s']:.2f}"])
    return markdown_table(head, rows)


def costs_table(dims: list[dict]) -> str:
    """Per dimension and torch thread count: one /sample?n=10000's forward pass, JSON encoding and decoding."""
    head = ["d", "torch threads", "forward ms", "JSON encode ms", "client decode ms", "body KB"]
    seen: set[int] = set()
    rows = []
    for dim in dims:
        if dim["d"] in seen:
            continue
        seen.add(dim["d"])
        rows += [[dim["d"], c["torch_threads"], f"{c['forward_ms']:.1f}", f"{c['encode_ms']:.1f}",
                  f"{c['decode_ms']:.1f}", f"{c['body_bytes'] / 1024:.0f}"] for c in dim["costs"]]
    return markdown_table(head, rows)


def verdicts(dims: list[dict]) -> str:
    """One line per dimension: the *sample* window's ratio against the target."""
    lines = []
    for dim in dims:
        w = next(w for w in dim["windows"] if w["phase"] == "sample")
        ok = w["ratio"] is not None and w["ratio"] >= TARGET_SHARE
        lines.append(f"- d = {dim['d']}, OpenMP {dim['openmp']}: "
                     f"{w['learner']['steps_per_s']:.1f} steps/s with {w['clients']} clients on /sample?n={SAMPLE_N} "
                     f"against {dim['unloaded_steps_per_s']:.1f} unloaded: **{_x(w['ratio'])}×**, "
                     f"{'meets' if ok else '**misses**'} the target (≥ {TARGET_SHARE:g}×)")
    return "\n".join(lines)


def body_text(dims: list[dict], args: argparse.Namespace, wall: float) -> str:
    """The markdown body: setup, verdicts, the tables."""
    load = os.getloadavg()
    return (
        f"The machine ({os.cpu_count()} cores) was **shared** with other jobs while this ran (load average at the "
        f"end {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}); rates are lower and noisier than on an idle machine, "
        f"which is why the unloaded and loaded windows run on the same learner one after the other. Wall time "
        f"{wall / 60:.1f} min.\n\n"
        f"Per dimension: a stream of {args.records} records ingested on the embedded stack, `sketchgen learn` with "
        f"defaults ({args.warmup:g} s of warm-up after `/readyz`), then windows of {args.window:g} s in the table's "
        f"order: {args.clients} clients on `/sample?n={SAMPLE_N}`, half of them on `/density?n={SAMPLE_N}` "
        f"instead, the same {args.clients} on `/sample` retrying at once after a 429, and unloaded windows "
        f"interleaved. Clients are processes "
        f"at nice {CLIENT_NICE} using `sketchgen.client.LearnerClient`; except in *no wait*, a 429 is counted and "
        f"followed by its `Retry-After` wait. *× unloaded* = steps/s over the mean of the three unloaded windows "
        f"(steps from `/status`, per step; the counter `sketchgen_learner_steps_total` moves per 200-step round, "
        f"so its ratio is coarser). Latencies are of 200 answers; *req/s* counts every answer. CPU/s = CPU seconds "
        f"per second of the learner process (both cores = 2.0) and of its main thread, which runs the training "
        f"loop (the rest: torch's pool, and the HTTP layer's threads that sample and encode), read from "
        f"`/proc`; *steps per main-thread CPU s* is the training loop's progress per CPU second it got, which the "
        f"other jobs on the machine change much less than steps/s.\n\n"
        f"**Target** (training steps/s within 20 % of unloaded with {args.clients} concurrent "
        f"`/sample?n={SAMPLE_N}` clients):\n\n{verdicts(dims)}\n\n{results_table(dims)}\n\n"
        f"One `/sample?n={SAMPLE_N}` alone (the default generator, this process, median of 5; the learner pays the "
        f"forward pass and the encoding, the client the decoding):\n\n{costs_table(dims)}\n"
    )


def write_outputs(dims: list[dict], args: argparse.Namespace, command: str, wall: float) -> None:
    """serving_load.md (through write_report for docs/bench) and serving_load.json in ``--out-dir``."""
    title = f"Serving load: training steps/s with {args.clients} clients sampling the learner, against unloaded"
    body = body_text(dims, args, wall)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() == DOCS.resolve():
        write_report("serving_load", title, body, command)
    else:
        text = f"# {title}\n\nMeasured with `{command}` on {machine()}.\n\n{body}\n"
        print(text)
        (out / "serving_load.md").write_text(text)
    figures = {"command": command, "machine": machine(), "shared_machine": True, "load_average": os.getloadavg(),
               "records": args.records, "window_seconds": args.window, "clients": args.clients,
               "sample_n": SAMPLE_N, "client_nice": CLIENT_NICE, "target_share": TARGET_SHARE,
               "wall_seconds": wall, "dims": dims}
    (out / "serving_load.json").write_text(json.dumps(figures, indent=1))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: dimensions, records, clients, window and warm-up seconds, output and work directories."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", default=",".join(map(str, DEFAULT_DIMS)), help="comma-separated dimensions")
    p.add_argument("--records", type=int, default=DEFAULT_RECORDS, help="records streamed per dimension")
    p.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, help="concurrent client processes")
    p.add_argument("--window", type=float, default=DEFAULT_WINDOW, help="seconds per window")
    p.add_argument("--warmup", type=float, default=DEFAULT_WARMUP, help="seconds of training before the windows")
    p.add_argument("--threads", default="default,1",
                   help="the learner's OpenMP settings, one run of every dimension each: 'default' (the user's, "
                        "torch's default thread count when unset), 'passive' (OMP_WAIT_POLICY=PASSIVE) or a number "
                        "(OMP_NUM_THREADS); default: default,1")
    p.add_argument("--out-dir", default=str(DOCS))
    p.add_argument("--workdir", default=None, help="working files (default: a new temporary directory)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.dims = [int(v) for v in args.dims.split(",")]
    args.threads = args.threads.split(",")
    if any(t not in ("default", "passive") and not t.isdigit() for t in args.threads):
        p.error("--threads takes 'default', 'passive' or numbers, comma-separated")
    if args.clients < 2 or args.window <= 0 or any(d < 2 for d in args.dims):
        p.error("--clients must be >= 2, --window > 0 and every d >= 2")
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="serving-load-")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    command = "python bench/serving_load.py" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    started = time.perf_counter()
    dims: list[dict] = []
    with multiprocessing.get_context("spawn").Pool(args.clients) as pool, LocalStack() as stack:
        pool.map(warm, range(args.clients), chunksize=1)
        os.environ["SKETCHGEN_KAFKA"], os.environ["SKETCHGEN_REDIS"] = stack.bootstrap, stack.redis_url
        for threads in args.threads:
            for d in args.dims:
                dims.append(run_dimension(d, threads, args, pool, Path(args.workdir) / f"d{d}-omp{threads}"))
                write_outputs(dims, args, command, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
