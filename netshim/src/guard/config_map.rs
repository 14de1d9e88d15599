//! The `guard` map value of one endpoint and its entries in the `guard_v4`/`guard_v6`
//! LPM tries, built from the guest MAC, the endpoint's addresses and the settings.
//!
//! Byte order (see `netshim_common::GuardConfig`): addresses are their network-order
//! bytes reinterpreted in native order (`from_ne_bytes(octets)`), ethertypes are network
//! order, as the program loads them from the packet. The first [`GUARD_V4_SLOTS`] IPv4 and
//! [`GUARD_V6_SLOTS`] IPv6 addresses of the endpoint are inline; more go into the tries as
//! /32 and /128; the allowed CIDRs are always in the tries. A trie key's `prefix_len`
//! counts the 32 bits of the endpoint index too (a /24 is 56). The trie value says where
//! an entry comes from ([`TRIE_ADDRESS`], [`TRIE_ALLOWED`], both), so that the guard reads
//! back as it was set; the program only looks at whether a key is there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netshim_common::{
    GuardConfig, GUARD_ALLOW_DHCP, GUARD_ETHERTYPE_SLOTS, GUARD_HAS_V4_CIDRS, GUARD_HAS_V6_CIDRS,
    GUARD_V4_SLOTS, GUARD_V6_SLOTS,
};

use super::{GuardMode, GuardSettings};
use crate::interfaces::Mac;

/// Trie value bit: an address of the endpoint beyond the inline slots.
pub const TRIE_ADDRESS: u8 = 1;
/// Trie value bit: an allowed CIDR (`allowed_addresses`).
pub const TRIE_ALLOWED: u8 = 2;

/// A `guard_v4` entry: (prefix_len including the index's 32 bits, key address, value).
pub type V4Entry = (u32, [u8; 4], u8);
/// A `guard_v6` entry, likewise.
pub type V6Entry = (u32, [u8; 16], u8);

/// Everything the maps hold of one endpoint's guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardEntry {
    pub config: GuardConfig,
    pub v4: Vec<V4Entry>,
    pub v6: Vec<V6Entry>,
}

/// fe80::/64 with the modified EUI-64 interface identifier of `mac` (RFC 4291 appendix A):
/// the link-local address a guest derives from its MAC.
pub fn eui64_link_local(mac: Mac) -> Ipv6Addr {
    let m = mac.0;
    let mut b = [0u8; 16];
    b[0] = 0xfe;
    b[1] = 0x80;
    b[8..16].copy_from_slice(&[m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
    Ipv6Addr::from(b)
}

fn v6_words(addr: Ipv6Addr) -> [u64; 2] {
    let b = addr.octets();
    [
        u64::from_ne_bytes(b[..8].try_into().expect("8 bytes")),
        u64::from_ne_bytes(b[8..].try_into().expect("8 bytes")),
    ]
}

fn v6_from_words(w: [u64; 2]) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&w[0].to_ne_bytes());
    b[8..].copy_from_slice(&w[1].to_ne_bytes());
    Ipv6Addr::from(b)
}

fn add_key<const N: usize>(
    keys: &mut Vec<(u32, [u8; N], u8)>,
    prefix: u32,
    addr: [u8; N],
    bit: u8,
) {
    match keys.iter_mut().find(|(p, a, _)| *p == prefix && *a == addr) {
        Some(entry) => entry.2 |= bit,
        None => keys.push((prefix, addr, bit)),
    }
}

