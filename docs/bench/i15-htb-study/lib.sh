# HTB parameter study for netshim per-endpoint rate limits (issue 15). Source it; needs $D (out dir).
# Topology (after docs/bench/i15-feasibility/lib.sh):
#   htbx-c [c 10.205.0.1/24] <-veth-> htbx-sb [eth0 10.205.0.2/24] <-> tap0_kata
#   (netshim attach: tcfilter model, eBPF backend, --fast-path off = plain bpf_redirect both ways)
#   <-> vm-standin <-> htbx-g [eth0, eth0's MAC, 10.205.0.2/24] running iperf3 -s
# rx (into the VM): shaper on tap0_kata egress; tx (out of the VM, iperf3 -R): shaper on eth0 egress.
NS_C=htbx-c; NS_SB=htbx-sb; NS_G=htbx-g
HERE=/work/scratch/i15-htb
NETSHIM=$HERE/bin/netshim; STANDIN=$HERE/bin/vm-standin
SPID=; IPID=

log() { echo "[$(date +%T)] $*" >&2; }
sb() { ip netns exec $NS_SB "$@"; }

cleanup() {
  set +e
  [ -n "$IPID" ] && kill "$IPID" 2>/dev/null && wait "$IPID" 2>/dev/null
  if [ -n "$SPID" ]; then exec 7>&- ; sleep 0.5; kill "$SPID" 2>/dev/null; wait "$SPID" 2>/dev/null; fi
  [ -e /run/netns/$NS_SB ] && $NETSHIM detach --netns /run/netns/$NS_SB >/dev/null 2>&1
  for n in $NS_C $NS_SB $NS_G; do [ -e /run/netns/$n ] && ip netns del $n; done
  $NETSHIM gc >/dev/null 2>&1
  log "cleaned up"
}

topo_up() {
  for n in $NS_C $NS_SB $NS_G; do
    [ -e /run/netns/$n ] && { log "netns $n exists"; return 1; }
    ip netns add $n && ip -n $n link set lo up
  done
  ip -n $NS_C link add c type veth peer name eth0 netns $NS_SB
  ip -n $NS_C addr add 10.205.0.1/24 dev c
  ip -n $NS_SB addr add 10.205.0.2/24 dev eth0
  ip -n $NS_C link set c up
  ip -n $NS_SB link set eth0 up
  MAC=$(ip -n $NS_SB -j link show dev eth0 | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["address"])')
  $NETSHIM attach --netns /run/netns/$NS_SB --fast-path off --json > $D/attach.json || return 1
  rm -f $D/standin.in; mkfifo $D/standin.in
  $STANDIN --sandbox-netns /run/netns/$NS_SB --tap tap0_kata --guest-netns /run/netns/$NS_G \
    --guest-ifname eth0 --guest-mac $MAC --guest-addr 10.205.0.2/24 \
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

# ---- shapers -------------------------------------------------------------------------------
# state after attach: tap0_kata root noqueue, eth0 (veth) root noqueue
q_clear() { for d in tap0_kata eth0; do sb tc qdisc del dev $d root 2>/dev/null; done; true; }
max() { echo $(( $1 > $2 ? $1 : $2 )); }
GSOMIN=$(( 2 * 65536 + 1514 ))   # burst floor: two 64 KiB GSO skbs + one frame
QUANTUM=${QUANTUM:-67050}        # 65536 + 1514: one max GSO skb per DRR round

# A: kata's addHTBQdisc (tc defaults: burst = rate/HZ + mtu with HZ from /proc/net/psched, r2q 10)
q_kata() { # DEV R
  sb tc qdisc replace dev $1 root handle 1: htb default 2
  sb tc class add dev $1 parent 1: classid 1:1 htb rate ${2}bit ceil ${2}bit
  sb tc class add dev $1 parent 1:1 classid 1:2 htb rate ${2}bit ceil ${2}bit; }

# B: explicit burst/cburst = max(R*BMS ms, GSOMIN), quantum, explicit leaf
#   LEAF=bfifo: limit max(R*LMS ms, 256 KiB) bytes; LEAF=pfifo: limit 1000 packets
q_b() { # DEV R BMS LEAF LMS
  local b=$(max $(( $2 / 8 * $3 / 1000 )) $GSOMIN) l=$(max $(( $2 / 8 * ${5:-10} / 1000 )) ${LMIN:-262144})
  sb tc qdisc replace dev $1 root handle 1: htb default 2
  sb tc class add dev $1 parent 1: classid 1:1 htb rate ${2}bit ceil ${2}bit burst $b cburst $b quantum $QUANTUM
  sb tc class add dev $1 parent 1:1 classid 1:2 htb rate ${2}bit ceil ${2}bit burst $b cburst $b quantum $QUANTUM
  case $4 in
    pfifo) sb tc qdisc add dev $1 parent 1:2 handle 2: pfifo limit 1000 ;;
    *)     sb tc qdisc add dev $1 parent 1:2 handle 2: bfifo limit $l ;;
  esac; }

# C: B + latency class 1:10 (rate max(R/100, 100kbit) ceil R prio 0) for IP packets < 128 bytes
q_c() { # DEV R BMS LEAF LMS
  local b=$(max $(( $2 / 8 * $3 / 1000 )) $GSOMIN) l=$(max $(( $2 / 8 * ${5:-10} / 1000 )) ${LMIN:-262144})
  local lr=$(max $(( $2 / 100 )) 100000)
  sb tc qdisc replace dev $1 root handle 1: htb default 2
  sb tc class add dev $1 parent 1: classid 1:1 htb rate ${2}bit ceil ${2}bit burst $b cburst $b quantum $QUANTUM
  sb tc class add dev $1 parent 1:1 classid 1:10 htb rate ${lr}bit ceil ${2}bit burst $GSOMIN cburst $b quantum $QUANTUM prio 0
  sb tc class add dev $1 parent 1:1 classid 1:2 htb rate $(( $2 - lr ))bit ceil ${2}bit burst $b cburst $b quantum $QUANTUM prio 1
  sb tc qdisc add dev $1 parent 1:10 handle 10: pfifo limit 100
  case $4 in
    pfifo) sb tc qdisc add dev $1 parent 1:2 handle 2: pfifo limit 1000 ;;
    *)     sb tc qdisc add dev $1 parent 1:2 handle 2: bfifo limit $l ;;
  esac
  sb tc filter add dev $1 parent 1: protocol ip prio 1 u32 match u16 0 0xff80 at 2 flowid 1:10
  sb tc filter add dev $1 parent 1: protocol ipv6 prio 2 u32 match u16 0 0xff80 at 4 flowid 1:10; }
