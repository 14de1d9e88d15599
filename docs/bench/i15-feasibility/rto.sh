#!/bin/bash
# rto.sh: why a small policer bucket collapses TCP: TcpExtTCPTimeouts / retransmits of the
# sender (client for rx, guest for tx) with the policer at 1 Gbit/s, burst 10 ms vs 200 ms.
D=/work/wt/edt/out/rto; rm -rf $D; mkdir -p $D
. /work/wt/edt/lib.sh
trap cleanup EXIT INT TERM
topo_up || exit 1
loader_on || exit 1
C="ip netns exec $NS_C"
for ms in 10 200; do for dir in rx tx; do
  lcmd reset; for i in 2 3 4 7; do lcmd set $i 0; done
  lcmd set 6 $(( 1000000000/8*ms/1000 ))
  if [ $dir = rx ]; then lcmd set 7 3; lcmd set 2 1000000000; NS=$NS_C; rev=; else lcmd set 4 2; lcmd set 3 1000000000; NS=$NS_G; rev=-R; fi
  lcmd reset
  ip netns exec $NS nstat -n
  flock /tmp/bench.lock $C iperf3 -c 10.204.0.2 -t 5 -J $rev > $D/$dir-$ms.json
  g=$(python3 -c 'import json,sys;e=json.load(open(sys.argv[1]))["end"];print(round(e["sum_received"]["bits_per_second"]/1e9,3))' $D/$dir-$ms.json)
  echo "$dir burst=${ms}ms ${g}Gbps $(ip netns exec $NS nstat | grep -E 'TcpRetransSegs|TCPTimeouts|TCPLossProbes|TCPSackRecovery ' | awk '{printf "%s=%s ",$1,$2}') $(lstats | cut -c1-80)"
done; done
