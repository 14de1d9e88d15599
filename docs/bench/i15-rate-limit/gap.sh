#!/bin/bash
# Ping loss while a limit is added and removed (root qdisc swaps) vs. while only its rate changes.
set -u
B=${NETSHIM:-target/debug/netshim}; S=${STANDIN:-target/debug/vm-standin}
C=gapx-c; SB=gapx-sb; G=gapx-g
cleanup() { exec 7>&- 2>/dev/null; sleep 0.3; kill $SPID 2>/dev/null; $B detach --netns $SB >/dev/null 2>&1; for n in $C $SB $G; do ip netns del $n 2>/dev/null; done; }
trap cleanup EXIT
for n in $C $SB $G; do ip netns add $n; ip -n $n link set lo up; done
ip -n $C link add c type veth peer name eth0 netns $SB
ip -n $C addr add 10.207.0.1/24 dev c; ip -n $SB addr add 10.207.0.2/24 dev eth0
ip -n $C link set c up; ip -n $SB link set eth0 up
MAC=$(ip -n $SB -j link show dev eth0 | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["address"])')
$B attach --netns $SB >/dev/null || exit 1
rm -f /tmp/gap.in; mkfifo /tmp/gap.in
$S --sandbox-netns /run/netns/$SB --tap tap0_kata --guest-netns /run/netns/$G --guest-ifname eth0 --guest-mac $MAC --guest-addr 10.207.0.2/24 < /tmp/gap.in > /tmp/gap.out 2>/dev/null &
SPID=$!; exec 7> /tmp/gap.in
for i in $(seq 100); do grep -q ready /tmp/gap.out && break; sleep 0.1; done
run() { # $1 label, $2 toggle mode
  ip netns exec $C ping -n -q -i 0.002 -c 3000 -W 1 10.207.0.2 > /tmp/gap.ping &
  P=$!; sleep 0.5
  n=0
  while kill -0 $P 2>/dev/null && [ $n -lt 20 ]; do
    case $2 in
      addremove) if [ $((n%2)) = 0 ]; then $B limit --netns $SB --rx 1G --tx 1G >/dev/null; else $B limit --netns $SB --rx 0 --tx 0 >/dev/null; fi ;;
      change) if [ $((n%2)) = 0 ]; then $B limit --netns $SB --rx 1G --tx 1G >/dev/null; else $B limit --netns $SB --rx 2G --tx 2G >/dev/null; fi ;;
      none) : ;;
    esac
    n=$((n+1)); sleep 0.2
  done
  wait $P
  echo "$1: $n steps; $(grep -E 'packets transmitted' /tmp/gap.ping)"
  $B limit --netns $SB --rx 0 --tx 0 >/dev/null
}
run "no change" none
$B limit --netns $SB --rx 5G --tx 5G >/dev/null
run "rate changes (1G<->2G, limit kept)" change
run "add/remove (1G <-> unlimited)" addremove
