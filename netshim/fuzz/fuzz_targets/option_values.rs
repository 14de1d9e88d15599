//! Option values from the command line and the config file: --model (kata's names, "Unknown
//! type <x>" otherwise), --tc-backend, --fast-path, --tap-owner UID[:GID]. Each either
//! parses into a value that prints back as an accepted name, or is refused; no panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netshim::{
    config::TapOwner,
    datapath::{FastPath, TcBackend},
    model::InternetworkingModel,
};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match s.parse::<InternetworkingModel>() {
        Ok(m) => assert_eq!(m.to_string().parse::<InternetworkingModel>().ok(), Some(m)),
        Err(e) => assert!(e.to_string().starts_with("Unknown type "), "{e}"),
    }
    if let Ok(b) = s.parse::<TcBackend>() {
        assert_eq!(b.as_str().parse::<TcBackend>().ok(), Some(b));
    }
    let _ = s.parse::<FastPath>();
    let _ = s.parse::<TapOwner>();
});
