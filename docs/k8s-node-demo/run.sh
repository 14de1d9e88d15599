#!/usr/bin/env bash
# The session of issue 16's closing note: a node in a scratch directory (/tmp/demo16), run as
# root from the repository after `cargo xtask image` (it uses the static build). Its output
# is transcript.txt. Namespaces it makes: demo16-host, demo16-pod1, demo16-pod2 (deleted again).
# A node in a scratch directory: its /etc/cni/net.d and /opt/cni/bin, a primary network
# (bridge + host-local + portmap, as containerd's example), pods made by a libcni-like driver.
set -u
N="$(cd "$(dirname "$0")/../.." && pwd)/target/x86_64-unknown-linux-musl/release/netshim"
D=/tmp/demo16; mkdir -p $D; cp "$(dirname "$0")/mini-cni.py" $D/; NODE=$D/node; CONF=$NODE/etc/cni/net.d; BIN=$NODE/opt/cni/bin
rm -rf $NODE; mkdir -p $CONF $BIN $NODE/leases
cp /usr/lib/cni/{bridge,host-local,portmap,loopback} $BIN/
cat > $CONF/10-containerd-net.conflist <<JSON
{
  "cniVersion": "1.0.0",
  "name": "containerd-net",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni-demo16",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$NODE/leases",
        "ranges": [[{"subnet": "10.77.16.0/24"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
chmod 644 $CONF/10-containerd-net.conflist
snap() { (cd $NODE && find etc opt -type f -printf '%m %p\n' | sort; cd $NODE && find etc opt -type f | sort | xargs sha256sum); }
snap > $D/before.txt
cp $CONF/10-containerd-net.conflist $D/primary.orig
ip netns add demo16-host; ip netns add demo16-pod1; ip netns add demo16-pod2
echo '$ netshim cni install --conf-dir $CONF --bin-dir $BIN'
$N cni install --conf-dir $CONF --bin-dir $BIN; echo "exit $?"
echo '$ jq -c .plugins[].type $CONF/10-containerd-net.conflist'; jq -c '[.cniVersion, [.plugins[].type]]' $CONF/10-containerd-net.conflist
echo '$ netshim cni install (again)'; s1=$(stat -c '%i %Y' $CONF/10-containerd-net.conflist)
$N cni install --conf-dir $CONF --bin-dir $BIN; echo "exit $?; inode+mtime $s1 -> $(stat -c '%i %Y' $CONF/10-containerd-net.conflist)"
echo '$ netshim agent --conf-dir $CONF --bin-dir $BIN --listen 127.0.0.1:19470 --ready-file $D/ready --log-level info &'
$N agent --conf-dir $CONF --bin-dir $BIN --listen 127.0.0.1:19470 --ready-file $D/ready --log-level info > $D/agent.out 2> $D/agent.log &
AG=$!
for i in $(seq 100); do curl -sf localhost:19470/readyz >/dev/null && break; sleep 0.05; done
echo '$ curl -s localhost:19470/readyz'; curl -s localhost:19470/readyz
echo '$ pod1: ADD through the first conflist (a runtime, in the host netns demo16-host)'
ip netns exec demo16-host python3 $D/mini-cni.py ADD $CONF $BIN /run/netns/demo16-pod1 pod1
echo '$ ip -n demo16-pod1 -br link'; ip -n demo16-pod1 -br link
echo '$ netshim status --netns demo16-pod1 --json | jq ...'
$N status --netns demo16-pod1 --json | jq -c '{health, datapath, endpoints: [.endpoints[] | {name, tap, connected, addresses: [.addresses[].address]}]}'
C1=$($N status --netns demo16-pod1 --json | jq .netns_cookie)
echo "\$ curl -s localhost:19470/metrics | grep 'netns_cookie=\"$C1\"' | head -3"
curl -s localhost:19470/metrics | grep "netns_cookie=\"$C1\"" | head -3
echo '$ pod2: ADD, then its netns deleted without DEL (a runtime that died)'
ip netns exec demo16-host python3 $D/mini-cni.py ADD $CONF $BIN /run/netns/demo16-pod2 pod2 >/dev/null
C2=$($N status --netns demo16-pod2 --json | jq .netns_cookie)
echo "pins: $(ls -d /sys/fs/bpf/netshim/netns-$C2)"
echo '$ ip netns del demo16-pod2'; t0=$(date +%s%N); ip netns del demo16-pod2
while [ -e /sys/fs/bpf/netshim/netns-$C2 ]; do sleep 0.01; done
echo "gone after $(( ($(date +%s%N)-t0)/1000000 )) ms: $(ls -d /sys/fs/bpf/netshim/netns-$C2 /run/netshim/netns-$C2 2>&1 | tr '\n' ' ')"
echo '$ the primary CNI writes its file again (its installer restarted: same bytes, renamed over it)'
cp $D/primary.orig $CONF/.primary.tmp && mv $CONF/.primary.tmp $CONF/10-containerd-net.conflist
t0=$(date +%s%N); until jq -e '.plugins[-1].type=="netshim"' $CONF/10-containerd-net.conflist >/dev/null 2>&1; do sleep 0.005; done
echo "chained again after $(( ($(date +%s%N)-t0)/1000000 )) ms: $(jq -c '[.plugins[].type]' $CONF/10-containerd-net.conflist)"
echo '$ kill -TERM agent'; kill -TERM $AG; wait $AG; echo "agent exit $?"
echo '--- agent log'; cat $D/agent.log | sed 's/^[^ ]* //'
echo '$ pod1 still attached after the agent:'; $N status --netns demo16-pod1 --json | jq -c '{health}'
echo '$ pod1: DEL'; ip netns exec demo16-host python3 $D/mini-cni.py DEL $CONF $BIN /run/netns/demo16-pod1 pod1
echo '$ netshim cni uninstall --conf-dir $CONF --bin-dir $BIN'; $N cni uninstall --conf-dir $CONF --bin-dir $BIN; echo "exit $?"
snap > $D/after.txt
echo '$ diff before after (modes + sha256 of every file of both dirs)'; diff $D/before.txt $D/after.txt && echo "identical ($(wc -l < $D/after.txt) lines)"
ip netns del demo16-pod1; ip netns del demo16-host
echo "left: netns=$(ip netns list | grep -c demo16) pins=$(ls /sys/fs/bpf/netshim | grep -c netns-) state=$(ls /run/netshim | grep -c netns-)"
