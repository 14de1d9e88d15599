#!/bin/bash
# v6check.sh: does variant C's IPv6 u32 match (payload length < 128) put small IPv6 packets
# into 1:10 and big ones into 1:2? veth pair d0/d1 inside netns htbx-t, shaper on d0.
HERE=/work/scratch/i15-htb; . $HERE/lib.sh; NS_SB=htbx-t
trap 'ip netns del htbx-t 2>/dev/null' EXIT
ip netns add htbx-t; ip -n htbx-t link add d0 type veth peer name d1
ip -n htbx-t link set d0 up; ip -n htbx-t link set d1 up
ip -n htbx-t addr add fd00:205::1/64 dev d0 nodad; ip -n htbx-t addr add fd00:205::2/64 dev d1 nodad
q_c d0 100000000 2 pfifo 2>/dev/null
sleep 0.5
# d0 -> d1 goes out d0 (local delivery of the other address would use lo, so ping via d0's peer is
# routed on the same host: force with -I d0 and a neighbour-resolved address)
ip netns exec htbx-t ping -6 -c 20 -i 0.01 -q -I d0 fd00:205::2 >/dev/null
ip netns exec htbx-t ping -6 -c 20 -i 0.01 -q -s 1000 -I d0 fd00:205::2 >/dev/null
ip netns exec htbx-t tc -s class show dev d0 | grep -A1 'class htb 1:\(10\|2\) '
