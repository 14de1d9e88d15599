//! The CNI network configuration on a plugin's stdin, with a chained `prevResult`: any bytes
//! either decode into a configuration netshim can use or are refused with a CNI error code;
//! they never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netshim::cni::{config, version, CniResult};

fuzz_target!(|data: &[u8]| {
    match config::parse(data) {
        Ok(conf) => {
            assert!(version::check(&conf.cni_version).is_ok());
            assert!((1..=256).contains(&conf.attach.queues));
            if let Some(prev) = conf.prev_result {
                // What was accepted survives a round trip, and every IP names an interface.
                let json = serde_json::to_value(&prev).expect("a result serializes");
                let back = CniResult::from_value(json).expect("re-decodes");
                assert_eq!(back, prev);
                for ip in &prev.ips {
                    assert!(ip.interface.is_none_or(|i| i < prev.interfaces.len()));
                }
            }
        }
        Err(e) => assert!(
            matches!(e.code, 1 | 2 | 6 | 7),
            "unexpected code {} for a parse error",
            e.code
        ),
    }
});
