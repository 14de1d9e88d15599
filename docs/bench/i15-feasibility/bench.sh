#!/bin/bash
# bench.sh [ROUNDS]: interleaved rounds; per limit (100M, 1G, 5G) and direction the methods
#   rx: htb (kata: HTB on tap0_kata, plain redirect), pol (BPF token bucket + bpf_redirect),
#       edtnofq (EDT set_tstamp MONO + bpf_redirect, but no fq exists on this kernel)
#   tx: htb (kata: HTB on eth0 egress, plain bpf_redirect), pol (policer + bpf_redirect_peer),
#       edtnofq (EDT + bpf_redirect to eth0 egress, no fq)
# plus unlimited baselines: base-rx, base-tx (redirect), base-txpeer (redirect_peer),
#   edtcost-rx / edtcost-tx (EDT code path at 1 Tbit/s: timestamps set, never limiting).
# Each run: iperf3 TCP 5 s + ping -i 0.01 -c 300 client->guest from t=1 s, all in one
# `flock /tmp/bench.lock` (the machine is shared with CI).
# env: OUT (out dir name, default bench), METHODS, RATES, BASE=0 (skip baselines),
#      BURST_MS (policer burst = max(128 KiB, rate * BURST_MS), default 10)
ROUNDS=${1:-3}
D=/work/wt/edt/out/${OUT:-bench}; rm -rf $D; mkdir -p $D
METHODS=${METHODS:-rx-htb rx-pol rx-edtnofq tx-htb tx-pol tx-edtnofq}
RATES=${RATES:-100000000 1000000000 5000000000}
BURST_MS=${BURST_MS:-10}
. /work/wt/edt/lib.sh
trap cleanup EXIT INT TERM
topo_up || exit 1
loader_on || exit 1
C="ip netns exec $NS_C"
ip netns exec $NS_C ping -c 3 -i 0.2 -q 10.204.0.2 >/dev/null || { log "no connectivity"; exit 1; }

reset_all() { q_clear; lcmd reset; for i in 2 3 4 7; do lcmd set $i 0; done; }
setup() { # METHOD RATE
  local m=$1 r=$2 burst=$(( $2/8*BURST_MS/1000 > 131072 ? $2/8*BURST_MS/1000 : 131072 ))
  reset_all
  case $m in
    rx-htb) q_htb tap0_kata $r ;;
    rx-pol) lcmd set 6 $burst; lcmd set 7 3; lcmd set 2 $r ;;
    rx-edtnofq) lcmd set 7 1; lcmd set 2 $r ;;
    tx-htb) q_htb eth0 $r ;;
    tx-pol) lcmd set 6 $burst; lcmd set 4 2; lcmd set 3 $r ;;
    tx-edtnofq) lcmd set 4 1; lcmd set 3 $r ;;
    base-rx|base-tx) ;;
    base-txpeer) lcmd set 4 3 ;;
    edtcost-rx) lcmd set 7 1; lcmd set 2 1000000000000 ;;
    edtcost-tx) lcmd set 4 1; lcmd set 3 1000000000000 ;;
  esac
  lcmd reset
}
run() { # METHOD RATE ROUND
  local m=$1 r=$2 P=$D/$1-$2-r$3 rev=
  case $m in tx-*|base-tx*|edtcost-tx) rev=-R ;; esac
  setup $m $r
  sleep 0.3
  flock /tmp/bench.lock bash -c "
    $C timeout 20 iperf3 -c 10.204.0.2 -p 5201 -t 5 -J $rev > $P.iperf.json 2>&1 &
    sleep 1; $C ping -i 0.01 -c 300 -W 1 10.204.0.2 > $P.ping 2>&1; wait"
  lstats > $P.stats
  { sb tc -s qdisc show dev tap0_kata; sb tc -s qdisc show dev eth0; sb tc -s class show dev tap0_kata; sb tc -s class show dev eth0; } > $P.tc 2>&1
  python3 /work/wt/edt/summarize.py one $m $r $3 $P >> $D/results.jsonl
  tail -1 $D/results.jsonl >&2
}
for round in $(seq $ROUNDS); do
  log "round $round"
  [ "${BASE:-1}" = 1 ] && for m in base-rx edtcost-rx base-tx base-txpeer edtcost-tx; do run $m 0 $round; done
  for r in $RATES; do
    for m in $METHODS; do run $m $r $round; done
  done
done
python3 /work/wt/edt/summarize.py table $D/results.jsonl | tee $D/summary.txt
