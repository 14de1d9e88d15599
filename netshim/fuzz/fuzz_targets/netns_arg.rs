//! The `--netns NAME|PATH` argument: mapped to a path without panicking, never to a path
//! with a NUL byte or beyond PATH_MAX, and a bare name only ever to a file directly under
//! /run/netns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netshim::netns::{netns_path, MAX_NETNS_ARG, NETNS_RUN_DIR};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(arg) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = netns_path(arg) else {
        return;
    };
    assert!(!arg.is_empty() && arg.len() <= MAX_NETNS_ARG);
    assert!(!path.as_os_str().as_encoded_bytes().contains(&0));
    if !arg.contains('/') {
        assert_eq!(path.parent(), Some(Path::new(NETNS_RUN_DIR)), "{arg:?}");
        assert_eq!(path.file_name().and_then(|n| n.to_str()), Some(arg));
    }
});
