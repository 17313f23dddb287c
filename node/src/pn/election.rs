//! Gateway election (B.1 steps 5-7): when two paired devices are both PNEs, each computes the
//! same winner from the capabilities they exchanged at steps 3-4, so no further message is
//! needed to agree.
//!
//! The rule, compared in this order (the first difference decides):
//! 1. the owner's preference: `always` beats `auto` beats `never`; a device set to `never`
//!    never wins (if both are `never`, there is no gateway and the pairing stops);
//! 2. mains power beats battery;
//! 3. a device that reaches a WAN beats one that does not;
//! 4. the higher remaining battery (a device on mains counts as 100 %);
//! 5. more total memory, in 256 MiB steps (so that two similar machines tie here);
//! 6. more CPU cores;
//! 7. ties are broken by PeerId: the greater PeerId (compared as bytes) wins.

use cpns_overlay::{Capabilities, GatewayPreference, PowerSource};
use libp2p::PeerId;

/// A candidate: its PeerId and the capabilities it announced.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate<'a> {
    pub(crate) peer: &'a PeerId,
    pub(crate) caps: &'a Capabilities,
}

/// The ordered score of a candidate; a greater score wins.
fn score(c: &Candidate<'_>) -> (u8, u8, u8, u8, u64, u16, Vec<u8>) {
    let caps = c.caps;
    let preference = match caps.gateway_preference {
        GatewayPreference::Always => 2,
        GatewayPreference::Auto => 1,
        GatewayPreference::Never => 0,
    };
    let mains = u8::from(caps.dynamic.power == PowerSource::Mains);
    let wan = u8::from(caps.dynamic.wan);
    let battery = if caps.dynamic.power == PowerSource::Mains {
        100
    } else {
        caps.dynamic.battery_percent.unwrap_or(0).min(100)
    };
    let memory_steps = caps.static_caps.memory_bytes / (256 * 1024 * 1024);
    (
        preference,
        mains,
        wan,
        battery,
        memory_steps,
        caps.static_caps.cpu_cores,
        c.peer.to_bytes(),
    )
}

/// The winner of the election between `a` and `b`, or `None` if neither may be a gateway.
pub(crate) fn elect<'a>(a: Candidate<'a>, b: Candidate<'a>) -> Option<&'a PeerId> {
    let eligible = |c: &Candidate<'_>| c.caps.gateway_preference != GatewayPreference::Never;
    match (eligible(&a), eligible(&b)) {
        (false, false) => None,
        (true, false) => Some(a.peer),
        (false, true) => Some(b.peer),
        (true, true) => Some(if score(&a) >= score(&b) {
            a.peer
        } else {
            b.peer
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(
        pref: GatewayPreference,
        power: PowerSource,
        battery: Option<u8>,
        mem_gib: u64,
    ) -> Capabilities {
        let mut c = Capabilities {
            gateway_preference: pref,
            ..Capabilities::default()
        };
        c.dynamic.power = power;
        c.dynamic.battery_percent = battery;
        c.dynamic.wan = true;
        c.static_caps.memory_bytes = mem_gib << 30;
        c.static_caps.cpu_cores = 4;
        c
    }

    #[test]
    fn both_sides_agree_whatever_the_order() {
        let (p, q) = (PeerId::random(), PeerId::random());
        let a = caps(GatewayPreference::Auto, PowerSource::Mains, None, 8);
        let b = caps(GatewayPreference::Auto, PowerSource::Mains, None, 8);
        let x = elect(
            Candidate { peer: &p, caps: &a },
            Candidate { peer: &q, caps: &b },
        );
        let y = elect(
            Candidate { peer: &q, caps: &b },
            Candidate { peer: &p, caps: &a },
        );
        assert_eq!(x, y);
        let expected = if p.to_bytes() > q.to_bytes() { &p } else { &q };
        assert_eq!(x, Some(expected), "ties go to the greater PeerId");
    }

    #[test]
    fn mains_beats_battery_and_preference_beats_all() {
        let (p, q) = (PeerId::random(), PeerId::random());
        let laptop = caps(GatewayPreference::Auto, PowerSource::Battery, Some(90), 32);
        let nas = caps(GatewayPreference::Auto, PowerSource::Mains, None, 1);
        assert_eq!(
            elect(
                Candidate {
                    peer: &p,
                    caps: &laptop
                },
                Candidate {
                    peer: &q,
                    caps: &nas
                }
            ),
            Some(&q)
        );
        let keen = caps(GatewayPreference::Always, PowerSource::Battery, Some(5), 1);
        assert_eq!(
            elect(
                Candidate {
                    peer: &p,
                    caps: &keen
                },
                Candidate {
                    peer: &q,
                    caps: &nas
                }
            ),
            Some(&p)
        );
    }

    #[test]
    fn never_never_wins() {
        let (p, q) = (PeerId::random(), PeerId::random());
        let never = caps(GatewayPreference::Never, PowerSource::Mains, None, 64);
        let weak = caps(GatewayPreference::Auto, PowerSource::Battery, Some(3), 1);
        assert_eq!(
            elect(
                Candidate {
                    peer: &p,
                    caps: &never
                },
                Candidate {
                    peer: &q,
                    caps: &weak
                }
            ),
            Some(&q)
        );
        assert_eq!(
            elect(
                Candidate {
                    peer: &p,
                    caps: &never
                },
                Candidate {
                    peer: &q,
                    caps: &never
                }
            ),
            None
        );
    }

    #[test]
    fn battery_level_and_memory_order() {
        let (p, q) = (PeerId::random(), PeerId::random());
        let low = caps(GatewayPreference::Auto, PowerSource::Battery, Some(20), 16);
        let high = caps(GatewayPreference::Auto, PowerSource::Battery, Some(80), 2);
        assert_eq!(
            elect(
                Candidate {
                    peer: &p,
                    caps: &low
                },
                Candidate {
                    peer: &q,
                    caps: &high
                }
            ),
            Some(&q)
        );
        let small = caps(GatewayPreference::Auto, PowerSource::Mains, None, 2);
        let big = caps(GatewayPreference::Auto, PowerSource::Mains, None, 16);
        assert_eq!(
            elect(
                Candidate {
                    peer: &p,
                    caps: &small
                },
                Candidate {
                    peer: &q,
                    caps: &big
                }
            ),
            Some(&q)
        );
    }
}
