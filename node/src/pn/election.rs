//! Gateway election (B.1 steps 5-7), and the ranking a failover (5.6.9) uses: when two paired
//! devices are both PNEs, each computes the same winner from the capabilities they exchanged
//! at steps 3-4, so no further message is needed to agree; when a PN's gateway falls silent,
//! its members rank themselves by the same rule from the candidacies in their member list.
//!
//! Only a device whose credential allows the gateway mode and whose owner did not say `never`
//! may win. Among those, compared in this order (the first difference decides):
//! 1. the owner's preference: `always` beats `auto`;
//! 2. mains power beats battery;
//! 3. a device that reaches a WAN beats one that does not;
//! 4. the higher remaining battery (a device on mains counts as 100 %);
//! 5. more total memory, in 256 MiB steps (so that two similar machines tie here);
//! 6. more CPU cores;
//! 7. ties are broken by PeerId: the greater PeerId (compared as bytes) wins.

use cpns_overlay::{Candidacy, GatewayPreference};
use libp2p::PeerId;

/// A candidate: its PeerId and its candidacy.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate<'a> {
    pub(crate) peer: &'a PeerId,
    pub(crate) candidacy: &'a Candidacy,
}

/// The ordered score of an eligible candidate; a greater score wins.
fn score(c: &Candidate<'_>) -> (u8, u8, u8, u8, u64, u16, Vec<u8>) {
    let d = c.candidacy;
    let preference = match d.preference {
        GatewayPreference::Always => 2,
        GatewayPreference::Auto => 1,
        GatewayPreference::Never => 0,
    };
    (
        preference,
        u8::from(d.mains),
        u8::from(d.wan),
        d.battery.min(100),
        d.memory_steps,
        d.cpu_cores,
        c.peer.to_bytes(),
    )
}

/// The winner of the election between `a` and `b`, or `None` if neither may be a gateway.
pub(crate) fn elect<'a>(a: Candidate<'a>, b: Candidate<'a>) -> Option<&'a PeerId> {
    match (a.candidacy.eligible(), b.candidacy.eligible()) {
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

/// The eligible candidates, best first (the order in which a failover lets them take over).
pub(crate) fn rank(candidates: &[(PeerId, Candidacy)]) -> Vec<PeerId> {
    let mut eligible: Vec<Candidate<'_>> = candidates
        .iter()
        .filter(|(_, c)| c.eligible())
        .map(|(peer, candidacy)| Candidate { peer, candidacy })
        .collect();
    eligible.sort_by_key(|c| std::cmp::Reverse(score(c)));
    eligible.into_iter().map(|c| *c.peer).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(pref: GatewayPreference, mains: bool, battery: u8, mem_gib: u64) -> Candidacy {
        Candidacy {
            allowed: true,
            preference: pref,
            mains,
            wan: true,
            battery: if mains { 100 } else { battery },
            memory_steps: mem_gib * 4,
            cpu_cores: 4,
        }
    }

    fn c<'a>(peer: &'a PeerId, candidacy: &'a Candidacy) -> Candidate<'a> {
        Candidate { peer, candidacy }
    }

    #[test]
    fn both_sides_agree_whatever_the_order() {
        let (p, q) = (PeerId::random(), PeerId::random());
        let a = cand(GatewayPreference::Auto, true, 0, 8);
        let b = cand(GatewayPreference::Auto, true, 0, 8);
        let x = elect(c(&p, &a), c(&q, &b));
        let y = elect(c(&q, &b), c(&p, &a));
        assert_eq!(x, y);
        let expected = if p.to_bytes() > q.to_bytes() { &p } else { &q };
        assert_eq!(x, Some(expected), "ties go to the greater PeerId");
    }

    #[test]
    fn mains_beats_battery_and_preference_beats_all() {
        let (p, q) = (PeerId::random(), PeerId::random());
        let laptop = cand(GatewayPreference::Auto, false, 90, 32);
        let nas = cand(GatewayPreference::Auto, true, 0, 1);
        assert_eq!(elect(c(&p, &laptop), c(&q, &nas)), Some(&q));
        let keen = cand(GatewayPreference::Always, false, 5, 1);
        assert_eq!(elect(c(&p, &keen), c(&q, &nas)), Some(&p));
    }

    #[test]
    fn never_and_a_pne_only_credential_never_win() {
        let (p, q) = (PeerId::random(), PeerId::random());
        let never = cand(GatewayPreference::Never, true, 0, 64);
        let weak = cand(GatewayPreference::Auto, false, 3, 1);
        assert_eq!(elect(c(&p, &never), c(&q, &weak)), Some(&q));
        assert_eq!(elect(c(&p, &never), c(&q, &never)), None);
        // The strongest device, but its credential allows only the PNE mode.
        let pne_only = Candidacy {
            allowed: false,
            ..cand(GatewayPreference::Always, true, 0, 64)
        };
        assert_eq!(elect(c(&p, &pne_only), c(&q, &weak)), Some(&q));
    }

    #[test]
    fn battery_level_and_memory_order() {
        let (p, q) = (PeerId::random(), PeerId::random());
        let low = cand(GatewayPreference::Auto, false, 20, 16);
        let high = cand(GatewayPreference::Auto, false, 80, 2);
        assert_eq!(elect(c(&p, &low), c(&q, &high)), Some(&q));
        let small = cand(GatewayPreference::Auto, true, 0, 2);
        let big = cand(GatewayPreference::Auto, true, 0, 16);
        assert_eq!(elect(c(&p, &small), c(&q, &big)), Some(&q));
    }

    #[test]
    fn a_ranking_is_the_election_repeated_and_skips_who_may_not() {
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        let list = vec![
            (peers[0], cand(GatewayPreference::Auto, false, 50, 8)),
            (peers[1], cand(GatewayPreference::Auto, true, 0, 8)),
            (
                peers[2],
                Candidacy {
                    allowed: false,
                    ..cand(GatewayPreference::Always, true, 0, 64)
                },
            ),
            (peers[3], cand(GatewayPreference::Never, true, 0, 64)),
        ];
        assert_eq!(rank(&list), vec![peers[1], peers[0]]);
    }
}
