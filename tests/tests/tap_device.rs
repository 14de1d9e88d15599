//! Taps on a real network namespace (root only): create a persistent tap (with owner/group)
//! and adopt it again, check it with `ip -d link show`, refuse incompatible devices, open VMM
//! queues (single queue is exclusive, multi-queue is not), a non-persistent tap, remove.
//!
//! The tap ioctls act on the calling thread's netns, so every tap call runs on a thread that
//! has entered the test's netns ([`on_netns_thread`]); the harness thread never changes its
//! namespace, and nothing is created in it.

use std::os::fd::AsFd;

use netshim::tap::{
    create_persistent_tap, device_exists, remove_persistent_tap, tap_flags, tun_mode_by_name,
    TapError, TapSpec, TunMode, IFF_MULTI_QUEUE,
};
use netshim_tests::vmm_tap::{
    create_tap_queue, open_tap_queue, set_sndbuf, set_vnet_hdr_size, tun_flags, tun_info,
    vnet_hdr_size, IFF_PERSIST, VMM_OFFLOADS, VNET_HDR_LEN,
};
use netshim_tests::{on_netns_thread, require_root, TestNetns};

/// `ip -n NS args...`: (success, stdout).
fn ip(ns: &TestNetns, args: &[&str]) -> (bool, String) {
    let out = ns.try_ip(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn persistent_tap_in_netns() {
    require_root!();
    let ns = TestNetns::new("nsh-tapunit");

    // Create (with owner/group), and adopt again (idempotent).
    on_netns_thread(ns.path(), || {
        let spec = TapSpec {
            name: "tap7_kata".into(),
            queues: 1,
            owner: Some(0),
            group: Some(0),
        };
        create_persistent_tap(&spec).unwrap();
        create_persistent_tap(&spec).unwrap();
        assert_eq!(tun_mode_by_name("tap7_kata").unwrap(), Some(TunMode::Tap));
        assert_eq!(tun_mode_by_name("lo").unwrap(), None);
        assert!(matches!(
            tun_mode_by_name("nope0"),
            Err(TapError::NotFound { .. })
        ));
    });
    let (ok, out) = ip(&ns, &["-d", "link", "show", "tap7_kata"]);
    assert!(ok, "tap7_kata missing");
    assert!(out.contains("tun type tap"), "{out}");
    assert!(out.contains("vnet_hdr on"), "{out}");
    assert!(out.contains("persist on"), "{out}");
    assert!(!out.contains("multi_queue"), "{out}");
    // The tap must not exist in the test's own netns.
    assert!(!device_exists("tap7_kata").unwrap());

    on_netns_thread(ns.path(), || {
        // Wrong queue mode / not a tap.
        let mq = TapSpec {
            queues: 2,
            ..TapSpec::new("tap7_kata")
        };
        let e = create_persistent_tap(&mq).unwrap_err();
        assert!(matches!(e, TapError::Incompatible { .. }), "{e}");
        let e = create_persistent_tap(&TapSpec::new("lo")).unwrap_err();
        assert!(matches!(e, TapError::Incompatible { .. }), "{e}");
        assert!(e.to_string().contains("lo"), "{e}");

        // A VMM queue: flags, offloads, vnet header size; single queue is exclusive.
        let fd = open_tap_queue("tap7_kata", false, Some(VMM_OFFLOADS)).unwrap();
        let info = tun_info(fd.as_fd()).unwrap();
        assert_eq!(info.name, "tap7_kata");
        assert_eq!(info.mode(), Some(TunMode::Tap));
        let f = tun_flags(fd.as_fd()).unwrap();
        assert_eq!(f & tap_flags(false), tap_flags(false), "{f:#x}");
        assert_ne!(f & IFF_PERSIST, 0, "{f:#x}");
        assert_eq!(vnet_hdr_size(fd.as_fd()).unwrap(), VNET_HDR_LEN);
        set_vnet_hdr_size(fd.as_fd(), 12).unwrap();
        assert_eq!(vnet_hdr_size(fd.as_fd()).unwrap(), 12);
        set_vnet_hdr_size(fd.as_fd(), VNET_HDR_LEN).unwrap();
        set_sndbuf(fd.as_fd(), 1 << 20).unwrap();
        let e = open_tap_queue("tap7_kata", false, None).unwrap_err();
        assert!(matches!(e, TapError::Busy { .. }), "{e}");
        let e = remove_persistent_tap("tap7_kata", false).unwrap_err();
        assert!(matches!(e, TapError::Busy { .. }), "{e}");
        drop(fd);
        let e = open_tap_queue("nope0", false, None).unwrap_err();
        assert!(matches!(e, TapError::NotFound { .. }), "{e}");

        // A non-persistent tap exists only while its fd is open.
        let q = create_tap_queue("guest0", false, Some(VMM_OFFLOADS)).unwrap();
        assert!(device_exists("guest0").unwrap());
        let e = create_tap_queue("guest0", false, None).unwrap_err();
        assert!(matches!(e, TapError::Busy { .. }), "{e}");
        drop(q);
        assert!(!device_exists("guest0").unwrap());

        // Multi-queue tap: several queues at once.
        let mq = TapSpec {
            queues: 2,
            ..TapSpec::new("tap8_kata")
        };
        create_persistent_tap(&mq).unwrap();
        let q1 = open_tap_queue("tap8_kata", true, Some(VMM_OFFLOADS)).unwrap();
        let q2 = open_tap_queue("tap8_kata", true, Some(VMM_OFFLOADS)).unwrap();
        assert_ne!(tun_flags(q2.as_fd()).unwrap() & IFF_MULTI_QUEUE, 0);
        drop((q1, q2));
    });
    let (_, out) = ip(&ns, &["-d", "link", "show", "tap8_kata"]);
    assert!(out.contains("multi_queue"), "{out}");

    on_netns_thread(ns.path(), || {
        remove_persistent_tap("tap7_kata", false).unwrap();
        remove_persistent_tap("tap8_kata", true).unwrap();
        assert!(!device_exists("tap7_kata").unwrap());
        assert!(!device_exists("tap8_kata").unwrap());
        let e = remove_persistent_tap("tap7_kata", false).unwrap_err();
        assert!(matches!(e, TapError::NotFound { .. }), "{e}");
    });
    let (ok, _) = ip(&ns, &["link", "show", "tap7_kata"]);
    assert!(!ok, "tap7_kata still exists");
}
