#!/bin/bash
# broken.sh: B with the client's default offloads (tx csum on): what breaks and why.
D=/work/wt/xdp/out/broken; rm -rf $D; mkdir -p $D
. /work/wt/xdp/lib.sh
trap cleanup EXIT INT TERM
topo_up || exit 1
ipc() { ip netns exec $NS_C "$@"; }
xdp_on drv || exit 1
ipc ethtool -k c | grep -E "^(tx-checksumming|tcp-segmentation-offload|generic-segmentation-offload):"
ip netns exec $NS_G nstat -n
echo "--- ping both ways"; ipc ping -c 3 -i 0.2 -W 2 -q 10.203.0.2 | grep transm; ip netns exec $NS_G ping -c 3 -i 0.2 -W 2 -q 10.203.0.1 | grep transm
echo "--- iperf3 TCP without --connect-timeout (as a plain run would), bounded by timeout 25"
flock /tmp/bench.lock ip netns exec $NS_C timeout 25 iperf3 -c 10.203.0.2 -p 5201 -t 3 -J > $D/tcp.json 2>&1; echo "rc=$? (124 = killed by timeout: the hang)"
python3 -c "import json;j=json.load(open('$D/tcp.json'));print('error:',j.get('error'),'end keys:',list(j.get('end',{}).keys()))" 2>&1 | tail -1
echo "--- guest nstat after"; ip netns exec $NS_G nstat | grep -E "Csum|InErr|TcpActive|TcpPassive|UdpIn"
echo "--- UDP over raw socket-free path: nc-less, use iperf3 UDP needs TCP control; send UDP with ping-like tool: python"
ip netns exec $NS_G nstat -n
ip netns exec $NS_C python3 -c "
import socket
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
for i in range(1000): s.sendto(b'x'*64,('10.203.0.2',9999))
"
sleep 0.5; ip netns exec $NS_G nstat | grep -E "Udp|Csum"
echo "--- same 1000 UDP datagrams with client tx off"
ipc ethtool -K c tx off >/dev/null 2>&1; ip netns exec $NS_G nstat -n
ip netns exec $NS_C python3 -c "
import socket
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)
for i in range(1000): s.sendto(b'x'*64,('10.203.0.2',9999))
"
sleep 0.5; ip netns exec $NS_G nstat | grep -E "Udp|Csum"
ipc ethtool -K c tx on >/dev/null 2>&1
echo "--- netshim stats (to_vm bypassed by XDP)"; $NETSHIM stats --netns /run/netns/$NS_SB
xdp_off
echo "--- ethtool -k c after detach"; ipc ethtool -k c | grep -E "^(tx-checksumming|tcp-segmentation-offload):"
