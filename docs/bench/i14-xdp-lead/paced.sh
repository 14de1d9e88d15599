#!/bin/bash
# paced.sh OUTPREFIX: run UNDER flock. UDP 64 B at 100 kpps (measure.rs Udp64Paced: -l 64,
# -b pps*64*8) for 6 s from the client netns; perf record -a -g over 3 s starting 1 s in;
# tap0_kata TX packets/dropped read right before and after the perf window.
P=$1
ip netns exec xdpx-c timeout 30 iperf3 -c 10.203.0.2 -p 5201 -t 6 -J --connect-timeout 3000 \
   -u -l 64 -b 51200000 > $P.iperf.json 2> $P.iperf.err &
C=$!
sleep 1
tap() { ip netns exec xdpx-sb ip -s -j link show tap0_kata | python3 -c 'import json,sys;s=json.load(sys.stdin)[0]["stats64"];print(s["tx"]["packets"],s["tx"]["dropped"])'; }
tap > $P.tap0
perf record -q -a -g -e cpu-clock -c 250000 -o $P.perf.data -- sleep 3 2> $P.perf.err
tap > $P.tap1
wait $C; echo "iperf3 rc=$?" > $P.iperf.rc
