//! Load generators and what is read from them: iperf3 (TCP 1 and 4 streams, UDP 64 B),
//! sockperf TCP ping-pong, CPU time from `/proc/stat`, and the eBPF program's own run time
//! (`kernel.bpf_stats_enabled`).
//!
//! Every child runs with a deadline (killed past it) and is registered with the cleanup
//! registry, so an interrupted bench leaves no iperf3 or sockperf behind.

use crate::iperf::{self as iperf3, PORT as IPERF_PORT};
use crate::topology;
use anyhow::{bail, ensure, Context, Result};
use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SOCKPERF_PORT: &str = "11111";
/// The busy-polling sockperf server's port.
pub const SOCKPERF_SPIN_PORT: &str = "11112";
/// UDP payload size of the packet-rate test.
pub const UDP_LEN: u32 = 64;

/// Extra time a client gets beyond its `-t` before it is killed.
const GRACE: Duration = Duration::from_secs(20);

/// Run a command to completion with a deadline, capturing stdout and stderr.
pub fn run_bounded(cmd: &mut Command, limit: Duration, what: &str) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mut child, token) = topology::spawn_killable(cmd, what)?;
    let readers = [
        drain(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        drain(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ];
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    topology::disarm(token);
    let [stdout, stderr] = readers.map(|r| r.join().unwrap_or_default());
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => bail!("{what} still running after {limit:?}: killed"),
    }
}

fn drain(pipe: Option<Box<dyn Read + Send>>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// A server process in a netns, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Server {
    child: Child,
    token: Option<topology::Token>,
    what: String,
}

