#!/usr/bin/env python3
"""summarize.py [results.jsonl]: per-round table and medians (ns/frame from perf, rates)."""
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1] if len(sys.argv) > 1 else "/work/wt/xdp/out/run/results.jsonl")]
COLS = ["process_backlog", "net_rx_action", "__napi_poll", "veth_poll", "tc_run", "prog:netshim_redirect",
        "__bpf_redirect", "sch_direct_xmit", "tun_net_xmit", "prog:xdp_to_tap", "veth_xdp_rcv_skb",
        "skb_pp_cow_data", "xdp_do_redirect", "__dev_flush", "tun_xdp_xmit", "tun_do_read", "tun_chr_read_iter", "tun_get_user", "veth_xmit", "udp_sendmsg", "consume_skb"]
def g(r, k):
    v = r["paced"]["steps"].get(k); return v
def line(r):
    p = r["paced"]
    d = {"kpps": p["frames"] / 3e3, "tapdrop": p["tap_tx_dropped"],
         "lost%": 100 * (p.get("iperf_lost") or 0) / max(p.get("iperf_packets") or 1, 1)}
    for k in COLS: d[k] = g(r, k)
    d["total"] = p["total_ns_per_frame"]; d["own"] = p.get("own_ns_per_frame")
    d["udp0_kpps"] = r["udp0"].get("rx_pps", 0) / 1e3 if "rx_pps" in r["udp0"] else None
    d["tcp_gbps"] = r["tcp"].get("gbps")
    d["tcp_retr"] = r["tcp"].get("retr")
    return d
ph = {}
for r in rows:
    ph.setdefault(r["phase"], []).append((r["round"], line(r)))
keys = list(line(rows[0]).keys())
for k in keys:
    out = [f"{k:22s}"]
    for name in ["Adef", "A", "B"]:
        vals = [d[k] for _, d in ph.get(name, [])]
        nums = [v for v in vals if v is not None]
        fmt = lambda v: "-" if v is None else (f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}")
        med = st.median(nums) if nums else None
        out.append(f"{name}: " + " ".join(fmt(v) for v in vals) + f" | med {fmt(med)}")
    print("  ".join(out))
