#!/usr/bin/env python3
"""analyze.py PREFIX: ns/frame for each step from perf report --children, total samples."""
import json, subprocess, sys
P = sys.argv[1]
t0 = [int(x) for x in open(P + ".tap0").read().split()]
t1 = [int(x) for x in open(P + ".tap1").read().split()]
frames, dropped = t1[0] - t0[0], t1[1] - t0[1]
rep = subprocess.run(["perf", "report", "-i", P + ".perf.data", "--children", "--sort", "sym",
                      "--stdio", "-q", "-g", "none"], capture_output=True, text=True).stdout
open(P + ".report.txt", "w").write(rep)
scr = subprocess.run(["perf", "script", "-i", P + ".perf.data", "-F", "cpu"],
                     capture_output=True, text=True).stdout
total = sum(1 for l in scr.splitlines() if l.strip())
cm = subprocess.run(["perf", "script", "-i", P + ".perf.data", "-F", "comm"],
                    capture_output=True, text=True).stdout
comms = {}
for l in cm.splitlines():
    c = l.strip()
    if not c: continue
    c = "rustc/cargo/build" if c.startswith(("rustc", "opt cgu", "lto cgu", "cargo", "cc", "ld")) else c
    c = "relay" if c.startswith("relay") else c
    comms[c] = comms.get(c, 0) + 1
KER = ["process_backlog", "net_rx_action", "__napi_poll", "veth_poll", "tc_run", "__bpf_redirect",
       "sch_direct_xmit", "tun_net_xmit", "xdp_do_redirect", "tun_xdp_xmit", "veth_xdp_rcv_skb",
       "veth_xdp_rcv", "xdp_do_flush", "__dev_flush", "bq_xmit_all", "veth_xmit", "skb_pp_cow_data",
       "tun_do_read", "tun_put_user", "tun_put_user_xdp", "__netif_receive_skb_core",
       "do_xdp_generic", "netif_receive_skb_list_internal", "napi_complete_done",
       "tun_chr_read_iter", "consume_skb", "enqueue_to_backlog", "page_pool_alloc_frag_netmem",
       "tun_chr_write_iter", "tun_get_user", "udp_sendmsg", "udp_rcv", "__udp4_lib_rcv"]
PROGS = ["netshim_redirect", "xdp_to_tap"]
out = {}
for line in rep.splitlines():
    cols = line.split()
    if len(cols) < 3 or not cols[0].endswith('%'):
        continue
    pct = float(cols[0][:-1]); sym = cols[-1]; base = sym.split('.')[0]
    key = None
    if base in KER: key = base
    elif base.startswith("bpf_prog_"):
        for p in PROGS:
            if base.endswith("_" + p): key = "prog:" + p
    if key and key not in out:
        out[key] = pct / 100 * total * 250000 / frames if frames else None
res = {"frames": frames, "tap_tx_dropped": dropped, "samples": total,
       "total_ns_per_frame": total * 250000 / frames if frames else None, "steps": out,
       "comm_samples": dict(sorted(comms.items(), key=lambda kv: -kv[1])[:8])}
own = sum(v for k, v in comms.items() if k in ("iperf3", "relay", "vm-standin") or k.startswith("ksoftirqd"))
res["own_ns_per_frame"] = own * 250000 / frames if frames else None
try:
    j = json.load(open(P + ".iperf.json"))
    s = j["end"]["sum"]
    res["iperf_lost"] = s.get("lost_packets"); res["iperf_packets"] = s.get("packets")
except Exception as e:
    res["iperf_err"] = str(e)[:100]
print(json.dumps(res))
