#!/usr/bin/env python3
"""Median and spread of several bench/compare.py --json runs.

    for i in 1 2 3; do python bench/compare.py --json > run$i.json; done
    python bench/runs.py run1.json run2.json run3.json

For every row of every workload: the median over the runs of the row's
median, its range [min-max], and the same for the ratio (pylog / peer),
with how many runs met the target. The load average at the start and end
of each run is listed: runs on a busy machine are not comparable.
"""
import json
import statistics
import sys

from compare import fmt


def rng(xs, f):
    return f"{f(min(xs))}-{f(max(xs))}" if len(xs) > 1 else ""


def merge(docs):
    out = [f"{len(docs)} runs of bench/compare.py ({docs[0]['mode']}); "
           "per row: median of the runs' medians [min-max], ratio likewise "
           "(pylog / peer), runs meeting the target"]
    for i, d in enumerate(docs, 1):
        out.append(f"  run {i}: {d['seconds']} s, load average at start "
                   f"{d['loadavg_start']}, at end {d['loadavg_end']}")
    out.append("")
    by_id = {}
    for d in docs:
        for w in d["workloads"]:
            by_id.setdefault(w["id"], []).append(w)
    for wid, ws in by_id.items():
        out.append(f"{wid}  {ws[0]['title']}")
        rows = {}
        for w in ws:
            for r in w["rows"]:
                rows.setdefault((r["metric"], r["label"]), []).append(r)
        for (_metric, label), rs in rows.items():
            unit = rs[0].get("unit", "")
            meds = [r["median"] for r in rs if r.get("median") is not None]
            if not meds:
                out.append(f"    {label:<42} {rs[0].get('skipped', '-')}")
                continue
            m = statistics.median(meds)
            line = (f"    {label:<42} {fmt(m, unit):>9} {unit:<6}"
                    f" [{rng(meds, lambda v: fmt(v, unit))}]")
            ratios = [r["ratio"] for r in rs if "ratio" in r]
            if ratios:
                line += (f"  ratio {statistics.median(ratios):.2f}x "
                         f"[{rng(ratios, lambda v: f'{v:.2f}')}]")
            dev = [r["device_per_byte"] for r in rs
                   if r.get("device_per_byte") is not None]
            if dev:     # W10: the device's figure next to the process's
                line += (f"  device {statistics.median(dev):.2f} "
                         f"[{rng(dev, lambda v: f'{v:.2f}')}]")
            passes = [r["pass"] for r in rs if "pass" in r]
            if passes:
                tgt = rs[0].get("target", rs[0].get("target_text"))
                tgt = tgt if isinstance(tgt, str) else f">= {tgt:g}x"
                line += f"  target {tgt}: {sum(passes)}/{len(passes)} runs"
            out.append(line)
        out.append("")
    return "\n".join(out)


def main(argv=None):
    paths = (argv if argv is not None else sys.argv[1:])
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    docs = []
    for p in paths:
        with open(p) as f:
            docs.append(json.load(f))
    print(merge(docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
