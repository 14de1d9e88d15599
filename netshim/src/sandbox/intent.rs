//! The content of the state files netshim writes (see [`super`]): the intent file as typed
//! values, and the fields every state file shares. The commit file is an
//! [`AttachReport`](crate::sandbox::AttachReport).

use std::{collections::BTreeMap, fmt, path::PathBuf, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    datapath::{AttachMode, FastPath, TcBackend},
    guard::GuardSettings,
    model::InternetworkingModel,
};

/// What the intent file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Intent {
    /// `attach` or `detach`.
    pub op: String,
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    pub netns_path: PathBuf,
    pub netns_inode: u64,
    pub netns_cookie: u64,
    /// What the operation was asked to do (`null` in no file netshim writes; read as
    /// nothing recorded).
    #[serde(default)]
    pub options: Option<IntentOptions>,
}

impl Intent {
    /// The custom tap names the intent records (pod device → tap).
    pub fn tap_names(&self) -> Option<&BTreeMap<String, String>> {
        self.options.as_ref().map(IntentOptions::tap_names)
    }
}

/// The options of the operation an intent file announces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum IntentOptions {
    /// An attach records all its options.
    Attach(AttachIntent),
    /// A detach records only the custom tap names (also what any other object reads as).
    Detach(DetachIntent),
}

impl IntentOptions {
    /// The custom tap names (pod device → tap): a tap made under such a name is found by them
    /// when the run that made it was killed.
    pub fn tap_names(&self) -> &BTreeMap<String, String> {
        match self {
            IntentOptions::Attach(a) => &a.tap_names,
            IntentOptions::Detach(d) => &d.tap_names,
        }
    }
}

/// The attach options, as the intent file records them. The fields are in the order of
/// their names: the order the files of earlier versions have them in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AttachIntent {
    pub disable_new_netns: bool,
    pub ebpf_attach: Option<AttachMode>,
    pub fast_path: FastPath,
    pub guard: GuardSettings,
    pub guard_explicit: bool,
    /// `tcfilter`, `macvtap` or `none`.
    #[serde(with = "as_text")]
    #[schemars(with = "String")]
    pub model: InternetworkingModel,
    pub queues: u32,
    pub skip_unsupported: bool,
    pub tap_group: Option<u32>,
    /// Read back by the survey: a tap made under a custom name is found by it.
    pub tap_names: BTreeMap<String, String>,
    pub tap_owner: Option<u32>,
    pub tc_backend: TcBackend,
    pub txqueuelen: Option<u32>,
}

/// What a detach's intent file records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DetachIntent {
    /// The custom tap names the sandbox had (pod device → tap): the detach intent replaces
    /// the attach intent that may be the only record of them.
    #[serde(default)]
    pub tap_names: BTreeMap<String, String>,
}

/// The fields the intent and the commit file share: which netns the state belongs to. Read
/// leniently (any field may be missing) to find the netns of a dead sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NetnsRecord {
    #[serde(default)]
    pub netns_path: Option<String>,
    #[serde(default)]
    pub netns_inode: Option<u64>,
    #[serde(default)]
    pub netns_cookie: Option<u64>,
}

/// A value written as its `Display` text and read with `FromStr`.
mod as_text {
    use super::*;

    pub fn serialize<T: fmt::Display, S: serde::Serializer>(
        v: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
        D: serde::Deserializer<'de>,
    {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::GuardMode;

    /// An attach's intent file byte for byte as netshim wrote it before the options were
    /// typed (`serde_json::json!`, whose map sorts the keys, nested ones included).
    const ATTACH_BEFORE: &str = r#"{
  "op": "attach",
  "pid": 4242,
  "started_at": 1764640000,
  "netns_path": "/run/netns/pod",
  "netns_inode": 4026532000,
  "netns_cookie": 12345,
  "options": {
    "disable_new_netns": false,
    "ebpf_attach": "cls-bpf",
    "fast_path": "auto",
    "guard": {
      "allow_dhcp": true,
      "allowed_addresses": [
        "10.0.0.0/8"
      ],
      "allowed_ethertypes": [
        "0x88b5"
      ],
      "mode": "enforce"
    },
    "guard_explicit": true,
    "model": "macvtap",
    "queues": 2,
    "skip_unsupported": true,
    "tap_group": null,
    "tap_names": {
      "eth0": "vm0"
    },
    "tap_owner": 1000,
    "tc_backend": "mirred",
    "txqueuelen": 500
  }
}"#;

    /// The same with every option at its default.
    const ATTACH_DEFAULTS_BEFORE: &str = r#"{
  "op": "attach",
  "pid": 4242,
  "started_at": 1764640000,
  "netns_path": "/run/netns/pod",
  "netns_inode": 4026532000,
  "netns_cookie": 12345,
  "options": {
    "disable_new_netns": false,
    "ebpf_attach": null,
    "fast_path": "auto",
    "guard": {
      "allow_dhcp": false,
      "allowed_addresses": [],
      "allowed_ethertypes": [],
      "mode": "enforce"
    },
    "guard_explicit": false,
    "model": "tcfilter",
    "queues": 0,
    "skip_unsupported": false,
    "tap_group": null,
    "tap_names": {},
    "tap_owner": null,
    "tc_backend": "ebpf",
    "txqueuelen": null
  }
}"#;

