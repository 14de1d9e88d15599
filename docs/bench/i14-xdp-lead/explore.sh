#!/bin/bash
# explore.sh: bring the topology up, check A and B quickly (ping, short TCP, short UDP), tear down.
D=/work/wt/xdp/out/explore; rm -rf $D; mkdir -p $D
. /work/wt/xdp/lib.sh
trap cleanup EXIT INT TERM
topo_up || exit 1
ipc() { ip netns exec $NS_C "$@"; }
for phase in A B; do
  [ $phase = B ] && { xdp_on drv || exit 1; }
  log "== $phase"; ip -n $NS_SB -d link show eth0 | grep -o "xdp.*" | head -2
  ipc ping -c 3 -i 0.2 -W 2 10.203.0.2 | tail -2
  ip netns exec $NS_G ping -c 3 -i 0.2 -W 2 10.203.0.1 | tail -2
  ipc ethtool -k c | grep -E "segmentation-offload|tx-checksumming|scatter-gather:" 
  ip netns exec $NS_G nstat -n
  flock /tmp/bench.lock ip netns exec $NS_C timeout 15 iperf3 -c 10.203.0.2 -t 2 -J --connect-timeout 3000 > $D/$phase.tcp.json 2>&1
  echo "tcp rc=$?"; python3 -c "import json;j=json.load(open('$D/$phase.tcp.json'));print(j.get('error'), j['end'].get('sum_received',{}).get('bits_per_second'))" 2>&1 | tail -1
  flock /tmp/bench.lock ip netns exec $NS_C timeout 15 iperf3 -c 10.203.0.2 -t 2 -J --connect-timeout 3000 -u -l 64 -b 51200000 > $D/$phase.udp.json 2>&1
  echo "udp rc=$?"; python3 -c "import json;j=json.load(open('$D/$phase.udp.json'));print(j.get('error'), j['end'].get('sum',{}))" 2>&1 | tail -1
  ip netns exec $NS_G nstat | grep -iE "csum|Udp|InErr" 
  ip netns exec $NS_SB ip -s link show tap0_kata | tail -4
  ip netns exec $NS_SB ip -s link show eth0 | tail -4
  bpftool prog show | grep -E "xdp_to_tap|netshim" -A1 | grep -E "name|run" | head
  $NETSHIM stats --netns /run/netns/$NS_SB 2>&1 | head -20
done
xdp_off