impl GuardEntry {
    /// The guard of an endpoint whose guest MAC is `mac` and whose addresses are
    /// `addresses` (the pod device's; its EUI-64 link-local is implied by the MAC and not
    /// stored twice).
    pub fn build(mac: Mac, addresses: &[IpAddr], settings: &GuardSettings) -> Self {
        let link_local = eui64_link_local(mac);
        let mut config = GuardConfig {
            mode: settings.mode.to_map(),
            mac: mac.0,
            link_local: v6_words(link_local),
            ..GuardConfig::default()
        };
        if settings.allow_dhcp {
            config.flags |= GUARD_ALLOW_DHCP;
        }
        for (slot, &t) in config.ethertypes.iter_mut().zip(
            settings
                .allowed_ethertypes
                .iter()
                .take(GUARD_ETHERTYPE_SLOTS),
        ) {
            *slot = t.to_be();
        }
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        let mut seen = Vec::new();
        for &addr in addresses {
            if seen.contains(&addr) || addr == IpAddr::V6(link_local) {
                continue;
            }
            seen.push(addr);
            match addr {
                IpAddr::V4(a) => {
                    let word = u32::from_ne_bytes(a.octets());
                    match usize::from(config.v4_count) {
                        n if n < GUARD_V4_SLOTS => {
                            config.v4[n] = word;
                            config.v4_count += 1;
                        }
                        _ => add_key(&mut v4, 64, a.octets(), TRIE_ADDRESS),
                    }
                }
                IpAddr::V6(a) => match usize::from(config.v6_count) {
                    n if n < GUARD_V6_SLOTS => {
                        config.v6[n] = v6_words(a);
                        config.v6_count += 1;
                    }
                    _ => add_key(&mut v6, 160, a.octets(), TRIE_ADDRESS),
                },
            }
        }
        for net in &settings.allowed_addresses {
            let prefix = 32 + u32::from(net.prefix_len());
            match net.trunc() {
                IpNet::V4(n) => add_key(&mut v4, prefix, n.addr().octets(), TRIE_ALLOWED),
                IpNet::V6(n) => add_key(&mut v6, prefix, n.addr().octets(), TRIE_ALLOWED),
            }
        }
        if !v4.is_empty() {
            config.flags |= GUARD_HAS_V4_CIDRS;
        }
        if !v6.is_empty() {
            config.flags |= GUARD_HAS_V6_CIDRS;
        }
        Self { config, v4, v6 }
    }

    pub fn mode(&self) -> GuardMode {
        GuardMode::from_map(self.config.mode)
    }

    pub fn mac(&self) -> Mac {
        Mac(self.config.mac)
    }

