#!/usr/bin/env python3
"""A runtime's CNI calls, as libcni makes them: the first conflist of CONF_DIR, plugins from
BIN_DIR, ADD in order with prevResult, DEL in reverse with the cached result."""
import json, os, subprocess, sys
cmd, conf_dir, bin_dir, netns, cid = sys.argv[1:6]
files = sorted(f for f in os.listdir(conf_dir)
               if f.rsplit('.', 1)[-1] in ('conf', 'conflist', 'json')
               and os.path.isfile(os.path.join(conf_dir, f)))
lst = json.load(open(os.path.join(conf_dir, files[0])))
cache = f"/tmp/demo16/result-{cid}.json"  # the runtime's cached result (libcni: /var/lib/cni)
plugins = lst['plugins'] if cmd == 'ADD' else list(reversed(lst['plugins']))
prev = json.load(open(cache)) if cmd == 'DEL' and os.path.exists(cache) else None
for p in plugins:
    conf = dict(p, cniVersion=lst['cniVersion'], name=lst['name'])
    if prev is not None:
        conf['prevResult'] = prev
    env = dict(os.environ, CNI_COMMAND=cmd, CNI_CONTAINERID=cid, CNI_NETNS=netns,
               CNI_IFNAME='eth0', CNI_PATH=bin_dir)
    out = subprocess.run([os.path.join(bin_dir, p['type'])], input=json.dumps(conf).encode(),
                         env=env, capture_output=True)
    if out.returncode != 0:
        sys.exit(f"{cmd} {p['type']}: {out.stdout.decode()} {out.stderr.decode()}")
    if cmd == 'ADD':
        prev = json.loads(out.stdout)
print(f"{cmd} through {files[0]}: " + " -> ".join(p['type'] for p in plugins))
if cmd == 'ADD':
    json.dump(prev, open(cache, 'w'))
    print("interfaces:", ", ".join(f"{i['name']}" + (f" (sandbox {i['sandbox']})" if i.get('sandbox') else "") for i in prev['interfaces']))
else:
    os.path.exists(cache) and os.remove(cache)