impl Server {
    /// Start `prog args` in `netns` (on `cpu` when given) and wait until something listens on
    /// TCP `port` there.
    pub fn start(
        netns: &str,
        cpu: Option<u32>,
        prog: &str,
        args: &[&str],
        port: &str,
    ) -> Result<Server> {
        let what = format!("{prog} server in {netns}");
        let mut cmd = load_cmd(netns, cpu, prog, args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (child, token) = topology::spawn_killable(&mut cmd, &what)?;
        let mut server = Server {
            child,
            token: Some(token),
            what,
        };
        server.wait_listening(netns, port)?;
        Ok(server)
    }

    fn wait_listening(&mut self, netns: &str, port: &str) -> Result<()> {
        let filter = format!("sport = :{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = crate::cmd::output(&mut topology::exec_in(netns, "ss", &["-Hltn", &filter]))?;
            if !out.trim().is_empty() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited early ({status})", self.what);
            }
            ensure!(
                Instant::now() < deadline,
                "{} not listening on {port} after 10 s",
                self.what
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait up to `limit` for the server to exit by itself (iperf3 `-1`), then stop it.
    pub fn finish(mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                match self.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        if let Some(token) = self.token.take() {
            topology::disarm(token);
        }
    }
}

/// Where the load runs: client netns, server netns and the server's address; and the CPUs
/// the client and server processes are pinned to (none: the scheduler places them).
pub struct Endpoints<'a> {
    pub client: &'a str,
    pub server: &'a str,
    pub server_ip: &'a str,
    pub client_cpu: Option<u32>,
    pub server_cpu: Option<u32>,
}

/// `prog args` in `netns`, under `taskset -c cpu` when a CPU is given.
fn load_cmd(netns: &str, cpu: Option<u32>, prog: &str, args: &[&str]) -> Command {
    match cpu {
        None => topology::exec_in(netns, prog, args),
        Some(cpu) => {
            let cpu = cpu.to_string();
            let mut all = vec!["-c", cpu.as_str(), prog];
            all.extend_from_slice(args);
            topology::exec_in(netns, "taskset", &all)
        }
    }
}

/// One iperf3 test.
#[derive(Clone, Copy, Debug)]
pub enum IperfTest {
    Tcp {
        streams: u32,
    },
    /// One TCP stream from the server to the client (`iperf3 -R`): in the sandbox
    /// topology, from the VM (guest) to the pod's client.
    TcpReverse,
    Udp64,
    /// UDP 64 B from client to server at a fixed rate (packets/s): an offered load every path
    /// carries, so that CPU per packet compares the datapaths rather than who drops what.
    Udp64Paced {
        pps: u32,
    },
    /// UDP 64 B from the server to the client (`iperf3 -u -R`): the direction netshim's source
    /// guard checks (what the server, or the guest, sends).
    Udp64Reverse,
}

/// What one iperf3 run yields.
#[derive(Debug, Default, PartialEq)]
pub struct IperfResult {
    /// TCP: receiver's bits/s. UDP: received bits/s.
    pub received_bps: f64,
    /// Bytes the receiver got.
    pub received_bytes: f64,
    /// TCP retransmits (sender side).
    pub retransmits: Option<u64>,
    /// UDP: packets the server received, and per second; and the sender's packets/s.
    pub udp_received_packets: Option<f64>,
    pub udp_received_pps: Option<f64>,
    pub udp_sent_pps: Option<f64>,
}

/// One-shot iperf3 server in the server netns, client in the client netns, `-J` parsed.
pub fn iperf(ep: &Endpoints, test: IperfTest, seconds: u32) -> Result<IperfResult> {
    let server = Server::start(
        ep.server,
        ep.server_cpu,
        "iperf3",
        &iperf3::SERVER_ARGS,
        IPERF_PORT,
    )?;
    let secs = seconds.to_string();
    let mut args = iperf3::client_args(ep.server_ip, &secs);
    let streams;
    let len = UDP_LEN.to_string();
    let paced_bps;
    match test {
        IperfTest::Tcp { streams: n } => {
            streams = n.to_string();
            args.extend(["-P", &streams]);
        }
        IperfTest::TcpReverse => args.push("-R"),
        // -b 0: unlimited, the sender goes as fast as it can; the server counts what arrives.
        IperfTest::Udp64 => args.extend(["-u", "-l", &len, "-b", "0"]),
        IperfTest::Udp64Reverse => args.extend(["-u", "-l", &len, "-b", "0", "-R"]),
        IperfTest::Udp64Paced { pps } => {
            // iperf3's -b counts payload bits.
            paced_bps = (u64::from(pps) * u64::from(UDP_LEN) * 8).to_string();
            args.extend(["-u", "-l", &len, "-b", &paced_bps]);
        }
    }
    let mut client = load_cmd(ep.client, ep.client_cpu, "iperf3", &args);
    let out = run_bounded(
        &mut client,
        Duration::from_secs(seconds.into()) + GRACE,
        "iperf3 client",
    )?;
    server.finish(Duration::from_secs(3));
    iperf3::client_result(&out, |stdout| parse_iperf(stdout, test))
}

/// Parse `iperf3 -J`. TCP: `end.sum_received` (the receiver's count). UDP: `end.sum_received`
/// is what the server reported back at the end (packets it expected from the sequence
/// numbers, and lost ones), so received = packets - lost_packets. With `-R` the client is
/// the receiver and `sum_received` its own count, with the same fields.
pub fn parse_iperf(json: &str, test: IperfTest) -> Result<IperfResult> {
    let end = iperf3::end_section(json)?;
    let field = |section: &str, name: &str| iperf3::end_number(&end, section, name);
    let mut result = IperfResult {
        received_bps: field("sum_received", "bits_per_second")?,
        received_bytes: field("sum_received", "bytes")?,
        ..Default::default()
    };
    match test {
        IperfTest::Tcp { .. } | IperfTest::TcpReverse => {
            result.retransmits = iperf3::retransmits(&end);
        }
        IperfTest::Udp64 | IperfTest::Udp64Reverse | IperfTest::Udp64Paced { .. } => {
            let packets = field("sum_received", "packets")?;
            let lost = field("sum_received", "lost_packets")?;
            let secs = field("sum_received", "seconds")?;
            ensure!(secs > 0.0, "iperf3 UDP run of 0 s");
            result.udp_received_packets = Some((packets - lost).max(0.0));
            result.udp_received_pps = Some((packets - lost).max(0.0) / secs);
            let sent = field("sum_sent", "packets")?;
            let sent_secs = field("sum_sent", "seconds")?;
            if sent_secs > 0.0 {
                result.udp_sent_pps = Some(sent / sent_secs);
            }
        }
    }
    Ok(result)
}

/// sockperf ping-pong figures (full round trip, µs).
#[derive(Debug, Default, PartialEq)]
pub struct RttResult {
    pub avg_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub observations: Option<u64>,
}

/// How the ping-pong ends wait for the next message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Blocking receive (sockperf's default): every message wakes a sleeping thread, so on a
    /// VM the figure includes the vCPU's wake-up from idle.
    Block,
    /// Non-blocking sockets polled in a loop on both ends (`--nonblocked`, server epoll with
    /// `--timeout 0`): no sleeping, so the figure is the network path's own cost.
    Spin,
}

impl Wait {
    fn port(self) -> &'static str {
        match self {
            Wait::Block => SOCKPERF_PORT,
            Wait::Spin => SOCKPERF_SPIN_PORT,
        }
    }
}

