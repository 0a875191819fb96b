//! Device → class matching: which class a device belongs to, from its MAC, vendor prefix,
//! fingerprinted device type and certificate subject. Reads the checked `Policy`; pure.
//!
//! Precedence, strongest first: a certificate subject (verified by enrollment), an exact MAC
//! (an operator pinned this device), the class of the MUD file the device announced (signed
//! by its manufacturer, `crate::mud`), the longest OUI prefix (hardware vendor), then the
//! fingerprinted type (a guess). `checks` refuses a MAC, OUI or type used by two classes; two
//! classes whose subject patterns both match go to the lower class id.
use super::{
    model::{ClassId, Matcher, Policy, PolicyId},
    values::normalize_subject,
};
use crate::device::Mac;

/// Which criterion put a device in its class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchedBy {
    CertSubject,
    Mac,
    Mud,
    Oui,
    FingerprintType,
}

/// The class a device belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassRef {
    pub name: String,
    pub class_id: ClassId,
    pub policy_id: PolicyId,
    pub matched_by: MatchedBy,
}

#[derive(Clone, Debug)]
struct Entry {
    name: String,
    class_id: ClassId,
    policy_id: PolicyId,
    matcher: Matcher,
}

/// The matchers of every class, sorted by class id.
#[derive(Clone, Debug, Default)]
pub struct Classifier {
    entries: Vec<Entry>,
}

impl Classifier {
    pub fn new(policy: &Policy) -> Self {
        Self {
            entries: policy
                .classes
                .iter()
                .map(|class| Entry {
                    name: class.name.clone(),
                    class_id: class.id,
                    policy_id: class.policy_id,
                    matcher: class.matcher.clone(),
                })
                .collect(),
        }
    }

    /// The class of a device, or `None` when no class matches. `fingerprint` is the type
    /// guess's (name, confidence) at each level the inventory holds (product, vendor, generic
    /// type); `cert_subject` is the subject
    /// of a certificate enrollment verified, in RFC 4514 form (spacing and attribute-type case
    /// do not matter); `mud_class` the class of the MUD file the device announced (ignored
    /// when the policy has no such class).
    pub fn classify(
        &self,
        mac: Mac,
        fingerprint: &[(&str, f64)],
        cert_subject: Option<&str>,
        mud_class: Option<ClassId>,
    ) -> Option<ClassRef> {
        let hit = |entry: &Entry, matched_by| ClassRef {
            name: entry.name.clone(),
            class_id: entry.class_id,
            policy_id: entry.policy_id,
            matched_by,
        };
        if let Some(subject) = cert_subject {
            let subject = normalize_subject(subject);
            if let Some(entry) = self
                .entries
                .iter()
                .find(|entry| entry.matcher.cert_subjects.iter().any(|pattern| wildcard_match(pattern, &subject)))
            {
                return Some(hit(entry, MatchedBy::CertSubject));
            }
        }
        if let Some(entry) = self.entries.iter().find(|entry| entry.matcher.macs.contains(&mac)) {
            return Some(hit(entry, MatchedBy::Mac));
        }
        if let Some(entry) = mud_class.and_then(|id| self.entries.iter().find(|entry| entry.class_id == id)) {
            return Some(hit(entry, MatchedBy::Mud));
        }
        let best_oui = self
            .entries
            .iter()
            .filter_map(|entry| {
                let longest =
                    entry.matcher.ouis.iter().filter(|prefix| mac.0.starts_with(prefix)).map(Vec::len).max()?;
                Some((longest, entry))
            })
            .max_by_key(|(length, entry)| (*length, std::cmp::Reverse(entry.class_id)));
        if let Some((_, entry)) = best_oui {
            return Some(hit(entry, MatchedBy::Oui));
        }
        self.entries
            .iter()
            .find(|entry| {
                fingerprint.iter().any(|(name, confidence)| {
                    entry.matcher.fingerprint_types.contains(&name.trim().to_ascii_lowercase())
                        && confidence * 100.0 >= f64::from(entry.matcher.fingerprint_confidence_percent) - 1e-9
                })
            })
            .map(|entry| hit(entry, MatchedBy::FingerprintType))
    }
}

impl super::CompiledPolicy {
    /// The class of a device (see `Classifier::classify`); the OUI is the MAC's prefix.
    pub fn classify(
        &self,
        mac: Mac,
        fingerprint: &[(&str, f64)],
        cert_subject: Option<&str>,
        mud_class: Option<ClassId>,
    ) -> Option<ClassRef> {
        self.classifier.classify(mac, fingerprint, cert_subject, mud_class)
    }
}

