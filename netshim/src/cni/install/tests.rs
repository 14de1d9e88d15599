use super::*;

fn options(dir: &Path, bin: &Path, binary: &Path) -> InstallOptions {
    InstallOptions {
        conf_dir: dir.to_owned(),
        bin_dir: bin.to_owned(),
        chain_into: None,
        plugin: conflist::plugin_entry(None).unwrap(),
        binary: Some(binary.to_owned()),
    }
}

struct Node {
    _tmp: tempfile::TempDir,
    conf: PathBuf,
    bin: PathBuf,
    exe: PathBuf,
}

fn node() -> Node {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("net.d");
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let exe = tmp.path().join("netshim-build");
    std::fs::write(&exe, b"\x7fELF not really").unwrap();
    Node {
        _tmp: tmp,
        conf,
        bin,
        exe,
    }
}

const CONF: &str = r#"{"cniVersion": "0.4.0", "name": "br", "type": "bridge", "bridge": "cni0"}"#;

#[test]
fn a_conf_becomes_a_conflist_and_comes_back_byte_for_byte() {
    let n = node();
    std::fs::write(n.conf.join("10-br.conf"), CONF).unwrap();
    let o = options(&n.conf, &n.bin, &n.exe);
    let r = install(&o).unwrap();
    assert!(r.binary.changed && r.chain.changed);
    assert_eq!(r.chain.path, n.conf.join("10-br.conflist"));
    assert_eq!(r.chain.converted_from, Some(n.conf.join("10-br.conf")));
    assert!(!n.conf.join("10-br.conf").exists());
    let list: Value =
        serde_json::from_slice(&std::fs::read(n.conf.join("10-br.conflist")).unwrap()).unwrap();
    assert_eq!(list["cniVersion"], "0.4.0");
    assert_eq!(list["plugins"][0]["type"], "bridge");
    assert_eq!(list["plugins"][1], serde_json::json!({"type": "netshim"}));
    // Idempotent.
    let again = install(&o).unwrap();
    assert!(!again.binary.changed && !again.chain.changed, "{again:?}");
    let u = uninstall(&n.conf, &n.bin).unwrap();
    assert_eq!(u.restored, [n.conf.join("10-br.conf")]);
    assert_eq!(
        std::fs::read_to_string(n.conf.join("10-br.conf")).unwrap(),
        CONF
    );
    assert!(!n.conf.join("10-br.conflist").exists());
    assert!(!n.bin.join("netshim").exists());
    assert!(!n.conf.join(record::RECORD_DIR).exists());
}

#[test]
fn a_rewritten_primary_is_chained_again_and_its_new_bytes_are_the_original() {
    let n = node();
    let path = n.conf.join("10-br.conflist");
    let v1 = r#"{"cniVersion":"1.0.0","name":"br","plugins":[{"type":"bridge"}]}"#;
    std::fs::write(&path, v1).unwrap();
    let o = options(&n.conf, &n.bin, &n.exe);
    install(&o).unwrap();
    let v2 = r#"{"cniVersion":"1.0.0","name":"br","plugins":[{"type":"bridge","mtu":1400}]}"#;
    std::fs::write(&path, v2).unwrap();
    assert!(is_chained(&o).is_err());
    let r = chain(&o, false).unwrap();
    assert!(r.changed);
    assert!(is_chained(&o).is_ok());
    uninstall(&n.conf, &n.bin).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), v2);
}

#[test]
fn a_file_changed_after_install_only_loses_netshims_entry() {
    let n = node();
    let path = n.conf.join("10-br.conflist");
    std::fs::write(
        &path,
        r#"{"cniVersion":"1.0.0","name":"br","plugins":[{"type":"bridge"}]}"#,
    )
    .unwrap();
    install(&options(&n.conf, &n.bin, &n.exe)).unwrap();
    let mut v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["plugins"][0]["mtu"] = 9000.into();
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let u = uninstall(&n.conf, &n.bin).unwrap();
    assert_eq!(u.unchained, std::slice::from_ref(&path));
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        v["plugins"],
        serde_json::json!([{"type": "bridge", "mtu": 9000}])
    );
}

#[test]
fn a_new_first_file_takes_netshim_and_the_old_one_is_given_back() {
    let n = node();
    let old = n.conf.join("20-b.conflist");
    let b = r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#;
    std::fs::write(&old, b).unwrap();
    let o = options(&n.conf, &n.bin, &n.exe);
    install(&o).unwrap();
    std::fs::write(n.conf.join("10-a.conf"), CONF).unwrap();
    let r = chain(&o, false).unwrap();
    assert_eq!(r.released, Some(old.clone()));
    assert_eq!(r.path, n.conf.join("10-a.conflist"));
    assert_eq!(std::fs::read_to_string(&old).unwrap(), b);
    uninstall(&n.conf, &n.bin).unwrap();
    assert_eq!(
        std::fs::read_to_string(n.conf.join("10-a.conf")).unwrap(),
        CONF
    );
    // The binary was put there by the first install: it goes too.
    assert!(!n.bin.join("netshim").exists());
}

#[test]
fn plugin_json_is_checked_by_the_plugins_parser() {
    assert!(conflist::plugin_entry(Some(r#"{"model": "tcfilter"}"#)).is_ok());
    for bad in [
        r#"{"model": "bogus"}"#,
        r#"{"type": "bridge"}"#,
        r#"[1]"#,
        r#"{"cniVersion": "1.0.0"}"#,
        "{",
    ] {
        assert!(conflist::plugin_entry(Some(bad)).is_err(), "{bad}");
    }
}
