//! Whom a runner's death blames. The gateway cannot tell a runner killed by a call from one
//! killed for another reason, nor which of several calls killed it; what it knows is which
//! versions were in flight there (loading or computing) when it died. The rule:
//!
//! - one version alone in flight: it is the only possible cause and gets a strike of
//!   [`QUARANTINE_AT`] (2) — quarantined at once;
//! - several: each gets one strike, so no one can put another tenant's version in quarantine
//!   with one crash; a version present in two deaths within the window (the attacker is
//!   present in every death it causes) is quarantined at its second;
//! - none (a death seen only by calls that never reached it): nobody is blamed.
//!
//! Strikes count within registry `quarantine::STRIKE_WINDOW_MS` (10 minutes).

use std::collections::BTreeSet;

pub use registry::quarantine::QUARANTINE_AT;

/// The strikes each suspect of one death gets: (version id, weight).
pub fn blame(in_flight: &BTreeSet<String>) -> Vec<(String, i64)> {
    let weight = if in_flight.len() == 1 { QUARANTINE_AT } else { 1 };
    in_flight.iter().map(|version| (version.clone(), weight)).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn set(versions: &[&str]) -> BTreeSet<String> {
        versions.iter().map(|v| (*v).to_owned()).collect()
    }

    /// Strikes per version after these deaths (all within the window).
    fn tally(deaths: &[&[&str]]) -> HashMap<String, i64> {
        let mut strikes = HashMap::new();
        for death in deaths {
            for (version, weight) in blame(&set(death)) {
                *strikes.entry(version).or_default() += weight;
            }
        }
        strikes
    }

    #[test]
    fn a_version_alone_in_flight_is_quarantined_by_one_death() {
        assert_eq!(blame(&set(&["a"])), vec![("a".to_owned(), QUARANTINE_AT)]);
    }

    #[test]
    fn nobody_is_blamed_for_a_death_with_nothing_in_flight() {
        assert!(blame(&set(&[])).is_empty());
    }

    #[test]
    fn several_in_flight_get_one_strike_each_and_none_is_quarantined() {
        let strikes = tally(&[&["attacker", "victim"]]);
        assert!(strikes.values().all(|&s| s == 1 && s < QUARANTINE_AT), "{strikes:?}");
    }

    #[test]
    fn the_version_present_in_every_death_reaches_quarantine_and_a_bystander_of_one_does_not() {
        let strikes = tally(&[&["attacker", "victim"], &["attacker", "other"]]);
        assert!(strikes["attacker"] >= QUARANTINE_AT, "{strikes:?}");
        assert!(strikes["victim"] < QUARANTINE_AT && strikes["other"] < QUARANTINE_AT, "{strikes:?}");
    }
}