/// `sockperf server --tcp` in the server netns (for one path; dropped after).
pub fn sockperf_server(ep: &Endpoints, wait: Wait) -> Result<Server> {
    let port = wait.port();
    let mut args = vec!["server", "--tcp", "-i", "0.0.0.0", "-p", port];
    if wait == Wait::Spin {
        args.extend(["--nonblocked", "--timeout", "0"]);
    }
    Server::start(ep.server, ep.server_cpu, "sockperf", &args, port)
}

/// `sockperf ping-pong --tcp -m 64 --full-rtt` for `seconds` against a running server.
pub fn sockperf(ep: &Endpoints, seconds: u32, wait: Wait) -> Result<RttResult> {
    let secs = seconds.to_string();
    let mut args = vec![
        "ping-pong",
        "--tcp",
        "-m",
        "64",
        "-t",
        &secs,
        "-i",
        ep.server_ip,
        "-p",
        wait.port(),
        "--full-rtt",
    ];
    if wait == Wait::Spin {
        args.push("--nonblocked");
    }
    let mut client = load_cmd(ep.client, ep.client_cpu, "sockperf", &args);
    let out = run_bounded(
        &mut client,
        Duration::from_secs(seconds.into()) + GRACE,
        "sockperf client",
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result = parse_sockperf(&text)
        .with_context(|| format!("sockperf ping-pong ({}): {}", out.status, tail(&text, 400)))?;
    ensure!(out.status.success(), "sockperf exited with {}", out.status);
    Ok(result)
}

fn tail(s: &str, n: usize) -> &str {
    let s = s.trim();
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Drop ANSI colour sequences (`ESC [ ... m`), which sockperf prints even into a pipe.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parse sockperf 3.x output: `avg-rtt=X` (or `avg-latency=X`, half the round trip, when run
/// without --full-rtt: then doubled), `---> percentile 50.000 = X`, `... 99.000 = X`,
/// `Total N observations`.
pub fn parse_sockperf(text: &str) -> Result<RttResult> {
    let text = strip_ansi(text);
    let number_after = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        let rest = rest.trim_start_matches([' ', '=']);
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    let (mut avg, mut p50, mut p99, mut obs) = (None, None, None, None);
    let mut half = false;
    for line in text.lines() {
        if let Some(v) = number_after(line, "avg-rtt") {
            avg = Some(v);
        } else if let Some(v) = number_after(line, "avg-latency") {
            avg = Some(v);
            half = true;
        } else if let Some(v) = number_after(line, "percentile 50.000") {
            p50 = Some(v);
        } else if let Some(v) = number_after(line, "percentile 99.000") {
            p99 = Some(v);
        } else if let Some(v) = number_after(line, "Total") {
            obs = Some(v as u64);
        }
    }
    let scale = if half { 2.0 } else { 1.0 };
    Ok(RttResult {
        avg_us: avg.context("no avg-rtt in sockperf output")? * scale,
        p50_us: p50.context("no 50th percentile in sockperf output")? * scale,
        p99_us: p99.context("no 99th percentile in sockperf output")? * scale,
        observations: obs,
    })
}

/// CPU time of all CPUs from the `cpu` line of /proc/stat, in jiffies (`USER_HZ`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuJiffies {
    /// user + nice + system + irq + softirq (idle, iowait and steal left out).
    pub busy: u64,
    /// softirq alone. Without CONFIG_IRQ_TIME_ACCOUNTING (this machine's kernel) the kernel
    /// charges each tick to softirq when the tick finds the CPU serving one, so this is a
    /// sample (250 Hz here) of where the time went, not an exact sum.
    pub softirq: u64,
}

impl CpuJiffies {
    pub fn now() -> Result<CpuJiffies> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        CpuJiffies::parse(&stat)
    }

    pub fn parse(stat: &str) -> Result<CpuJiffies> {
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("/proc/stat has no `cpu` line")?;
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        ensure!(f.len() >= 7, "short /proc/stat cpu line: {line}");
        // user nice system idle iowait irq softirq ...
        Ok(CpuJiffies {
            busy: f[0] + f[1] + f[2] + f[5] + f[6],
            softirq: f[6],
        })
    }

    /// What was spent since `earlier`.
    pub fn since(self, earlier: CpuJiffies) -> CpuJiffies {
        CpuJiffies {
            busy: self.busy.saturating_sub(earlier.busy),
            softirq: self.softirq.saturating_sub(earlier.softirq),
        }
    }
}

/// The datapath program's name as the kernel keeps it (object names are cut to 15 bytes).
const PROG_NAME_PREFIX: &str = "netshim_redirec";

/// Summed run time and run count of every loaded netshim datapath program
/// (`bpftool prog show -j`; the counts only move while `kernel.bpf_stats_enabled` is 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgRuns {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

impl ProgRuns {
    pub fn now() -> Result<ProgRuns> {
        let out = crate::cmd::output(Command::new("bpftool").args(["prog", "show", "-j"]))?;
        ProgRuns::parse(&out)
    }

    pub fn parse(json: &str) -> Result<ProgRuns> {
        let progs: serde_json::Value =
            serde_json::from_str(json).context("parsing `bpftool prog show -j`")?;
        let mut sum = ProgRuns::default();
        for p in progs.as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap_or("");
            if name.starts_with(PROG_NAME_PREFIX) {
                sum.run_time_ns += p["run_time_ns"].as_u64().unwrap_or(0);
                sum.run_cnt += p["run_cnt"].as_u64().unwrap_or(0);
            }
        }
        Ok(sum)
    }

    /// Average ns per run since `earlier`; None when nothing ran.
    pub fn ns_per_run_since(self, earlier: ProgRuns) -> Option<f64> {
        let runs = self.run_cnt.checked_sub(earlier.run_cnt)?;
        let ns = self.run_time_ns.checked_sub(earlier.run_time_ns)?;
        (runs > 0).then(|| ns as f64 / runs as f64)
    }
}

