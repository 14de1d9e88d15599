#!/bin/bash
# probe.sh: does the delivery time survive the redirect? (no fq on this kernel, so only observed)
# to_tap rx_mode 1 (bpf_skb_set_tstamp MONO) vs 2 (direct skb->tstamp write) vs 0, seen at
# tap0_kata egress; from_tap tx_mode 1 (set_tstamp + bpf_redirect) seen at eth0 egress.
D=/work/wt/edt/out/probe; rm -rf $D; mkdir -p $D
. /work/wt/edt/lib.sh
trap cleanup EXIT INT TERM
topo_up || exit 1
LOADER_ARGS=probe; loader_on probe || exit 1
L="flock /tmp/bench.lock"; C="ip netns exec $NS_C"
sb tc qdisc replace dev tap0_kata root fq 2>&1 | sed 's/^/fq on tap: /'
for m in 0 1 2; do
  lcmd reset; lcmd set 7 $m; lcmd set 2 1000000000; lcmd set 4 0; lcmd set 3 0
  $L $C iperf3 -c 10.204.0.2 -t 2 -J > $D/rx$m.json
  echo "rx_mode $m $(lstats)"
done
for m in 0 1; do
  lcmd reset; lcmd set 7 0; lcmd set 2 0; lcmd set 4 $m; lcmd set 3 1000000000
  $L $C iperf3 -c 10.204.0.2 -t 2 -R -J > $D/tx$m.json
  echo "tx_mode $m $(lstats)"
done
for f in $D/*.json; do python3 -c 'import json,sys;e=json.load(open(sys.argv[1]))["end"];print(sys.argv[1].split("/")[-1],round(e["sum_received"]["bits_per_second"]/1e9,3),"Gbps retr",e["sum_sent"].get("retransmits"))' $f; done
