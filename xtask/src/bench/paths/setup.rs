//! Building one path: its links, datapath and stand-in, each undo registered before the
//! thing it undoes, and a check that it carries traffic.

use super::*;

/// Run quietly with a deadline; fail with stderr unless the exit status is 0.
pub(in crate::bench) fn quiet(cmd: &mut Command) -> Result<String> {
    let line = cmd::display(cmd);
    let out = run_bounded(cmd, Duration::from_secs(30), &line)?;
    ensure!(
        out.status.success(),
        "`{line}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(netns: &str, args: &[&str]) -> Result<()> {
    quiet(&mut topology::ip(netns, args)).map(|_| ())
}

/// The MAC address of `ifname` in `netns`.
fn link_mac(netns: &str, ifname: &str) -> Result<String> {
    let out = quiet(&mut topology::ip(
        netns,
        &["-j", "link", "show", "dev", ifname],
    ))?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("`ip -j link`: {out}"))?;
    v[0]["address"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no MAC for {ifname} in {netns}: {out}"))
}

struct Builder<'a> {
    live: Live,
    netshim: &'a Path,
}

impl Builder<'_> {
    /// Register an undo step (before doing what it undoes).
    fn undo(&mut self, action: Action) {
        let token = topology::register(action.clone());
        self.live.undo.push((token, action));
    }

    fn undo_cmd(&mut self, argv: &[&str]) {
        self.undo(Action::Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
        });
    }

    /// veth `a` in netns `ns_a` with peer `b` in `ns_b`; deleted from `ns_a` on undo.
    fn veth(&mut self, ns_a: &str, a: &str, ns_b: &str, b: &str) -> Result<()> {
        self.undo_cmd(&["ip", "-n", ns_a, "link", "del", a]);
        ip(
            ns_a,
            &[
                "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b,
            ],
        )
    }

    fn netshim(&self, args: &[String]) -> Result<Option<Value>> {
        let out = quiet(Command::new(self.netshim).args(args))?;
        Ok(serde_json::from_str(&out).ok().or_else(|| {
            let t = out.trim();
            (!t.is_empty()).then(|| Value::String(t.to_string()))
        }))
    }
}

/// Build `spec` in `ns` and check it carries traffic.
pub fn setup(
    spec: &PathSpec,
    ns: &Namespaces,
    caps: &Caps,
    netshim: &Path,
    standin: &Path,
) -> Result<Live> {
    match spec.topo {
        Topo::Pair => setup_pair(
            spec,
            ns.pair.as_ref().context("no pair netns")?,
            caps,
            netshim,
        ),
        Topo::Sandbox => setup_sandbox(
            spec,
            ns.sandbox.as_ref().context("no sandbox netns")?,
            caps,
            netshim,
            standin,
        ),
    }
}

fn device(role: &str, netns: &str, ifname: &str, kind: &'static str) -> Device {
    Device {
        role: role.into(),
        netns: netns.into(),
        ifname: ifname.into(),
        kind,
    }
}

fn setup_pair(spec: &PathSpec, ns: &[String; 3], caps: &Caps, netshim: &Path) -> Result<Live> {
    let [client, shim, server] = ns;
    let mut b = Builder {
        live: Live {
            client: client.clone(),
            server: server.clone(),
            server_ip: PAIR_SERVER_IP,
            client_ip: PAIR_CLIENT_IP,
            spoofed_ip: PAIR_SPOOFED_IP,
            devices: vec![device("client", client, IFNAME, "veth")],
            stats_netns: None,
            setup_output: None,
            undo: Vec::new(),
            standin: None,
        },
        netshim,
    };
    if let Kind::Direct = spec.kind {
        b.veth(client, IFNAME, server, IFNAME)?;
    } else {
        b.veth(client, IFNAME, shim, SHIM_CLIENT_SIDE)?;
        b.veth(server, IFNAME, shim, SHIM_SERVER_SIDE)?;
        b.live
            .devices
            .push(device("shim", shim, SHIM_CLIENT_SIDE, "veth"));
        b.live
            .devices
            .push(device("shim", shim, SHIM_SERVER_SIDE, "veth"));
        for dev in [SHIM_CLIENT_SIDE, SHIM_SERVER_SIDE] {
            ip(shim, &["link", "set", dev, "up"])?;
        }
    }
    b.live
        .devices
        .push(device("server", server, IFNAME, "veth"));
    ip(client, &["addr", "add", PAIR_CLIENT_ADDR, "dev", IFNAME])?;
    ip(server, &["addr", "add", PAIR_SERVER_ADDR, "dev", IFNAME])?;
    ip(client, &["link", "set", IFNAME, "up"])?;
    ip(server, &["link", "set", IFNAME, "up"])?;

    match &spec.kind {
        Kind::Direct => {}
        Kind::Bridge => {
            b.undo_cmd(&["ip", "-n", shim, "link", "del", BRIDGE]);
            ip(shim, &["link", "add", BRIDGE, "type", "bridge"])?;
            for dev in [SHIM_CLIENT_SIDE, SHIM_SERVER_SIDE] {
                ip(shim, &["link", "set", dev, "master", BRIDGE])?;
            }
            ip(shim, &["link", "set", BRIDGE, "up"])?;
        }
        Kind::Connect { backend, .. } => {
            let ns_s = shim.as_str();
            b.undo_cmd(&[
                &netshim.display().to_string(),
                "disconnect",
                "--netns",
                ns_s,
                SHIM_CLIENT_SIDE,
                SHIM_SERVER_SIDE,
            ]);
            let mut args: Vec<String> = [
                "connect",
                "--netns",
                ns_s,
                SHIM_CLIENT_SIDE,
                SHIM_SERVER_SIDE,
                "--tc-backend",
                backend,
                "--json",
            ]
            .map(String::from)
            .to_vec();
            args.extend(caps.fast_path_args(spec));
            let server_mac = link_mac(server, IFNAME)?;
            args.extend(caps.guard_args(spec, &server_mac, PAIR_SERVER_IP));
            b.live.setup_output = b.netshim(&args)?;
            b.live.stats_netns = Some(shim.clone());
        }
        Kind::Attach { .. } => bail!("{} is not a pair path", spec.id()),
    }
    Ok(b.live)
}

