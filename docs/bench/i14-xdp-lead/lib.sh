# Shared topology helpers for run.sh / explore.sh. Source it; needs $D (work dir).
NS_C=xdpx-c; NS_SB=xdpx-sb; NS_G=xdpx-g
REL=/work/main/target/release
NETSHIM=$REL/netshim; STANDIN=$REL/vm-standin
HERE=/work/wt/xdp
OBJ=$HERE/xdp-ebpf/target/bpfel-unknown-none/release/xdp-to-tap
LOADER=$HERE/xdp-loader/target/release/xdp-loader
SPID=; LPID=; IPID=

log() { echo "[$(date +%T)] $*" >&2; }

cleanup() {
  set +e
  xdp_off 2>/dev/null
  [ -n "$IPID" ] && kill "$IPID" 2>/dev/null && wait "$IPID" 2>/dev/null
  if [ -n "$SPID" ]; then exec 7>&- ; sleep 0.5; kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; fi
  [ -e /run/netns/$NS_SB ] && $NETSHIM detach --netns /run/netns/$NS_SB >/dev/null 2>&1
  for n in $NS_C $NS_SB $NS_G; do [ -e /run/netns/$n ] && ip netns del $n; done
  log "cleaned up"
}

topo_up() {
  for n in $NS_C $NS_SB $NS_G; do
    [ -e /run/netns/$n ] && { log "netns $n exists"; return 1; }
    ip netns add $n && ip -n $n link set lo up
  done
  ip -n $NS_C link add c type veth peer name eth0 netns $NS_SB
  ip -n $NS_C addr add 10.203.0.1/24 dev c
  ip -n $NS_SB addr add 10.203.0.2/24 dev eth0
  ip -n $NS_C link set c up
  ip -n $NS_SB link set eth0 up
  MAC=$(ip -n $NS_SB -j link show dev eth0 | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["address"])')
  $NETSHIM attach --netns /run/netns/$NS_SB --json > $D/attach.json
  mkfifo $D/standin.in
  $STANDIN --sandbox-netns /run/netns/$NS_SB --tap tap0_kata --guest-netns /run/netns/$NS_G \
    --guest-ifname eth0 --guest-mac $MAC --guest-addr 10.203.0.2/24 \
    < $D/standin.in > $D/standin.out 2> $D/standin.err &
  SPID=$!
  exec 7> $D/standin.in
  for i in $(seq 100); do grep -q '^ready' $D/standin.out && break; sleep 0.1; done
  grep -q '^ready' $D/standin.out || { log "standin not ready"; cat $D/standin.err; return 1; }
  ip netns exec $NS_G iperf3 -s -p 5201 > $D/iperf3-server.log 2>&1 &
  IPID=$!
  sleep 0.5
  log "topology up (MAC $MAC, standin $SPID, iperf3 -s $IPID)"
}

xdp_on() {   # $1: mode (drv default)
  rm -f $D/loader.in; mkfifo $D/loader.in
  ip netns exec $NS_SB $LOADER $OBJ eth0 tap0_kata ${1:-drv} < $D/loader.in >> $D/loader.out 2>&1 &
  LPID=$!
  exec 8> $D/loader.in
  for i in $(seq 50); do [ "$(grep -c '^attached' $D/loader.out)" -gt "${NATT:-0}" ] && break; sleep 0.1; done
  NATT=$(grep -c '^attached' $D/loader.out)
  ip -n $NS_SB -d link show eth0 | grep -q xdp || { log "xdp not attached"; cat $D/loader.out; return 1; }
  sleep 0.3
}

xdp_off() {
  [ -z "$LPID" ] && return 0
  exec 8>&-
  wait "$LPID"; LPID=
  tail -2 $D/loader.out >&2
}

tapstats() { ip netns exec $NS_SB ip -s -j link show tap0_kata | python3 -c 'import json,sys;s=json.load(sys.stdin)[0]["stats64"];print(s["tx"]["packets"],s["tx"]["dropped"])'; }