/// `*` matches any run of characters (also empty), `?` exactly one; everything else itself.
/// Iterative with one backtrack point, so hostile subjects cannot make it exponential.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_runs_and_single_characters() {
        assert!(wildcard_match("CN=cam-*,O=Lab", "CN=cam-0042,O=Lab"));
        assert!(wildcard_match("CN=cam-??,O=*", "CN=cam-01,O=Anything"));
        assert!(!wildcard_match("CN=cam-??,O=Lab", "CN=cam-001,O=Lab"));
        assert!(!wildcard_match("CN=cam-*,O=Lab", "CN=plug-1,O=Lab"));
        assert!(wildcard_match("*", ""));
    }

    const CLASSES: &str = r#"
[[class]]
name = "camera"
id = 10
[class.match]
cert_subjects = ["CN=cam-*, O=Lab"]
ouis = ["02:00:5e"]
fingerprint_types = ["IP-Camera"]
[[class]]
name = "special-cam"
id = 11
[class.match]
ouis = ["02:00:5e:10"]
macs = ["02:00:00:00:00:99"]
[[class]]
name = "plug"
id = 12
[class.match]
cert_subjects = ["CN=plug-??,O=Lab"]
fingerprint_types = ["smart-plug"]
fingerprint_confidence = 0.8
"#;

    fn policy() -> crate::policy::CompiledPolicy {
        crate::policy::check_text(CLASSES)
    }

    fn mac(text: &str) -> Mac {
        text.parse().expect("test MAC")
    }

    #[test]
    fn certificate_subject_wins_over_every_other_criterion() {
        let policy = policy();
        let hit = policy
            .classify(mac("02:00:5e:00:00:01"), &[("smart-plug", 0.9)], Some("cn=plug-07 , o=Lab"), None)
            .expect("plug by certificate");
        assert_eq!((hit.name.as_str(), hit.matched_by), ("plug", MatchedBy::CertSubject));
        assert_eq!(hit.policy_id, PolicyId(gateway_ebpf::lane::FIRST_CLASS_POLICY + 12));
    }

    #[test]
    fn exact_mac_wins_over_oui_and_longest_oui_wins() {
        let policy = policy();
        let pinned = policy.classify(mac("02:00:00:00:00:99"), &[("ip-camera", 0.9)], None, None).expect("mac");
        assert_eq!((pinned.name.as_str(), pinned.matched_by), ("special-cam", MatchedBy::Mac));
        let longer = policy.classify(mac("02:00:5e:10:00:01"), &[], None, None).expect("oui");
        assert_eq!((longer.name.as_str(), longer.matched_by), ("special-cam", MatchedBy::Oui));
        let shorter = policy.classify(mac("02:00:5e:11:00:01"), &[], Some("CN=nobody"), None).expect("oui");
        assert_eq!((shorter.name.as_str(), shorter.matched_by), ("camera", MatchedBy::Oui));
    }

    #[test]
    fn mud_class_wins_over_vendor_and_type_but_not_over_certificate_or_pinned_mac() {
        let policy = policy();
        let mud = Some(ClassId(12));
        let hit = policy.classify(mac("02:00:5e:10:00:01"), &[("ip-camera", 0.9)], None, mud).expect("mud");
        assert_eq!((hit.name.as_str(), hit.matched_by), ("plug", MatchedBy::Mud));
        let pinned = policy.classify(mac("02:00:00:00:00:99"), &[], None, mud).expect("mac");
        assert_eq!(pinned.matched_by, MatchedBy::Mac);
        let certified = policy.classify(mac("0a:00:00:00:00:01"), &[], Some("CN=cam-1,O=Lab"), mud).expect("cert");
        assert_eq!((certified.name.as_str(), certified.matched_by), ("camera", MatchedBy::CertSubject));
        let gone =
            policy.classify(mac("0a:00:00:00:00:01"), &[("ip-camera", 0.9)], None, Some(ClassId(99))).expect("type");
        assert_eq!(gone.matched_by, MatchedBy::FingerprintType, "a MUD class the policy lacks is ignored");
    }

    #[test]
    fn fingerprint_type_is_the_last_resort_and_ignores_case() {
        let policy = policy();
        let guess = policy.classify(mac("0a:00:00:00:00:01"), &[("ip-camera", 0.9)], None, None).expect("type");
        assert_eq!((guess.name.as_str(), guess.matched_by), ("camera", MatchedBy::FingerprintType));
        assert_eq!(policy.classify(mac("0a:00:00:00:00:01"), &[("toaster", 1.0)], None, None), None);
        let generic = [("unknown", 0.7), ("D-Link", 0.9), ("smart-plug", 0.85)];
        let plug = policy.classify(mac("0a:00:00:00:00:01"), &generic, None, None).expect("generic type");
        assert_eq!((plug.name.as_str(), plug.matched_by), ("plug", MatchedBy::FingerprintType));
        let unsure = [("unknown", 0.7), ("smart-plug", 0.75)];
        assert_eq!(policy.classify(mac("0a:00:00:00:00:01"), &unsure, None, None), None, "below 0.8");
        assert_eq!(policy.classify(mac("0a:00:00:00:00:01"), &[], None, None), None);
    }
}