fn setup_sandbox(
    spec: &PathSpec,
    ns: &[String; 3],
    caps: &Caps,
    netshim: &Path,
    standin: &Path,
) -> Result<Live> {
    let [client, sandbox, guest] = ns;
    let Kind::Attach { model, backend, .. } = &spec.kind else {
        bail!("{} is not a sandbox path", spec.id());
    };
    let mut b = Builder {
        live: Live {
            client: client.clone(),
            server: guest.clone(),
            server_ip: SANDBOX_POD_IP,
            client_ip: SANDBOX_CLIENT_IP,
            spoofed_ip: SANDBOX_SPOOFED_IP,
            devices: vec![
                device("client", client, IFNAME, "veth"),
                device("sandbox", sandbox, IFNAME, "veth"),
            ],
            stats_netns: None,
            setup_output: None,
            undo: Vec::new(),
            standin: None,
        },
        netshim,
    };
    b.veth(client, IFNAME, sandbox, IFNAME)?;
    ip(client, &["addr", "add", SANDBOX_CLIENT_ADDR, "dev", IFNAME])?;
    ip(sandbox, &["addr", "add", SANDBOX_POD_ADDR, "dev", IFNAME])?;
    ip(client, &["link", "set", IFNAME, "up"])?;
    ip(sandbox, &["link", "set", IFNAME, "up"])?;

    b.undo(Action::Detach {
        netshim: netshim.to_path_buf(),
        netns: sandbox.clone(),
    });
    let mut args: Vec<String> = ["attach", "--netns", sandbox, "--json", "--model", model]
        .map(String::from)
        .to_vec();
    if let Some(backend) = backend {
        args.extend(["--tc-backend".to_string(), backend.to_string()]);
    }
    args.extend(caps.fast_path_args(spec));
    // (The guest's MAC and address are the ones attach reads from eth0.)
    args.extend(caps.guard_args(spec, "", ""));
    let json = b
        .netshim(&args)?
        .context("netshim attach printed nothing")?;
    let ep = json
        .get("endpoints")
        .and_then(|e| e.get(0))
        .with_context(|| format!("attach JSON has no endpoints: {json}"))?;
    let mac = ep
        .get("mac")
        .and_then(Value::as_str)
        .with_context(|| format!("attach JSON: endpoint has no mac: {ep}"))?
        .to_string();
    let queue = if *model == "macvtap" {
        let m = ep.get("macvtap").context("attach JSON: no `macvtap`")?;
        let dev = m
            .get("device")
            .and_then(Value::as_str)
            .context("attach JSON: no macvtap.device")?;
        if let Some(name) = m.get("name").and_then(Value::as_str) {
            b.live
                .devices
                .push(device("sandbox", sandbox, name, "macvtap"));
        }
        Queue::Device(PathBuf::from(dev))
    } else {
        let name = ep
            .get("tap")
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .context("attach JSON: no tap.name")?;
        b.live.devices.push(device("sandbox", sandbox, name, "tap"));
        Queue::Tap(name.to_string())
    };
    b.live.setup_output = Some(json.clone());
    b.live.stats_netns = Some(sandbox.clone());
    b.live.devices.push(device("guest", guest, IFNAME, "tap"));
    let cmd = standin::command(
        standin,
        sandbox,
        &queue,
        guest,
        IFNAME,
        &mac,
        SANDBOX_POD_ADDR,
    );
    b.live.standin = Some(StandIn::start(cmd, false, Duration::from_secs(20))?);
    Ok(b.live)
}
