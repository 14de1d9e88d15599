#!/bin/bash
# run.sh [ROUNDS]: interleaved rounds of  Adef (TC only, client veth default offloads),
# A (TC only, client `ethtool -K c tx off`), B (TC + XDP redirect_map on sandbox eth0, client tx off).
# Per phase: paced UDP 64 B @100 kpps under perf (paced.sh), unpaced UDP 64 B 5 s, TCP 1 stream 5 s.
# Every timed part runs under `flock /tmp/bench.lock`.
ROUNDS=${1:-4}
D=/work/wt/xdp/out/run; rm -rf $D; mkdir -p $D
. /work/wt/xdp/lib.sh
trap cleanup EXIT INT TERM
topo_up || exit 1
R=$D/results.jsonl
ipc() { ip netns exec $NS_C "$@"; }
nst() { ip netns exec $NS_G nstat -a -j 2>/dev/null | python3 -c 'import json,sys;k=json.load(sys.stdin)["kernel"];print(json.dumps({x:k.get(x,0) for x in ["UdpInDatagrams","UdpRcvbufErrors","UdpInCsumErrors","TcpInCsumErrors","TcpInErrs"]}))'; }
shim() { $NETSHIM stats --netns /run/netns/$NS_SB --json 2>/dev/null > $1; }

phase() { # NAME TX(on|off) XDP(0|1) ROUND
  local n=$1 tx=$2 x=$3 r=$4 P=$D/r$4-$1
  ipc ethtool -K c tx $tx 2>/dev/null
  [ "$x" = 1 ] && { xdp_on drv || return 1; }
  sleep 0.5
  ipc ethtool -k c | grep -E "^(tx-checksumming|tcp-segmentation-offload|generic-segmentation-offload):" | tr '\n' ' ' > $P.ethtool
  ipc ping -c 2 -i 0.2 -W 2 -q 10.203.0.2 > $P.ping 2>&1; ip netns exec $NS_G ping -c 2 -i 0.2 -W 2 -q 10.203.0.1 >> $P.ping 2>&1
  nst > $P.nstat0; shim $P.shim0; tapstats > $P.tapall0
  flock /tmp/bench.lock /work/wt/xdp/paced.sh $P.paced
  flock /tmp/bench.lock ip netns exec $NS_C timeout 30 iperf3 -c 10.203.0.2 -p 5201 -t 5 -J --connect-timeout 3000 -u -l 64 -b 0 > $P.udp0.json 2>&1
  flock /tmp/bench.lock ip netns exec $NS_C timeout 30 iperf3 -c 10.203.0.2 -p 5201 -t 5 -J --connect-timeout 3000 > $P.tcp.json 2>&1
  nst > $P.nstat1; shim $P.shim1; tapstats > $P.tapall1
  [ "$x" = 1 ] && { xdp_off; tail -2 $D/loader.out | head -1 > $P.xcount; }
  python3 /work/wt/xdp/analyze.py $P.paced > $P.paced.res
  python3 - "$n" "$r" "$P" >> $R <<'PY'
import json, sys
n, r, P = sys.argv[1:]
res = {"phase": n, "round": int(r)}
res["paced"] = json.load(open(P + ".paced.res"))
def it(f):
    try:
        j = json.load(open(f)); e = j["end"]
        return j, e
    except Exception as ex:
        return None, None
j, e = it(P + ".udp0.json")
if e:
    s = e["sum"]; res["udp0"] = {"rx_pps": (s["packets"] - s["lost_packets"]) / s["seconds"], "sent_pps": s["packets"] / s["seconds"], "lost_pct": s["lost_percent"]}
else: res["udp0"] = {"error": open(P + ".udp0.json").read()[-200:]}
j, e = it(P + ".tcp.json")
if e: res["tcp"] = {"gbps": e["sum_received"]["bits_per_second"] / 1e9, "retr": e["sum_sent"].get("retransmits")}
else: res["tcp"] = {"error": open(P + ".tcp.json").read()[-200:]}
res["ethtool"] = open(P + ".ethtool").read().strip()
res["ping"] = [l for l in open(P + ".ping").read().splitlines() if "transmitted" in l]
a, b = json.load(open(P + ".nstat0")), json.load(open(P + ".nstat1"))
res["guest_nstat_delta"] = {k: b[k] - a[k] for k in a}
t0 = [int(x) for x in open(P + ".tapall0").read().split()]; t1 = [int(x) for x in open(P + ".tapall1").read().split()]
res["tap_tx_packets_delta"] = t1[0] - t0[0]; res["tap_tx_dropped_delta"] = t1[1] - t0[1]
def tovm(f):
    try:
        j = json.load(open(f))
    except Exception:
        return None
    out = {}
    def walk(o, path=""):
        if isinstance(o, dict):
            for k, v in o.items(): walk(v, path + "/" + k)
        elif isinstance(o, list):
            for i, v in enumerate(o): walk(v, path + "/" + str(i))
        elif isinstance(o, (int, float)): out[path] = o
    walk(j); return out
s0, s1 = tovm(P + ".shim0"), tovm(P + ".shim1")
if s0 and s1:
    res["netshim_delta"] = {k: s1[k] - s0[k] for k in s1 if k in s0 and s1[k] != s0[k]}
try: res["xdp_counts"] = open(P + ".xcount").read().strip()
except Exception: pass
print(json.dumps(res))
PY
  tail -1 $R | python3 -c 'import json,sys;r=json.load(sys.stdin);p=r["paced"];print(r["phase"],r["round"],"frames",p["frames"],"tot_ns",round(p["total_ns_per_frame"] or 0),{k:round(v) for k,v in p["steps"].items()},"udp0",r["udp0"],"tcp",r["tcp"],r["ethtool"])' >&2
}

for r in $(seq $ROUNDS); do
  phase Adef on 0 $r
  phase A off 0 $r
  phase B off 1 $r
done
ipc ethtool -K c tx on
ipc ethtool -k c | grep -E "^(tx-checksumming|tcp-segmentation-offload):" >&2
log "done"
