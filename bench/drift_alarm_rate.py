"""The learner's drift alarms at their default setting: false alarms per day on stationary streams, and delays.

The drift score per 10 s bucket comes from :mod:`bench.drift_eval`'s simulation (the ``ours`` detector: the
last 60 s, scanned from its newest bucket back, against the 600 s before, exactly the store's windows) on its
stationary laws (gaussian, mixture, student_t, typed) at several record rates. Each score is fed, with its time
and the whole recent window's score beside it (for the CUSUM), to :class:`learner.drift_alarm.DriftAlarm` as the
learner does, and the alarms are counted per detector (threshold, CUSUM) as rising edges. The configured rate
``F`` (default 1 a day, the learner's default) is the target; a second setting (``--second-rate``, 10 a day)
shows that the alarms follow it.

Delays: an alarm calibrated on the first simulated day of a stationary stream of the change's base law is
copied into each trial of :data:`bench.drift_eval.CHANGES` (same rates, seeded), and the first alarm after
the change is its detection (missed if none within ``--horizon``); the field ranked first there is read as the
learner reads it (:func:`learner.drift_monitor.fields_window`): on the scan's best window when the threshold
alarm fired, else on the whole recent window.

Run: ``nice -n 19 .venv/bin/python bench/drift_alarm_rate.py [--days 7] [--trials 20] [--rates 10,100,1000]``
Output: docs/bench/drift_alarm_rate.md and .json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import ClassVar

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import drift_eval as de  # noqa: E402
from bench._report import DOCS, markdown_table, write_report  # noqa: E402
from learner.drift import scan  # noqa: E402
from learner.drift_alarm import DriftAlarm  # noqa: E402
from learner.drift_fields import field_scores  # noqa: E402
from learner.drift_monitor import fields_window  # noqa: E402
from sketch_store.sketch import Sketch, merge_all  # noqa: E402

DETECTORS = ("threshold", "cusum")
#: The field each single-field change moves (a category change moves the typed stream's ``cat``).
CHANGED_FIELD = {"mean_one": "x0", "var_one": "x0", "category": "cat"}


class OursTopField(de.Ours):
    """:class:`bench.drift_eval.Ours`, also ranking the fields at every bucket (:func:`field_scores`).

    After each update the field ranked first on the scan's best window and on the whole recent window (the two
    windows :func:`learner.drift_monitor.fields_window` chooses between, by the detector alarming) are appended
    to the class-level ``OursTopField.tops`` as a pair, which each new instance empties (the harness builds its
    detectors itself; trials run one at a time).
    """

    tops: ClassVar[list[tuple[str | None, str | None]]] = []

    def __init__(self, setup: de.StreamSetup, cfg: de.Config) -> None:
        super().__init__(setup, cfg)
        self.spec = setup.spec
        OursTopField.tops = []  # this trial's

    def update(self, bucket_sum: np.ndarray, bucket_count: int, rows: de.Rows, want_score: bool = True) -> float:
        score = super().update(bucket_sum, bucket_count, rows, want_score)
        tops: tuple[str | None, str | None] = (None, None)
        if want_score and np.isfinite(score):
            buckets = list(self.sums)
            ref, recent = self._sketch(buckets[: self.cfg.n_reference]), buckets[self.cfg.n_reference :]
            newest_first = [Sketch(t, c, self.fp) for t, c in reversed(recent)]
            _, length = scan(newest_first, ref)
            tops = (self._top(merge_all(newest_first[:length]), ref), self._top(merge_all(newest_first), ref))
        OursTopField.tops.append(tops)
        return score

    def _top(self, recent: Sketch, reference: Sketch) -> str | None:
        ranked = field_scores(recent, reference, self.spec)
        return ranked[0].name if ranked else None


def replay(alarm: DriftAlarm, scores: dict[str, np.ndarray], bucket: float, start: float = 0.0,
           end: int | None = None) -> dict[str, np.ndarray]:
    """Feed the finite scan scores ``scores["ours"]`` with the whole window's ``scores["ours_window"]`` beside them
    (one per bucket, from time ``start``, up to bucket ``end``), as the learner does; per detector, whether it
    alarms."""
    scan, whole = scores["ours"][:end], scores["ours_window"][:end]
    on = {name: np.zeros(len(scan), bool) for name in (*DETECTORS, "any")}
    for b, score in enumerate(scan):
        if np.isfinite(score):
            state = alarm.update(start + b * bucket, float(score), float(whole[b]) if np.isfinite(whole[b]) else None)
            for name in DETECTORS:
                on[name][b] = name in state.by
            on["any"][b] = state.alarm
    return on


def rising(on: np.ndarray) -> int:
    """Rising edges of a boolean series."""
    return int(np.count_nonzero(np.diff(np.concatenate([[False], on]).astype(int)) == 1))


def stationary(law: str, rate: float, days: float, per_day: list[float], cfg: de.Config,
               seed: int) -> tuple[dict[str, object], DriftAlarm]:
    """Alarms per day of each setting on ``days`` of a stationary stream; the default alarm after day one."""
    scores = de.stationary_scores(law, rate, days, cfg, seed, detectors=(de.Ours, de.OursWindow))
    finite = int(np.isfinite(scores["ours"]).sum())
    row: dict[str, object] = {"law": law, "rate": rate, "days": finite * cfg.bucket / de.DAY}
    day_one = round(de.DAY / cfg.bucket) + cfg.n_recent + cfg.n_reference
    calibrated = DriftAlarm(per_day[0], cfg.recent)
    replay(calibrated, scores, cfg.bucket, end=day_one)
    for f in per_day:
        alarm = DriftAlarm(f, cfg.recent)
        on = replay(alarm, scores, cfg.bucket)
        row[f"F={f:g}"] = {name: rising(v) / row["days"] for name, v in on.items()} | {
            "threshold_end": alarm.threshold, "calibration_windows": alarm.null.windows}
    return row, calibrated


def delays(kind: str, rate: float, calibrated: DriftAlarm, trials: int, cfg: de.Config, warmup: float,
           horizon: float) -> list[tuple[float, str | None]]:
    """Per trial: seconds from the change to the first alarm of a copy of ``calibrated`` (NaN: missed), and the
    field ranked first at that alarm."""
    out = []
    at = cfg.n_recent + cfg.n_reference + round(warmup / cfg.bucket)  # change_scores' first bucket after it
    for trial in range(trials):
        post = de.change_scores(kind, rate, cfg, 1000 + trial, warmup, horizon,
                                detectors=(OursTopField, de.OursWindow))
        tops = OursTopField.tops[at:]
        alarm = copy.deepcopy(calibrated)
        start = 10 * de.DAY  # after its calibration day, whatever time it stopped at
        on = replay(alarm, post, cfg.bucket, start)
        hit = np.flatnonzero(on["any"])
        if not len(hit):
            out.append((float("nan"), None))
            continue
        window = fields_window(("threshold",) if on["threshold"][hit[0]] else (), 1, 2) - 1  # 0: scan's, 1: whole
        out.append((float((hit[0] + 1) * cfg.bucket), tops[hit[0]][window]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--rates", default="10,100,1000")
    ap.add_argument("--laws", default=",".join(de.LAWS))
    ap.add_argument("--per-day", type=float, default=1.0, help="the setting judged (the learner's default)")
    ap.add_argument("--second-rate", type=float, default=10.0, help="a second setting, to show the rate follows")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--kinds", default=",".join(de.CHANGES))
    ap.add_argument("--warmup", type=float, default=300.0)
    ap.add_argument("--horizon", type=float, default=1800.0)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    cfg = de.Config()
    rates = [float(r) for r in args.rates.split(",")]
    per_day = [args.per_day, args.second_rate]
    started = time.perf_counter()
    rows, calibrated = [], {}
    for law in args.laws.split(","):
        for rate in rates:
            row, alarm = stationary(law, rate, args.days, per_day, cfg, args.seed)
            rows.append(row)
            calibrated[(law, rate)] = alarm
            print(f"[{time.perf_counter() - started:.0f} s] {law} {rate:g}/s: {row}", flush=True)
    delay_rows = []
    for kind in args.kinds.split(","):
        base = de.CHANGES[kind][0]
        for rate in rates:
            if (base, rate) not in calibrated:
                continue
            found = delays(kind, rate, calibrated[(base, rate)], args.trials, cfg, args.warmup, args.horizon)
            d = np.array([delay for delay, _ in found])
            hit = d[np.isfinite(d)]
            tops = [top for delay, top in found if np.isfinite(delay)]
            delay_rows.append({"kind": kind, "rate": rate, "median_delay": float(np.median(hit)) if len(hit) else None,
                               "miss": float(np.mean(~np.isfinite(d))), "delays": d.tolist(), "top_fields": tops})
            print(f"[{time.perf_counter() - started:.0f} s] {kind} {rate:g}/s: {delay_rows[-1]['median_delay']} s, "
                  f"miss {delay_rows[-1]['miss']:.0%}", flush=True)
    wall = time.perf_counter() - started
    result = {"config": vars(args) | {"wall_seconds": wall}, "stationary": rows, "delays": delay_rows}
    (DOCS / "drift_alarm_rate.json").write_text(json.dumps(result, indent=1, default=str))
    write_report("drift_alarm_rate", "Drift alarms at their default setting: false alarms per day and delays",
                 report(result, per_day), " ".join(["python", "bench/drift_alarm_rate.py", *sys.argv[1:]]))


def report(result: dict, per_day: list[float]) -> str:
    """The markdown body: alarms per day against the configured rate, then the delays per change kind."""
    head = ["law", "rate (rec/s)", "days"]
    for f in per_day:
        head += [f"F={f:g}: threshold", "CUSUM", "**all**", "ratio to F"]
    table = []
    for row in result["stationary"]:
        line = [row["law"], f"{row['rate']:g}", f"{row['days']:.1f}"]
        for f in per_day:
            r = row[f"F={f:g}"]
            line += [f"{r['threshold']:.2f}", f"{r['cusum']:.2f}", f"**{r['any']:.2f}**", f"{r['any'] / f:.2f}"]
        table.append(line)
    ratios = [row[f"F={f:g}"]["any"] / f for row in result["stationary"] for f in per_day]
    delays_table = [[d["kind"], f"{d['rate']:g}", "–" if d["median_delay"] is None else f"{d['median_delay']:.0f} s",
                     f"{d['miss']:.0%}", top_share(d)] for d in result["delays"]]
    ranking = []
    for kind, field in CHANGED_FIELD.items():
        tops = [t for d in result["delays"] if d["kind"] == kind for t in d["top_fields"]]
        if tops:
            first = sum(t == field for t in tops)
            ranking.append([kind, field, len(tops), f"{first} ({first / len(tops):.1%})"])
    cfg = result["config"]
    return (
        f"Stationary streams of bench/drift_eval.py's laws, {cfg['days']:g} simulated days each, scores every 10 s "
        f"(60 s recent vs 600 s reference, m = 1000), fed to `DriftAlarm` as the learner does. Alarms per day "
        f"(rising edges) by detector; the configured total F is split evenly between them. Wall time "
        f"{cfg['wall_seconds']:.0f} s.\n\n"
        + markdown_table(head, table)
        + f"\n\nRatio of measured to configured alarms per day: {min(ratios):.2f}–{max(ratios):.2f}.\n\n"
        f"## Delay after a change (F = {per_day[0]:g}, calibrated on one stationary day)\n\n"
        f"{cfg['trials']} trials per change kind and rate; median delay over detected trials, and the share "
        f"missed within {cfg['horizon']:g} s. Change kinds as in docs/bench/drift_eval.md.\n\n"
        + markdown_table(["change", "rate (rec/s)", "median delay", "missed", "moved field ranked first"],
                         delays_table)
        + "\n\n## The moved field at detection\n\nSingle-field changes, all rates pooled: at each detection, is the "
        "changed field the first of `learner/drift_fields.py`'s ranking (what `/status` and the alert name)?\n\n"
        + markdown_table(["change", "changed field", "detections", "ranked first"], ranking)
        + "\n"
    )


def top_share(row: dict) -> str:
    """Share of a single-field change's detections that rank the changed field first ("" for other kinds)."""
    field, tops = CHANGED_FIELD.get(row["kind"]), row["top_fields"]
    if field is None or not tops:
        return ""
    return f"{sum(t == field for t in tops) / len(tops):.0%}"


if __name__ == "__main__":
    main()