    /// The endpoint's addresses the guard allows: inline ones, then the trie's, then the
    /// EUI-64 link-local.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let c = &self.config;
        let mut out: Vec<IpAddr> = Vec::new();
        for &w in
            c.v4.iter()
                .take(usize::from(c.v4_count).min(GUARD_V4_SLOTS))
        {
            out.push(Ipv4Addr::from(w.to_ne_bytes()).into());
        }
        for (p, a, bits) in &self.v4 {
            if *p == 64 && bits & TRIE_ADDRESS != 0 {
                out.push(Ipv4Addr::from(*a).into());
            }
        }
        for &w in
            c.v6.iter()
                .take(usize::from(c.v6_count).min(GUARD_V6_SLOTS))
        {
            out.push(v6_from_words(w).into());
        }
        for (p, a, bits) in &self.v6 {
            if *p == 160 && bits & TRIE_ADDRESS != 0 {
                out.push(Ipv6Addr::from(*a).into());
            }
        }
        out.push(v6_from_words(c.link_local).into());
        out
    }

    /// The settings as the maps hold them.
    pub fn settings(&self) -> GuardSettings {
        let c = &self.config;
        let mut allowed = Vec::new();
        for (p, a, bits) in &self.v4 {
            if bits & TRIE_ALLOWED != 0 {
                let prefix = p.saturating_sub(32).min(32) as u8;
                allowed.push(IpNet::new(Ipv4Addr::from(*a).into(), prefix).expect("<= 32"));
            }
        }
        for (p, a, bits) in &self.v6 {
            if bits & TRIE_ALLOWED != 0 {
                let prefix = p.saturating_sub(32).min(128) as u8;
                allowed.push(IpNet::new(Ipv6Addr::from(*a).into(), prefix).expect("<= 128"));
            }
        }
        allowed.sort();
        GuardSettings {
            mode: self.mode(),
            allow_dhcp: c.flags & GUARD_ALLOW_DHCP != 0,
            allowed_addresses: allowed,
            allowed_ethertypes: c
                .ethertypes
                .iter()
                .filter(|&&t| t != 0)
                .map(|&t| u16::from_be(t))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x02, 0x42, 0x0a, 0x63, 0x00, 0x02]);

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn eui64_flips_the_universal_bit_and_inserts_fffe() {
        assert_eq!(
            eui64_link_local(MAC),
            "fe80::42:aff:fe63:2".parse::<Ipv6Addr>().unwrap()
        );
        // A universally administered MAC gets the bit set.
        assert_eq!(
            eui64_link_local(Mac([0x00, 0x1b, 0x21, 0xaa, 0xbb, 0xcc])),
            "fe80::21b:21ff:feaa:bbcc".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn addresses_are_in_packet_byte_order() {
        let e = GuardEntry::build(
            MAC,
            &ips(&["10.99.0.2", "fd00::2"]),
            &GuardSettings::default(),
        );
        let c = e.config;
        assert_eq!(c.mode, netshim_common::GUARD_MODE_ENFORCE);
        assert_eq!(c.mac, MAC.0);
        assert_eq!((c.v4_count, c.v6_count), (1, 1));
        // What the program compares: the packet's 4 source bytes loaded as a native u32.
        assert_eq!(c.v4[0].to_ne_bytes(), [10, 99, 0, 2]);
        let mut v6 = [0u8; 16];
        v6[..8].copy_from_slice(&c.v6[0][0].to_ne_bytes());
        v6[8..].copy_from_slice(&c.v6[0][1].to_ne_bytes());
        assert_eq!(Ipv6Addr::from(v6), "fd00::2".parse::<Ipv6Addr>().unwrap());
        let mut ll = [0u8; 16];
        ll[..8].copy_from_slice(&c.link_local[0].to_ne_bytes());
        ll[8..].copy_from_slice(&c.link_local[1].to_ne_bytes());
        assert_eq!(&ll[..2], &[0xfe, 0x80]);
        assert_eq!(&ll[8..], &[0x00, 0x42, 0x0a, 0xff, 0xfe, 0x63, 0x00, 0x02]);
        assert_eq!(c.flags, 0, "no CIDRs, no DHCP");
        assert!(e.v4.is_empty() && e.v6.is_empty());
    }

    #[test]
    fn ethertypes_are_network_order_and_flags_follow_the_settings() {
        let s = GuardSettings {
            allow_dhcp: true,
            allowed_ethertypes: vec![0x88b5],
            allowed_addresses: vec!["10.0.0.5/32".parse().unwrap()],
            ..GuardSettings::default()
        };
        let c = GuardEntry::build(MAC, &[], &s).config;
        assert_eq!(c.ethertypes[0].to_ne_bytes(), [0x88, 0xb5]);
        assert_eq!(&c.ethertypes[1..], &[0, 0, 0]);
        assert_eq!(
            c.flags,
            netshim_common::GUARD_ALLOW_DHCP | netshim_common::GUARD_HAS_V4_CIDRS
        );
    }

    #[test]
    fn addresses_beyond_the_slots_overflow_into_the_tries() {
        let addrs = ips(&[
            "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "fd00::1",
            "fd00::2", "fd00::3", "fd00::4", "fd00::5",
        ]);
        let e = GuardEntry::build(MAC, &addrs, &GuardSettings::default());
        assert_eq!((e.config.v4_count, e.config.v6_count), (4, 4));
        assert_eq!(
            e.v4,
            vec![
                (64, [10, 0, 0, 5], TRIE_ADDRESS),
                (64, [10, 0, 0, 6], TRIE_ADDRESS)
            ]
        );
        assert_eq!(e.v6.len(), 1);
        assert_eq!(e.v6[0].0, 160);
        assert_eq!(
            Ipv6Addr::from(e.v6[0].1),
            "fd00::5".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            e.config.flags,
            netshim_common::GUARD_HAS_V4_CIDRS | netshim_common::GUARD_HAS_V6_CIDRS
        );
        // Read back: every address, the link-local last.
        let mut want = addrs.clone();
        want.push(eui64_link_local(MAC).into());
        let mut got = e.addresses();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn allowed_cidrs_are_prefixed_by_the_index_bits_and_read_back() {
        let s = GuardSettings {
            mode: GuardMode::Log,
            allowed_addresses: vec![
                "192.0.2.7/24".parse().unwrap(),
                "fd00:1::/64".parse().unwrap(),
                "10.0.0.6/32".parse().unwrap(),
            ],
            ..GuardSettings::default()
        }
        .validate()
        .unwrap();
        let addrs = ips(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.6"]);
        let e = GuardEntry::build(MAC, &addrs, &s);
        assert!(
            e.v4.contains(&(56, [192, 0, 2, 0], TRIE_ALLOWED)),
            "{:?}",
            e.v4
        );
        // An overflow address that is also allowed: one key, both bits.
        assert!(e
            .v4
            .contains(&(64, [10, 0, 0, 6], TRIE_ADDRESS | TRIE_ALLOWED)));
        assert_eq!(e.v6[0].0, 32 + 64);
        assert_eq!(e.settings(), s);
        assert!(e.addresses().contains(&"10.0.0.6".parse().unwrap()));
    }

    #[test]
    fn the_pods_own_link_local_and_duplicates_take_no_slot() {
        let ll: IpAddr = eui64_link_local(MAC).into();
        let e = GuardEntry::build(
            MAC,
            &[ll, "10.0.0.1".parse().unwrap(), "10.0.0.1".parse().unwrap()],
            &GuardSettings::default(),
        );
        assert_eq!((e.config.v4_count, e.config.v6_count), (1, 0));
        assert_eq!(
            e.addresses(),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap(), ll]
        );
    }
}
