#!/bin/bash
# smoke.sh: topology + loader, plain redirect, one short iperf3 each way, EDT rx 1G check.
D=/work/wt/edt/out/smoke; rm -rf $D; mkdir -p $D
. /work/wt/edt/lib.sh
trap cleanup EXIT INT TERM
topo_up || exit 1
loader_on || exit 1
ipc() { ip netns exec $NS_C "$@"; }
ipc ping -c 3 -i 0.2 10.204.0.2 | tail -2
flock /tmp/bench.lock ipc iperf3 -c 10.204.0.2 -t 2 | tail -3
flock /tmp/bench.lock ipc iperf3 -c 10.204.0.2 -t 2 -R | tail -3
lcmd set 4 3
flock /tmp/bench.lock ipc iperf3 -c 10.204.0.2 -t 2 -R | tail -3
lstats
lcmd reset; q_fq tap0_kata; lcmd set 7 1; lcmd set 2 1000000000
flock /tmp/bench.lock ipc iperf3 -c 10.204.0.2 -t 3 | tail -3
lstats
sb tc -s qdisc show dev tap0_kata
lcmd reset; lcmd set 7 2
flock /tmp/bench.lock ipc iperf3 -c 10.204.0.2 -t 3 | tail -3
lstats
ip netns exec $NS_G ip -d link show eth0 | head -3; sb ethtool -k tap0_kata | grep -E "segmentation|checksumming"
