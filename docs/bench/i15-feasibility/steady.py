#!/usr/bin/env python3
"""steady.py OUTDIR: per (rate, method) median over runs of the mean iperf3 interval rate
after the first second (removes the policer's initial full bucket / EDT-without-fq horizon)."""
import glob, json, re, statistics, sys
acc = {}
for f in sorted(glob.glob(sys.argv[1] + "/*.iperf.json")):
    m = re.match(r".*/(.+)-(\d+)-r(\d+)\.iperf\.json", f)
    try:
        iv = [i["sum"]["bits_per_second"] for i in json.load(open(f))["intervals"]][1:]
    except Exception:
        continue
    acc.setdefault((int(m[2]), m[1]), []).append(sum(iv) / len(iv) / 1e9)
for (r, m), v in sorted(acc.items()):
    pct = "%.0f%%" % (100 * statistics.median(v) * 1e9 / r) if r else "-"
    print("%-11s %-12s steady(1-5s) %.3f Gbps %s" % (r, m, statistics.median(v), pct))
