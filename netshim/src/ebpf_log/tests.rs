use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use log::Log;

use super::*;
use crate::guard::events as guard_events;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured(f: impl FnOnce()) -> String {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let out = buf.0.lock().unwrap().clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn records_become_events_with_their_level_program_and_netns() {
    let forward = Forward {
        prog_id: 42,
        netns: "pod-a".into(),
    };
    let out = captured(|| {
        for (level, text) in [
            (log::Level::Warn, "peers entry of ifindex 7 has flags 0x80"),
            (log::Level::Debug, "a debug record"),
        ] {
            forward.log(
                &log::Record::builder()
                    .level(level)
                    .target("netshim_ebpf")
                    .file(Some("src/main.rs"))
                    .line(Some(60))
                    .args(format_args!("{text}"))
                    .build(),
            );
        }
    });
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains("WARN"), "{out}");
    assert!(lines[0].contains(TARGET), "{out}");
    assert!(
        lines[0].contains("peers entry of ifindex 7 has flags 0x80"),
        "{out}"
    );
    assert!(lines[0].contains("prog_id=42"), "{out}");
    assert!(lines[0].contains("netns=\"pod-a\""), "{out}");
    assert!(lines[0].contains("src/main.rs:60"), "{out}");
    assert!(
        lines[1].contains("DEBUG") && lines[1].contains("a debug record"),
        "{out}"
    );
}

#[test]
fn guard_refusals_become_warn_events_with_their_fields() {
    let mut ev = netshim_common::GuardEvent {
        reason: netshim_common::GUARD_SOURCE_IP as u8,
        mode: netshim_common::GUARD_MODE_ENFORCE as u8,
        kind: netshim_common::GUARD_EVENT_V4,
        mac: [2, 0, 0, 0, 0, 0x66],
        ..Default::default()
    };
    ev.addr[..4].copy_from_slice(&[10, 77, 0, 99]);
    let ep = netshim_common::EndpointRecord {
        in_use: 1,
        pod_name: netshim_common::to_fixed(b"eth0"),
        tap_name: netshim_common::to_fixed(b"tap0_kata"),
        ..Default::default()
    };
    let out = captured(|| guard_events::Refusal::new(&ev, Some(&ep)).emit("pod-a"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    for want in [
        "WARN",
        guard_events::TARGET,
        "guard: endpoint 0 (eth0 / tap0_kata) dropped a packet from the VM: source_ip 10.77.0.99, source MAC 02:00:00:00:00:66",
        "netns=\"pod-a\"",
        "endpoint=eth0",
        "reason=\"source_ip\"",
        "address=10.77.0.99",
    ] {
        assert!(lines[0].contains(want), "{want} missing in {out}");
    }
}

#[test]
fn the_kernel_name_is_the_first_15_characters() {
    assert_eq!(kernel_program_name(), "netshim_redirec");
}

#[test]
fn a_sandbox_without_pins_is_not_attached() {
    let scope = Scope::Sandbox {
        netns: "x".into(),
        dir: PathBuf::from("/sys/fs/bpf/netshim/netns-no-such-sandbox"),
    };
    match datapath_programs(&scope) {
        Err(EbpfLogError::NotAttached { netns, .. }) => assert_eq!(netns, "x"),
        // Without bpffs access (not root) the pin cannot be read either way.
        Err(EbpfLogError::Map { .. }) if !nix::unistd::geteuid().is_root() => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn error_records_read_as_the_warnings_aya_log_printed() {
    use netshim_common::{DatapathEvent, DATAPATH_EVENT_REDIRECT, DATAPATH_EVENT_SKEW};
    let skew = DatapathEvent {
        kind: DATAPATH_EVENT_SKEW,
        ifindex: 2,
        detail: 0x81,
        peer_ifindex: 3,
        known_flags: 0x3,
        _pad: 0,
        time_ns: 1,
    };
    assert_eq!(
        errors::message(&skew).as_deref(),
        Some(
            "netshim: peers entry of ifindex 2 has flags 0x81 unknown to this datapath \
             (known 0x3; written by another netshim version?): packet passed to the stack, \
             not redirected"
        )
    );
    let refused = DatapathEvent {
        kind: DATAPATH_EVENT_REDIRECT,
        detail: (-22i32) as u32,
        ..skew
    };
    assert_eq!(
        errors::message(&refused).as_deref(),
        Some("netshim: bpf_redirect to ifindex 3 returned -22")
    );
    assert_eq!(errors::message(&DatapathEvent::default()), None);
}
