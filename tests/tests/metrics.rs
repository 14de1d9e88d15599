//! Operator metrics: `stats --format prometheus` equals the frames pushed through the tap,
//! `netshim metrics` serves the same exposition over HTTP (fresh on every scrape, 404
//! elsewhere, exit 0 on SIGINT) and `stats --watch` shows rates while traffic flows.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use netshim::metrics::server::REQUEST_TIMEOUT;
use netshim_tests::{
    netshim_cli::{netshim_bin, netshim_json, netshim_ok, Pod},
    require_root, traffic, ChildGuard, TestNetns,
};
use nix::sys::signal::Signal;

const ETH_HLEN: u64 = 14;

/// One sample of the exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `{a="x",b="y\"z"}` (from after the name), checking the escapes; returns the
/// labels and the rest of the line.
fn parse_labels(s: &str) -> (BTreeMap<String, String>, &str) {
    let mut labels = BTreeMap::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return (labels, s);
    };
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return (labels, r);
        }
        let eq = rest.find('=').unwrap_or_else(|| panic!("no '=' in {s}"));
        let name = &rest[..eq];
        assert!(is_label_name(name), "bad label name {name:?} in {s}");
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("unquoted label value in {s}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next().unwrap_or_else(|| panic!("unterminated {s}"));
            match c {
                '"' => break i,
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => panic!("bad escape \\{other:?} in {s}"),
                },
                '\n' => panic!("raw newline in label value in {s}"),
                c => value.push(c),
            }
        };
        assert!(
            labels.insert(name.to_owned(), value).is_none(),
            "label {name} twice in {s}"
        );
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parses a text exposition (0.0.4) and checks its form: every family has `# HELP` then
/// `# TYPE` before its samples and appears once, names match the grammar, label values
/// use only the three escapes, counters end in `_total`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    let mut samples = Vec::new();
    let mut families: Vec<String> = Vec::new();
    let mut helped: Option<String> = None;
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_owned();
            assert!(is_metric_name(&name), "bad metric name {name:?}");
            assert!(!families.contains(&name), "family {name} appears twice");
            families.push(name.clone());
            helped = Some(name);
            current = None;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap().to_owned();
            let kind = parts.next().expect("TYPE without a type").to_owned();
            assert_eq!(
                helped.as_ref(),
                Some(&name),
                "TYPE {name} not right after its HELP"
            );
            assert!(
                ["counter", "gauge", "untyped", "summary", "histogram"].contains(&kind.as_str()),
                "{line}"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} without _total");
            }
            current = Some((name, kind));
        } else if line.starts_with('#') || line.is_empty() {
            continue;
        } else {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..end];
            assert!(is_metric_name(name), "bad metric name {name:?}");
            let (family, _) = current
                .as_ref()
                .unwrap_or_else(|| panic!("sample before HELP/TYPE: {line}"));
            assert_eq!(name, family, "sample outside its family: {line}");
            let (labels, rest) = parse_labels(&line[end..]);
            let value: f64 = rest
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line}: {e}"));
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
    }
    samples
}

/// The value of `name` whose labels include all of `want`.
fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> u64 {
    let hits: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(hits.len(), 1, "{name} {want:?}: {hits:?}");
    hits[0].value as u64
}

/// The sample lines of `netns` (what the closing notes quote).
fn lines_of<'a>(text: &'a str, netns: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&format!("netns=\"{netns}\"")))
        .collect()
}

fn attach(pod: &Pod, backend: &str) {
    let report = netshim_json(&["attach", "--netns", pod.netns(), "--tc-backend", backend]);
    assert_eq!(report["endpoints"][0]["tap"]["name"], "tap0_kata");
    pod.pin_pod_neighbor();
}

