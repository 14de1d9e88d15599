#!/bin/bash
# cost.sh: per-invocation cost of each program variant via BPF_PROG_TEST_RUN
# (bpftool prog run id N repeat 2000000, a 64 B TCP frame; the redirect is not executed).
D=/work/wt/edt/out/cost; rm -rf $D; mkdir -p $D
. /work/wt/edt/lib.sh
trap cleanup EXIT INT TERM
topo_up || exit 1
loader_on || exit 1
python3 -c '
import struct,sys
eth=bytes.fromhex("02000000000202000000000108 00".replace(" ",""))
ip=struct.pack("!BBHHHBBH4s4s",0x45,0,40,0,0,64,6,0,bytes([10,204,0,1]),bytes([10,204,0,2]))
tcp=struct.pack("!HHIIBBHHH",40000,5201,1,0,0x50,0x10,65535,0,0)
open(sys.argv[1],"wb").write((eth+ip+tcp).ljust(64,b"\0"))' $D/pkt
id_of() { bpftool prog show -j | python3 -c "import json,sys;print([p['id'] for p in json.load(sys.stdin) if p.get('name')=='$1'][-1])"; }
bpftool prog show -j > $D/progs.json; TO=$(id_of to_tap); FROM=$(id_of from_tap); echo "to_tap=$TO from_tap=$FROM"
t() { # LABEL ID
  local v=$(for i in 1 2 3; do flock /tmp/bench.lock bpftool prog run id $2 data_in $D/pkt repeat 2000000 2>&1 | sed -n 's/.*duration[^0-9]*\([0-9]*\)ns.*/\1/p'; done | sort -n | sed -n 2p)
  echo "$1 ${v}ns"; }
bpftool prog run id $TO data_in $D/pkt repeat 10 || true
lcmd reset; t "rx plain redirect" $TO
lcmd set 7 1; lcmd set 2 1000000000000; t "rx EDT set_tstamp (1 Tbit)" $TO
lcmd set 7 3; lcmd set 6 1000000000; t "rx policer (1 Tbit)" $TO
lcmd set 7 0; lcmd set 2 0
t "tx plain redirect" $FROM
lcmd set 4 1; lcmd set 3 1000000000000; t "tx EDT + redirect" $FROM
lcmd set 4 2; t "tx policer + redirect_peer" $FROM
lcmd set 4 3; t "tx plain redirect_peer" $FROM
