# Topology + loader helpers (after /work/wt/xdp/lib.sh). Source it; needs $D (work dir).
# client netns edtx-c [c 10.204.0.1/24] <-veth-> edtx-sb [eth0 10.204.0.2/24] <-> tap0_kata
#   <-> vm-standin <-> edtx-g [eth0, eth0's MAC, 10.204.0.2/24] iperf3 -s
NS_C=edtx-c; NS_SB=edtx-sb; NS_G=edtx-g
REL=/work/main/target/release
NETSHIM=$REL/netshim; STANDIN=$REL/vm-standin
HERE=/work/wt/edt
OBJ=$HERE/edt-ebpf/target/bpfel-unknown-none/release/edt-tc
LOADER=$HERE/edt-loader/target/release/edt-loader
SPID=; LPID=; IPID=

log() { echo "[$(date +%T)] $*" >&2; }
sb() { ip netns exec $NS_SB "$@"; }

cleanup() {
  set +e
  loader_off 2>/dev/null
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
  ip -n $NS_C addr add 10.204.0.1/24 dev c
  ip -n $NS_SB addr add 10.204.0.2/24 dev eth0
  ip -n $NS_C link set c up
  ip -n $NS_SB link set eth0 up
  MAC=$(ip -n $NS_SB -j link show dev eth0 | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["address"])')
  $NETSHIM attach --netns /run/netns/$NS_SB --model none --json > $D/attach.json || return 1
  rm -f $D/standin.in; mkfifo $D/standin.in
  $STANDIN --sandbox-netns /run/netns/$NS_SB --tap tap0_kata --guest-netns /run/netns/$NS_G \
    --guest-ifname eth0 --guest-mac $MAC --guest-addr 10.204.0.2/24 \
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

loader_on() {
  rm -f $D/loader.in; mkfifo $D/loader.in
  : > $D/loader.out
  sb $LOADER $OBJ eth0 tap0_kata $1 < $D/loader.in >> $D/loader.out 2>&1 &
  LPID=$!
  exec 8> $D/loader.in
  for i in $(seq 50); do grep -q '^attached' $D/loader.out && break; sleep 0.1; done
  grep -q '^attached' $D/loader.out || { log "loader failed"; cat $D/loader.out; return 1; }
}
lcmd() { echo "$*" >&8; sleep 0.05; }   # set IDX VAL | reset | stats
lstats() { local n=$(grep -c '^stats' $D/loader.out); echo stats >&8
  for i in $(seq 50); do [ "$(grep -c '^stats' $D/loader.out)" -gt $n ] && break; sleep 0.05; done
  grep '^stats' $D/loader.out | tail -1 | cut -d' ' -f2-; }
loader_off() { [ -z "$LPID" ] && return 0; exec 8>&-; wait "$LPID"; LPID=; }

# qdiscs
q_clear() { sb tc qdisc del dev tap0_kata root 2>/dev/null; sb tc qdisc del dev eth0 root 2>/dev/null; true; }
q_fq() { sb tc qdisc replace dev $1 root fq ${FQOPTS:-}; }
# kata's addHTBQdisc: root 1: default 2; 1:1 rate=ceil=max; 1:2 parent 1:1 rate=ceil=max
# (vishvananda/netlink defaults: buffer = rate/HZ + mtu, r2q 10 -> same as tc's defaults)
q_htb() { sb tc qdisc replace dev $1 root handle 1: htb default 2
  sb tc class add dev $1 parent 1: classid 1:1 htb rate ${2}bit ceil ${2}bit
  sb tc class add dev $1 parent 1:1 classid 1:2 htb rate ${2}bit ceil ${2}bit; }
q_htb_change() { sb tc class change dev $1 parent 1: classid 1:1 htb rate ${2}bit ceil ${2}bit
  sb tc class change dev $1 parent 1:1 classid 1:2 htb rate ${2}bit ceil ${2}bit; }