/// `kernel.bpf_stats_enabled` set to 1 while this lives (the kernel then times every program
/// run, which costs two clock reads per run, so it is on only for the program-cost run);
/// the previous value is put back on drop.
pub struct BpfStats {
    previous: String,
}

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> Result<BpfStats> {
        let previous = std::fs::read_to_string(BPF_STATS_SYSCTL)
            .with_context(|| format!("reading {BPF_STATS_SYSCTL}"))?;
        std::fs::write(BPF_STATS_SYSCTL, "1")
            .with_context(|| format!("writing 1 to {BPF_STATS_SYSCTL}"))?;
        Ok(BpfStats {
            previous: previous.trim().to_string(),
        })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS_SYSCTL, &self.previous);
    }
}

/// Jiffies per second (`USER_HZ`).
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// `ping` until one reply comes back (or `within` passes): the path carries traffic and ARP is
/// resolved before anything is timed.
pub fn wait_reachable(ep: &Endpoints, within: Duration) -> Result<()> {
    let deadline = within.as_secs().max(1).to_string();
    let mut ping = topology::exec_in(
        ep.client,
        "ping",
        &["-c", "1", "-i", "0.2", "-w", &deadline, "-q", ep.server_ip],
    );
    let out = run_bounded(&mut ping, within + Duration::from_secs(5), "ping")?;
    ensure!(
        out.status.success(),
        "{} does not answer ping from {} within {within:?}",
        ep.server_ip,
        ep.client
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_iperf() {
        let json = r#"{"end":{
            "sum_sent":{"bytes":100,"bits_per_second":2.5e10,"retransmits":3},
            "sum_received":{"bytes":3e9,"bits_per_second":2.4e10}}}"#;
        let r = parse_iperf(json, IperfTest::Tcp { streams: 1 }).unwrap();
        assert_eq!(r.received_bps, 2.4e10);
        assert_eq!(r.received_bytes, 3e9);
        assert_eq!(r.retransmits, Some(3));
        assert_eq!(r.udp_received_pps, None);
    }

    #[test]
    fn parses_udp_iperf_received_packets() {
        // Shape of iperf 3.12's client JSON for -u (sum_received = the server's report).
        let json = r#"{"end":{
            "sum_sent":{"seconds":2.0,"bytes":22175360,"bits_per_second":8.87e7,
                        "lost_packets":0,"packets":346490},
            "sum_received":{"seconds":2.0,"bytes":11674432,"bits_per_second":4.67e7,
                            "lost_packets":163604,"packets":346017}}}"#;
        let r = parse_iperf(json, IperfTest::Udp64).unwrap();
        assert_eq!(r.udp_received_pps, Some((346017.0 - 163604.0) / 2.0));
        assert_eq!(r.udp_sent_pps, Some(346490.0 / 2.0));
    }

    #[test]
    fn iperf_error_is_reported() {
        let json = r#"{"start":{},"end":{},"error":"unable to connect to server"}"#;
        let err = parse_iperf(json, IperfTest::Udp64).unwrap_err().to_string();
        assert!(err.contains("unable to connect"), "{err}");
    }

    #[test]
    fn parses_sockperf_full_rtt() {
        let text = "sockperf: [Valid Duration] RunTime=1.550 sec; SentMessages=115362\n\
            sockperf: \u{1b}[2;35m====> avg-rtt=13.418 (std-dev=45.022)\u{1b}[0m\n\
            sockperf: \u{1b}[2;35mTotal 115362 observations\u{1b}[0m; each percentile\n\
            sockperf: ---> percentile 99.900 =   49.394\n\
            sockperf: ---> percentile 99.000 =   14.131\n\
            sockperf: ---> percentile 50.000 =   12.578\n";
        let r = parse_sockperf(text).unwrap();
        assert_eq!(
            r,
            RttResult {
                avg_us: 13.418,
                p50_us: 12.578,
                p99_us: 14.131,
                observations: Some(115362)
            }
        );
    }

    #[test]
    fn sockperf_half_rtt_is_doubled() {
        let text = "====> avg-latency=6.5 (std-dev=1)\n\
            ---> percentile 99.000 =   7.0\n---> percentile 50.000 =   6.25\n";
        let r = parse_sockperf(text).unwrap();
        assert_eq!((r.avg_us, r.p50_us, r.p99_us), (13.0, 12.5, 14.0));
    }

    #[test]
    fn sockperf_without_percentiles_fails() {
        assert!(parse_sockperf("sockperf: connection refused").is_err());
    }

    #[test]
    fn prog_runs_sum_netshim_programs_only() {
        let json = r#"[{"id":1,"name":"netshim_redirec","run_time_ns":1000,"run_cnt":10},
            {"id":2,"name":"netshim_redirect","run_time_ns":500,"run_cnt":5},
            {"id":3,"name":"other","run_time_ns":9999,"run_cnt":99},
            {"id":4,"name":"netshim_redirec"}]"#;
        let now = ProgRuns::parse(json).unwrap();
        assert_eq!(
            now,
            ProgRuns {
                run_time_ns: 1500,
                run_cnt: 15
            }
        );
        let before = ProgRuns {
            run_time_ns: 500,
            run_cnt: 5,
        };
        assert_eq!(now.ns_per_run_since(before), Some(100.0));
        assert_eq!(now.ns_per_run_since(now), None);
    }

    #[test]
    fn busy_jiffies_skip_idle_iowait_steal() {
        let stat = "cpu  10 1 5 1000 7 2 3 9 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        let j = CpuJiffies::parse(stat).unwrap();
        assert_eq!(j.busy, 10 + 1 + 5 + 2 + 3);
        assert_eq!(j.softirq, 3);
        let later = CpuJiffies {
            busy: j.busy + 7,
            softirq: 5,
        };
        assert_eq!(
            later.since(j),
            CpuJiffies {
                busy: 7,
                softirq: 2
            }
        );
    }
}
