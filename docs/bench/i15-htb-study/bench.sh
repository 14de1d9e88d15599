#!/bin/bash
# bench.sh [ROUNDS]: interleaved rounds over rate x direction x variant (see lib.sh for variants).
# Each run, all inside one `flock /tmp/bench.lock`: tc/proc-stat snapshot, iperf3 TCP 5 s -J
# (-R for tx), ping -i 0.01 -c 400 client->guest from t=1 s, snapshot again.
# env: OUT (default out/bench), VARIANTS, RATES, DIRS, BASE=0 skips the unlimited baselines,
#      CBMS (C's burst ms, default 5), CLEAF (bfifo|pfifo), CLMS (bfifo limit ms, default 10)
ROUNDS=${1:-2}
HERE=/work/scratch/i15-htb
D=$HERE/${OUT:-out/bench}; rm -rf $D; mkdir -p $D
VARIANTS=${VARIANTS:-A B2 B5 B10 B5p C}
RATES=${RATES:-100000000 1000000000 5000000000}
DIRS=${DIRS:-rx tx}
. $HERE/lib.sh
trap cleanup EXIT INT TERM
topo_up || exit 1
C="ip netns exec $NS_C"
$C ping -c 3 -i 0.2 -q 10.205.0.2 >/dev/null || { log "no connectivity"; exit 1; }

setup() { # VARIANT RATE DEV
  q_clear
  case $1 in
    base) ;;
    A)   q_kata $3 $2 ;;
    B2)  q_b $3 $2 2 bfifo 10 ;;
    B5)  q_b $3 $2 5 bfifo 10 ;;
    B10) q_b $3 $2 10 bfifo 10 ;;
    B5p) q_b $3 $2 5 pfifo ;;
    B5s) q_b $3 $2 5 bfifo 2 ;;
    C)   q_c $3 $2 ${CBMS:-5} ${CLEAF:-bfifo} ${CLMS:-10} ;;
    B2p) q_b $3 $2 2 pfifo ;;
    C2p) q_c $3 $2 2 pfifo ;;                    # C, burst 2 ms, pfifo 1000 bulk leaf
    C2b) LMIN=1048576 q_c $3 $2 2 bfifo 20 ;;    # C, burst 2 ms, bfifo max(R*20ms, 1 MiB)
    idle) ;;                                      # no shaper, ping only (no iperf3)
    *) log "unknown variant $1"; return 1 ;;
  esac
}
snap() { # PREFIX DEV   (htb classes have no JSON output in tc, so classes are kept as text)
  date +%s.%N > $1.t; head -1 /proc/stat > $1.stat
  sb tc -s class show dev $2 > $1.cls; sb tc -s -j qdisc show dev $2 > $1.qd
}
run() { # DIR VARIANT RATE ROUND
  local dir=$1 v=$2 r=$3 P=$D/$1-$2-$3-r$4 rev= dev=tap0_kata
  [ $dir = tx ] && { rev=-R; dev=eth0; }
  setup $v $r $dev || return
  sb tc -d class show dev $dev > $P.tcsetup 2>&1; sb tc -d qdisc show dev $dev >> $P.tcsetup 2>&1
  sleep 0.3
  export -f snap sb; export NS_SB
  flock /tmp/bench.lock bash -c "
    snap $P.s0 $dev
    [ $v = idle ] || $C timeout 20 iperf3 -c 10.205.0.2 -p 5201 -t 5 -J -P ${PAR:-1} $rev > $P.iperf.json 2>&1 &
    sleep 1; $C ping -i 0.01 -c 400 -W 1 10.205.0.2 > $P.ping 2>&1; wait
    snap $P.s1 $dev"
  sb tc -s class show dev $dev > $P.tc 2>&1; sb tc -s qdisc show dev $dev >> $P.tc 2>&1
  python3 $HERE/summarize.py one $dir $v $r $4 $P >> $D/results.jsonl
  tail -1 $D/results.jsonl >&2
}
for round in $(seq $ROUNDS); do
  log "round $round"
  [ "${BASE:-1}" = 1 ] && for dir in $DIRS; do run $dir base 0 $round; done
  for r in $RATES; do
    for dir in $DIRS; do
      for v in $VARIANTS; do run $dir $v $r $round; done
    done
  done
done
q_clear
python3 $HERE/summarize.py table $D/results.jsonl | tee $D/summary.txt
