#!/bin/bash
# live.sh [ROUNDS]: live rate change under load. iperf3 -t 6 -i 0.25 at 1 Gbit/s; at t=2 s the
# limit becomes 100 Mbit/s, at t=4 s 1 Gbit/s again (BPF policer: CFG map update through the
# loader; HTB: tc class change). Each run in one flock. BURST_MS as bench.sh (default 200).
ROUNDS=${1:-1}
D=/work/wt/edt/out/live; rm -rf $D; mkdir -p $D
. /work/wt/edt/lib.sh
trap cleanup EXIT INT TERM
topo_up || exit 1
loader_on || exit 1
C="ip netns exec $NS_C"; BURST_MS=${BURST_MS:-200}
burst() { echo $(( $1/8*BURST_MS/1000 > 131072 ? $1/8*BURST_MS/1000 : 131072 )); }
reset_all() { q_clear; lcmd reset; for i in 2 3 4 7; do lcmd set $i 0; done; }
setrate() { # METHOD RATE
  case $1 in
    rx-pol) lcmd set 6 $(burst $2); lcmd set 2 $2 ;;
    tx-pol) lcmd set 6 $(burst $2); lcmd set 3 $2 ;;
    rx-htb) q_htb_change tap0_kata $2 ;;
    tx-htb) q_htb_change eth0 $2 ;;
  esac; }
for round in $(seq $ROUNDS); do
for m in rx-pol rx-htb tx-pol tx-htb; do
  reset_all; rev=; case $m in tx-*) rev=-R;; esac
  case $m in
    rx-pol) lcmd set 7 3 ;; tx-pol) lcmd set 4 2 ;;
    rx-htb) q_htb tap0_kata 1000000000 2>/dev/null ;; tx-htb) q_htb eth0 1000000000 2>/dev/null ;;
  esac
  setrate $m 1000000000; lcmd reset; sleep 0.3
  P=$D/$m-r$round
  export -f setrate lcmd q_htb_change sb burst; export NS_SB BURST_MS
  flock /tmp/bench.lock bash -c "
    date +%s.%N > $P.t0; $C timeout 20 iperf3 -c 10.204.0.2 -p 5201 -t 6 -i 0.25 -J $rev > $P.json 2>&1 &
    sleep 2.1; date +%s.%N > $P.t1; setrate $m 100000000 2>/dev/null
    sleep 2; date +%s.%N > $P.t2; setrate $m 1000000000 2>/dev/null; wait" 8>&8
  python3 - $P $m <<'PY'
import json, sys
P, m = sys.argv[1:]
j = json.load(open(P + ".json"))
start = float(open(P + ".t0").read())  # iperf3's own start stamp has 1 s resolution
iv = [(i["sum"]["end"], i["sum"]["bits_per_second"] / 1e6) for i in j["intervals"]]
t1 = float(open(P + ".t1").read()) - start; t2 = float(open(P + ".t2").read()) - start
def settle(t, lo, hi):
    for e, r in iv:
        if e > t + 0.25 and lo <= r <= hi:
            return round(e - t, 2)
    return None
print(json.dumps({"method": m, "t_down": round(t1, 2), "t_up": round(t2, 2),
      "settle_down_s": settle(t1, 0, 120), "settle_up_s": settle(t2, 800, 1200),
      "mbps": [round(r) for e, r in iv]}))
PY
done; done | tee $D/live.jsonl
