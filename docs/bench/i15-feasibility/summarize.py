#!/usr/bin/env python3
"""summarize.py one METHOD RATE ROUND PREFIX -> one JSON line; table RESULTS.jsonl -> medians."""
import json, re, statistics, sys

def one(m, rate, rnd, P):
    res = {"method": m, "rate": int(rate), "round": int(rnd)}
    try:
        j = json.load(open(P + ".iperf.json")); e = j["end"]
        res["gbps"] = e["sum_received"]["bits_per_second"] / 1e9
        res["retr"] = e["sum_sent"].get("retransmits")
    except Exception as ex:
        res["err"] = "iperf: %s" % ex
    t = [float(x) for x in re.findall(r"time=([\d.]+) ms", open(P + ".ping").read())]
    if t:
        t.sort()
        res["ping_n"] = len(t)
        res["p50"] = t[len(t) // 2]
        res["p99"] = t[min(len(t) - 1, int(len(t) * 0.99))]
    try:
        s = json.loads(open(P + ".stats").read())
        res["bpf"] = s["stats"]
        for p in ("to_tap", "from_tap"):
            if s[p]["run_cnt"]:
                res[p + "_ns"] = s[p]["run_time_ns"] / s[p]["run_cnt"]
    except Exception as ex:
        res["err_stats"] = str(ex)
    print(json.dumps(res))

def table(f):
    rows = [json.loads(l) for l in open(f)]
    keys = []
    for r in rows:
        k = (r["rate"], r["method"])
        if k not in keys:
            keys.append(k)
    keys.sort(key=lambda k: (k[0], k[1]))
    med = lambda v: statistics.median(v) if v else float("nan")
    print("%-6s %-13s %3s %8s %7s %7s %8s %8s %6s %8s %8s" % ("limit", "method", "n", "Gbps", "%lim", "retr", "p50ms", "p99ms", "pings", "to_tap", "from_tap"))
    for k in keys:
        rs = [r for r in rows if (r["rate"], r["method"]) == k and "gbps" in r]
        if not rs:
            print(k, "no data"); continue
        g = med([r["gbps"] for r in rs])
        lim = "%.0f%%" % (100 * g * 1e9 / k[0]) if k[0] else "-"
        rate = {0: "unlim", 100000000: "100M", 1000000000: "1G", 5000000000: "5G"}.get(k[0], k[0])
        print("%-6s %-13s %3d %8.3f %7s %7.0f %8.3f %8.3f %6.0f %8.0f %8.0f" % (rate, k[1], len(rs), g, lim,
              med([r["retr"] or 0 for r in rs]), med([r.get("p50", float("nan")) for r in rs]),
              med([r.get("p99", float("nan")) for r in rs]), med([r.get("ping_n", 0) for r in rs]),
              med([r.get("to_tap_ns", 0) for r in rs]), med([r.get("from_tap_ns", 0) for r in rs])))

if __name__ == "__main__":
    if sys.argv[1] == "one":
        one(*sys.argv[2:6])
    else:
        table(sys.argv[2])
