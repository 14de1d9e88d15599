#!/usr/bin/env python3
"""summarize.py one DIR VARIANT RATE ROUND PREFIX -> one JSON line;
   summarize.py table RESULTS.jsonl -> medians per (dir, rate, variant)."""
import json, re, statistics, sys

def load(P):
    cls = {}
    for m in re.finditer(r"class htb (\S+) .*?\n Sent (\d+) bytes (\d+) pkt \(dropped (\d+), overlimits (\d+)",
                         open(P + ".cls").read()):
        cls[m.group(1)] = {"bytes": int(m.group(2)), "packets": int(m.group(3)),
                           "drops": int(m.group(4)), "overlimits": int(m.group(5))}
    return {"cls": cls, "qd": json.load(open(P + ".qd")), "stat": open(P + ".stat").read()}

def cls(snap, h):
    return snap["cls"].get(h)

def rootq(snap):
    for q in snap["qd"]:
        if q.get("root"):
            return q
    return None

def cpu(s):
    v = [int(x) for x in s.split()[1:]]
    return sum(v), v[3] + v[4]

def one(d, v, rate, rnd, P):
    res = {"dir": d, "var": v, "rate": int(rate), "round": int(rnd)}
    dur = 5.0
    try:
        j = json.load(open(P + ".iperf.json")); e = j["end"]
        res["gbps"] = e["sum_received"]["bits_per_second"] / 1e9
        res["retr"] = e["sum_sent"].get("retransmits")
        dur = e["sum_received"]["seconds"]
    except Exception as ex:
        res["err"] = "iperf: %s" % ex
    t = sorted(float(x) for x in re.findall(r"time=([\d.]+) ms", open(P + ".ping").read()))
    if t:
        res["ping_n"] = len(t)
        res["p50"] = t[len(t) // 2]
        res["p99"] = t[min(len(t) - 1, int(len(t) * 0.99))]
    try:
        s0 = load(P + ".s0"); s1 = load(P + ".s1")
        a, b = cls(s0, "1:1"), cls(s1, "1:1")
        if a and b:
            res["wire_gbps"] = (b["bytes"] - a["bytes"]) * 8 / dur / 1e9
        for h in ("1:10", "1:2"):
            a, b = cls(s0, h), cls(s1, h)
            if a and b:
                res["pk_" + h] = b["packets"] - a["packets"]
        q0, q1 = rootq(s0), rootq(s1)
        if q0 and q1 and q0["kind"] == "htb":
            res["drops"] = q1["drops"] - q0["drops"]
            res["overlimits"] = q1["overlimits"] - q0["overlimits"]
        (t0, i0), (t1, i1) = cpu(s0["stat"]), cpu(s1["stat"])
        res["cpu_pct"] = 100.0 * ((t1 - t0) - (i1 - i0)) / (t1 - t0) * 2  # of 1 CPU (2 CPUs = 200)
    except Exception as ex:
        res["err_snap"] = str(ex)
    print(json.dumps(res))

def table(f):
    rows = [json.loads(l) for l in open(f)]
    keys = []
    for r in rows:
        k = (r["dir"], r["rate"], r["var"])
        if k not in keys:
            keys.append(k)
    order = {"idle": -1, "base": 0, "A": 1, "B2": 2, "B5": 3, "B10": 4, "B5p": 5, "B5s": 6, "B2p": 6.5,
             "C": 7, "C2p": 8, "C2b": 9}
    keys.sort(key=lambda k: (k[0], k[1], order.get(k[2], 9), k[2]))
    nan = float("nan")
    med = lambda v: statistics.median(v) if v else nan
    print("%-3s %-5s %-4s %2s %7s %5s %7s %5s %6s %7s %7s %7s %5s %6s" % (
        "dir", "limit", "var", "n", "Gbps", "%lim", "wire", "%lim", "retr", "p50ms", "p99ms",
        "drops", "cpu%", "pk1:10"))
    for k in keys:
        rs = [r for r in rows if (r["dir"], r["rate"], r["var"]) == k and ("gbps" in r or r["var"] == "idle")]
        if not rs:
            print(k, "no data"); continue
        g = med([r["gbps"] for r in rs if "gbps" in r]); w = med([r["wire_gbps"] for r in rs if "wire_gbps" in r])
        pl = lambda x: ("%.0f%%" % (100 * x * 1e9 / k[1])) if k[1] and x == x else "-"
        rate = {0: "unlim", 100000000: "100M", 1000000000: "1G", 5000000000: "5G"}.get(k[1], k[1])
        print("%-3s %-5s %-4s %2d %7.3f %5s %7.3f %5s %6.0f %7.2f %7.2f %7.0f %5.0f %6.0f" % (
            k[0], rate, k[2], len(rs), g, pl(g), w, pl(w),
            med([r.get("retr") or 0 for r in rs]), med([r.get("p50", nan) for r in rs]),
            med([r.get("p99", nan) for r in rs]), med([r.get("drops", 0) for r in rs]),
            med([r.get("cpu_pct", nan) for r in rs]), med([r.get("pk_1:10", 0) for r in rs])))

if __name__ == "__main__":
    if sys.argv[1] == "one":
        one(*sys.argv[2:7])
    else:
        table(sys.argv[2])