fn prometheus_has_exact_counters(backend: &str) {
    require_root!();
    let pod = Pod::new(&format!("mx{}", &backend[..1]));
    attach(&pod, backend);
    let tap = traffic::open_tap(&pod.sandbox, "tap0_kata");
    const N: usize = 17;
    let pushed = traffic::exchange(&pod, &tap, N, "a");

    let text = netshim_ok(&["stats", "--netns", pod.netns(), "--format", "prometheus"]);
    println!("stats --format prometheus ({backend}):\n{text}");
    let samples = parse_exposition(&text);
    let netns = pod.netns();
    let ep = |dir| {
        [
            ("netns", netns),
            ("endpoint", "eth0"),
            ("tap", "tap0_kata"),
            ("direction", dir),
            ("backend", backend),
        ]
    };
    // mirred's action counts from the network header, the classifier whole frames.
    let l2 = |bytes: u64| match backend {
        "mirred" => bytes - ETH_HLEN * N as u64,
        _ => bytes,
    };
    let packets = "netshim_endpoint_packets_total";
    let bytes = "netshim_endpoint_bytes_total";
    let errors = "netshim_endpoint_redirect_errors_total";
    assert_eq!(value(&samples, packets, &ep("to_vm")), N as u64, "{text}");
    assert_eq!(value(&samples, packets, &ep("from_vm")), N as u64, "{text}");
    assert_eq!(value(&samples, bytes, &ep("to_vm")), l2(pushed.to_vm_bytes));
    assert_eq!(
        value(&samples, bytes, &ep("from_vm")),
        l2(pushed.from_vm_bytes)
    );
    assert_eq!(value(&samples, errors, &ep("to_vm")), 0);
    assert_eq!(value(&samples, errors, &ep("from_vm")), 0);
    let datapath = if backend == "mirred" {
        "mirred"
    } else {
        "cls_bpf"
    };
    assert_eq!(
        value(
            &samples,
            "netshim_sandbox_info",
            &[
                ("netns", netns),
                ("backend", backend),
                ("datapath", datapath)
            ]
        ),
        1
    );
    let cookie = netshim_json(&["status", "--netns", netns])["netns_cookie"]
        .as_u64()
        .unwrap()
        .to_string();
    assert!(samples
        .iter()
        .filter(|s| s.name.starts_with("netshim_endpoint_"))
        .all(|s| s.labels["netns_cookie"] == cookie));
    if backend == "ebpf" {
        let unmatched = [("netns", netns), ("netns_cookie", cookie.as_str())];
        assert_eq!(
            value(&samples, "netshim_unmatched_packets_total", &unmatched),
            0
        );
    }
    assert_eq!(value(&samples, "netshim_scrape_errors", &[]), 0);

    // Without --netns: every sandbox, this one among them (by its recorded netns path for
    // eBPF, the attach's path for mirred), with the same counters.
    let all = netshim_ok(&["stats", "--format", "prometheus"]);
    let all = parse_exposition(&all);
    let mine = [
        ("netns_cookie", cookie.as_str()),
        ("direction", "to_vm"),
        ("endpoint", "eth0"),
    ];
    assert_eq!(value(&all, packets, &mine), N as u64);
    if backend == "ebpf" {
        // Under `ip netns exec` (a fresh /sys without bpffs) netshim joins the host's mount
        // namespace first: the same counters, nothing hidden.
        let out = pod.sandbox.exec(&[
            netshim_bin().to_str().unwrap(),
            "stats",
            "--format",
            "prometheus",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let inside = parse_exposition(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(value(&inside, "netshim_scrape_errors", &[]), 0);
        assert_eq!(value(&inside, packets, &mine), N as u64);
    }
    // --json and --format json agree.
    assert_eq!(
        netshim_ok(&["stats", "--netns", netns, "--json"]),
        netshim_ok(&["stats", "--netns", netns, "--format", "json"])
    );
}

#[test]
fn stats_prometheus_has_the_exact_counters_ebpf() {
    prometheus_has_exact_counters("ebpf");
}

#[test]
fn stats_prometheus_has_the_exact_counters_mirred() {
    prometheus_has_exact_counters("mirred");
}

/// `GET path` over a fresh connection made inside `ns`: (status line, head, body).
fn http_get(ns: &TestNetns, addr: SocketAddr, path: &str) -> (String, String, String) {
    let raw = ns.run(|| {
        // Generous: a server that does not accept leaves the SYN to retransmit.
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(60)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read the response");
        out
    });
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, head.to_owned(), body.to_owned())
}

/// `netshim metrics --netns NS` listening on `ns`' own loopback, on a port the kernel
/// picks; its address.
fn serve_metrics(ns: &TestNetns) -> (ChildGuard, SocketAddr) {
    // nsenter enters only the netns (`ip netns exec` works too: see host_view.rs).
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", ns.path().display()))
        .arg(netshim_bin())
        .args(["metrics", "--listen", "127.0.0.1:0", "--netns", ns.name()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut server = ChildGuard::spawn(cmd, "netshim metrics");
    let mut first = String::new();
    BufReader::new(server.child_mut().stdout.take().unwrap())
        .read_line(&mut first)
        .expect("read the listening line");
    let addr: SocketAddr = first
        .trim()
        .strip_prefix("serving metrics on http://")
        .and_then(|s| s.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .expect("listening address");
    assert!(addr.ip().is_loopback());
    (server, addr)
}

/// Idle connections (opened, nothing sent) used to hold the collection slots while the
/// server waited for their request heads: 70 of them delayed a real scrape by 11 s.
#[test]
fn idle_connections_do_not_starve_a_scrape() {
    require_root!();
    const IDLE: usize = 200;
    let ns = TestNetns::new("nsh-mxi");
    let (server, addr) = serve_metrics(&ns);
    let opened = Instant::now();
    // A server that does not accept fills its listen backlog: count what connects, and
    // check after the scrape that all did. A SYN the kernel drops while the accept queue is
    // momentarily full is retransmitted after 1 s (the initial RTO), so each connect may
    // take longer than that: 200 ms lost one connection in 200 in a CI run.
    let mut idle: Vec<TcpStream> = ns.run(|| {
        (0..IDLE)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok())
            .collect()
    });
    // Let the server accept them all before the scrape comes.
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (status, head, _) = http_get(&ns, addr, "/metrics");
    let took = started.elapsed();
    println!("scrape behind {IDLE} idle connections: {status} after {took:?}");
    assert_eq!(status, "HTTP/1.1 200 OK", "{head}");
    assert!(
        took < REQUEST_TIMEOUT / 2,
        "the scrape took {took:?} behind {IDLE} idle connections (head timeout \
         {REQUEST_TIMEOUT:?})"
    );
    assert_eq!(idle.len(), IDLE, "every idle connection was accepted");
    // The server closes every idle one when its head timeout passes (a 408, then EOF).
    let deadline = opened + REQUEST_TIMEOUT + Duration::from_secs(10);
    let mut closed = 0;
    for s in &mut idle {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut rest = Vec::new();
        if s.read_to_end(&mut rest).is_ok() {
            closed += 1;
        }
    }
    println!(
        "{closed} of {IDLE} idle connections closed by the server after {:?}",
        opened.elapsed()
    );
    assert_eq!(
        closed, IDLE,
        "every idle connection is closed by the server"
    );
    drop(server);
}

#[test]
fn metrics_endpoint_serves_fresh_counters_inside_the_sandbox_netns() {
    require_root!();
    let pod = Pod::new("mxh");
    attach(&pod, "ebpf");
    let tap = traffic::open_tap(&pod.sandbox, "tap0_kata");
    traffic::exchange(&pod, &tap, 3, "warm-up");

    let (server, addr) = serve_metrics(&pod.sandbox);

    let netns = pod.netns();
    let dir = |d| [("netns", netns), ("endpoint", "eth0"), ("direction", d)];
    let scrape = |when: &str| {
        let (status, head, body) = http_get(&pod.sandbox, addr, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK", "{head}");
        assert!(
            head.contains("Content-Type: text/plain; version=0.0.4"),
            "{head}"
        );
        println!("scrape {when}:\n{}", lines_of(&body, netns).join("\n"));
        let samples = parse_exposition(&body);
        let p = |d| value(&samples, "netshim_endpoint_packets_total", &dir(d));
        let b = |d| value(&samples, "netshim_endpoint_bytes_total", &dir(d));
        (p("to_vm"), p("from_vm"), b("to_vm"), b("from_vm"))
    };
    let before = scrape("before");
    assert_eq!((before.0, before.1), (3, 3));
    const N: u64 = 25;
    let pushed = traffic::exchange(&pod, &tap, N as usize, "b");
    let after = scrape(&format!("after {N} frames each way"));
    assert_eq!(after.0 - before.0, N, "to_vm moved by N");
    assert_eq!(after.1 - before.1, N, "from_vm moved by N");
    assert_eq!(after.2 - before.2, pushed.to_vm_bytes);
    assert_eq!(after.3 - before.3, pushed.from_vm_bytes);

    // Concurrent scrapes all succeed and agree (nothing flows now).
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| http_get(&pod.sandbox, addr, "/metrics")))
            .collect();
        for h in handles {
            let (status, _, body) = h.join().unwrap();
            assert_eq!(status, "HTTP/1.1 200 OK");
            let samples = parse_exposition(&body);
            assert_eq!(
                value(&samples, "netshim_endpoint_packets_total", &dir("to_vm")),
                after.0
            );
        }
    });

    let (status, _, _) = http_get(&pod.sandbox, addr, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _, _) = http_get(&pod.sandbox, addr, "/metrics/x");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    server.signal(Signal::SIGINT).unwrap();
    let out = server.wait_with_output(Duration::from_secs(5));
    assert_eq!(
        out.status.code(),
        Some(0),
        "netshim metrics after SIGINT: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn stats_watch_json_shows_rates_while_traffic_flows() {
    require_root!();
    let pod = Pod::new("mxw");
    attach(&pod, "ebpf");
    let tap = traffic::open_tap(&pod.sandbox, "tap0_kata");

    let mut cmd = Command::new(netshim_bin());
    cmd.args([
        "stats",
        "--watch",
        "--json",
        "--interval",
        "1",
        "--netns",
        pod.netns(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut watch = ChildGuard::spawn(cmd, "netshim stats --watch");
    let stdout = watch.child_mut().stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // Traffic both ways for up to 8 s, until an interval with non-zero rates both ways.
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut seen = None;
    let mut round = 0;
    while seen.is_none() && Instant::now() < deadline {
        traffic::exchange(&pod, &tap, 20, &format!("w{round}"));
        round += 1;
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON line {e}: {line}"));
            let ep = &v["sandboxes"][0]["endpoints"][0];
            assert_eq!(ep["endpoint"], "eth0", "{line}");
            let rate = |d: &str| ep[d]["packets_per_sec"].as_f64().unwrap();
            if rate("to_vm") > 0.0 && rate("from_vm") > 0.0 {
                let bits = ep["to_vm"]["bits_per_sec"].as_f64().unwrap();
                let bytes = ep["to_vm"]["bytes_per_sec"].as_f64().unwrap();
                // serde_json's default float parsing may be 1 ulp off.
                assert!((bits - bytes * 8.0).abs() <= bits * 1e-12, "{line}");
                println!("watch line: {line}");
                seen = Some(line);
            }
        }
    }
    assert!(seen.is_some(), "no interval showed traffic both ways");

    watch.signal(Signal::SIGINT).unwrap();
    let out = watch.wait_with_output(Duration::from_secs(5));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stats --watch after SIGINT: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    reader.join().unwrap();
}

#[test]
fn watch_refuses_prometheus_and_interval_needs_watch() {
    let out = netshim_bin();
    let run = |args: &[&str]| Command::new(&out).args(args).output().unwrap();
    let o = run(&["stats", "--watch", "--format", "prometheus"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let o = run(&["stats", "--interval", "1"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}