    /// A detach's intent file as netshim wrote it before.
    const DETACH_BEFORE: &str = r#"{
  "op": "detach",
  "pid": 4242,
  "started_at": 1764640000,
  "netns_path": "/run/netns/pod",
  "netns_inode": 4026532000,
  "netns_cookie": 12345,
  "options": {
    "tap_names": {
      "eth0": "vm0"
    }
  }
}"#;

    fn intent(op: &str, options: IntentOptions) -> Intent {
        Intent {
            op: op.into(),
            pid: 4242,
            started_at: 1764640000,
            netns_path: "/run/netns/pod".into(),
            netns_inode: 4026532000,
            netns_cookie: 12345,
            options: Some(options),
        }
    }

    fn attach_full() -> AttachIntent {
        AttachIntent {
            disable_new_netns: false,
            ebpf_attach: Some(AttachMode::ClsBpf),
            fast_path: FastPath::Auto,
            guard: GuardSettings {
                mode: GuardMode::Enforce,
                allow_dhcp: true,
                allowed_addresses: vec!["10.0.0.0/8".parse().unwrap()],
                allowed_ethertypes: vec![0x88b5],
            },
            guard_explicit: true,
            model: InternetworkingModel::MacVtap,
            queues: 2,
            skip_unsupported: true,
            tap_group: None,
            tap_names: BTreeMap::from([("eth0".into(), "vm0".into())]),
            tap_owner: Some(1000),
            tc_backend: TcBackend::Mirred,
            txqueuelen: Some(500),
        }
    }

    fn attach_defaults() -> AttachIntent {
        AttachIntent {
            disable_new_netns: false,
            ebpf_attach: None,
            fast_path: FastPath::default(),
            guard: GuardSettings::default(),
            guard_explicit: false,
            model: InternetworkingModel::TcFilter,
            queues: 0,
            skip_unsupported: false,
            tap_group: None,
            tap_names: BTreeMap::new(),
            tap_owner: None,
            tc_backend: TcBackend::Ebpf,
            txqueuelen: None,
        }
    }

    fn cases() -> [(&'static str, Intent); 3] {
        let detach = DetachIntent {
            tap_names: BTreeMap::from([("eth0".into(), "vm0".into())]),
        };
        [
            (
                ATTACH_BEFORE,
                intent("attach", IntentOptions::Attach(attach_full())),
            ),
            (
                ATTACH_DEFAULTS_BEFORE,
                intent("attach", IntentOptions::Attach(attach_defaults())),
            ),
            (
                DETACH_BEFORE,
                intent("detach", IntentOptions::Detach(detach)),
            ),
        ]
    }

    /// Intent files written by the previous version read as the typed intent they record
    /// (the next run finds a killed run's custom taps in them).
    #[test]
    fn intent_files_of_the_previous_version_read_as_typed() {
        for (before, want) in cases() {
            let got: Intent = serde_json::from_str(before).unwrap();
            assert_eq!(got, want, "{before}");
        }
    }

    /// What the typed intent writes is the JSON the previous version wrote (the same keys
    /// and values; only the guard's keys are now in their declaration order), so the
    /// previous version reads it too.
    #[test]
    fn the_typed_intent_writes_what_the_previous_version_wrote() {
        for (before, typed) in cases() {
            let written = serde_json::to_vec_pretty(&typed).unwrap();
            let written: serde_json::Value = serde_json::from_slice(&written).unwrap();
            let before: serde_json::Value = serde_json::from_str(before).unwrap();
            assert_eq!(written, before);
        }
    }

    /// Options the file does not have, or that are `null`, read as nothing recorded; an
    /// object that is not an attach's reads as its tap names.
    #[test]
    fn intent_options_read_leniently() {
        let base = r#""op": "detach", "pid": 1, "started_at": 2, "netns_path": "/x",
            "netns_inode": 3, "netns_cookie": 4"#;
        for options in ["", r#", "options": null"#] {
            let i: Intent = serde_json::from_str(&format!("{{{base}{options}}}")).unwrap();
            assert_eq!(i.options, None);
            assert_eq!(i.tap_names(), None);
        }
        let other = r#", "options": {"model": "tcfilter", "tap_names": {"eth1": "t1"}}"#;
        let i: Intent = serde_json::from_str(&format!("{{{base}{other}}}")).unwrap();
        let want = BTreeMap::from([("eth1".to_string(), "t1".to_string())]);
        assert_eq!(i.tap_names(), Some(&want));
    }

    /// The netns fields of a state file, whichever it is, and of a partial one.
    #[test]
    fn netns_record_reads_any_state_file() {
        let r: NetnsRecord = serde_json::from_str(ATTACH_BEFORE).unwrap();
        assert_eq!(r.netns_cookie, Some(12345));
        assert_eq!(r.netns_inode, Some(4026532000));
        assert_eq!(r.netns_path.as_deref(), Some("/run/netns/pod"));
        let r: NetnsRecord = serde_json::from_str(r#"{"netns_cookie": 7}"#).unwrap();
        assert_eq!(
            (r.netns_cookie, r.netns_inode, r.netns_path),
            (Some(7), None, None)
        );
    }
}
