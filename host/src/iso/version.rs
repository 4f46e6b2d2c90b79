//! Versions as the IC families write them: `0.1.266`, `7.0.12`, `12.3.0.22234872`,
//! `6.3.9600.18080`, `2.0.0-rc1`.
//!
//! Comparison is numeric per component, missing components count as zero (`1.2` equals
//! `1.2.0` in order, and the text breaks the tie), and a pre-release (`-rc1`, `-beta`,
//! `_BETA2`) sorts below its release. Pre-release tags compare by their own numeric and
//! text parts. The order is total, so choosing is deterministic.

use std::cmp::Ordering;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    numbers: Vec<u64>,
    pre: Option<Vec<Part>>,
    text: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    // Numbers sort below words in a pre-release tag, as in semver.
    Num(u64),
    Word(String),
}

impl Version {
    /// Parse the leading `N(.N)*` and an optional pre-release tag. `None` if there is no
    /// leading number.
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim();
        let s = text.strip_prefix(['v', 'V']).unwrap_or(text);
        let mut numbers = Vec::new();
        let mut rest = s;
        loop {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                break;
            }
            // Absurdly long components saturate rather than fail.
            numbers.push(rest[..digits].parse().unwrap_or(u64::MAX));
            rest = &rest[digits..];
            match rest.strip_prefix('.') {
                Some(r) if r.starts_with(|c: char| c.is_ascii_digit()) => rest = r,
                _ => break,
            }
        }
        if numbers.is_empty() {
            return None;
        }
        let tag = rest.trim_start_matches(['-', '_', '~', '.', '+']);
        let pre = (!tag.is_empty() && !rest.starts_with('+') && !is_revision(rest))
            .then(|| split_parts(tag));
        Some(Version {
            numbers,
            pre,
            text: text.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_prerelease(&self) -> bool {
        self.pre.is_some()
    }
}

/// VirtualBox's build revision, `7.0.12r159484` as `VBoxControl --version` prints it:
/// build metadata like semver's `+...`, not a pre-release (`1.0rc1` stays one).
fn is_revision(rest: &str) -> bool {
    rest.strip_prefix('r')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

fn split_parts(tag: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut chars = tag.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_ascii_digit() {
            let mut n = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(d);
                chars.next();
            }
            parts.push(Part::Num(n.parse().unwrap_or(u64::MAX)));
        } else if c.is_alphabetic() {
            let mut w = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_alphabetic()) {
                w.push(d.to_ascii_lowercase());
                chars.next();
            }
            parts.push(Part::Word(w));
        } else {
            chars.next();
        }
    }
    parts
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        let n = self.numbers.len().max(other.numbers.len());
        let at = |v: &Version, i: usize| v.numbers.get(i).copied().unwrap_or(0);
        (0..n)
            .map(|i| at(self, i).cmp(&at(other, i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
            .then_with(|| match (&self.pre, &other.pre) {
                (None, None) => Ordering::Equal,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(a), Some(b)) => a.cmp(b),
            })
            .then_with(|| self.text.cmp(&other.text))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn a_virtualbox_build_revision_is_not_a_pre_release() {
        let running = v("7.0.12r159484");
        assert!(!running.is_prerelease());
        assert!(running >= v("7.0.12"), "the guest runs the media's version");
        assert!(running < v("7.0.14"));
        assert!(v("1.0rc1").is_prerelease());
        assert!(v("1.0r").is_prerelease());
    }

    #[test]
    fn numeric_per_component() {
        assert!(v("0.1.266") > v("0.1.96"));
        assert!(v("7.0.12") > v("7.0.2"));
        assert!(v("10.0") > v("9.99.99"));
        assert!(v("1.2.1") > v("1.2"));
    }

    #[test]
    fn prerelease_sorts_below_its_release() {
        assert!(v("2.0.0-rc1") < v("2.0.0"));
        assert!(v("2.0.0-rc1") < v("2.0.0-rc2"));
        assert!(v("2.0.0-rc2") < v("2.0.0-rc10"));
        assert!(v("2.0.0-beta") < v("2.0.0-rc1"));
        assert!(v("2.0.0-rc1") > v("1.9.9"));
        assert!(v("7.1.0_BETA2").is_prerelease());
    }

    #[test]
    fn build_metadata_is_not_a_prerelease() {
        assert!(!v("1.0.0+build5").is_prerelease());
    }

    #[test]
    fn no_leading_number_is_no_version() {
        assert!(Version::parse("latest").is_none());
        assert!(Version::parse("").is_none());
    }

    fn version_text() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(0u64..1000, 1..5),
            prop::option::of("(rc|beta|alpha)[0-9]{0,2}"),
        )
            .prop_map(|(nums, pre)| {
                let mut s = nums
                    .iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(".");
                if let Some(p) = pre {
                    s.push('-');
                    s.push_str(&p);
                }
                s
            })
    }

    proptest! {
        #[test]
        fn order_is_total_and_consistent(a in version_text(), b in version_text(), c in version_text()) {
            let (a, b, c) = (v(&a), v(&b), v(&c));
            prop_assert_eq!(a.cmp(&b), b.cmp(&a).reverse());
            prop_assert_eq!(a.cmp(&b) == Ordering::Equal, a == b);
            if a <= b && b <= c {
                prop_assert!(a <= c);
            }
        }

        #[test]
        fn a_release_beats_each_of_its_prereleases(nums in prop::collection::vec(0u64..1000, 1..5), tag in "(rc|beta)[0-9]{1,2}") {
            let base = nums.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(".");
            let pre = format!("{}-{}", base, tag);
            prop_assert!(v(&pre) < v(&base));
        }

        #[test]
        fn bumping_any_component_is_newer(nums in prop::collection::vec(0u64..1000, 1..5), at in 0usize..5) {
            let at = at % nums.len();
            let mut bumped = nums.clone();
            bumped[at] += 1;
            let s = |n: &[u64]| n.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(".");
            prop_assert!(v(&s(&bumped)) > v(&s(&nums)));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Version::parse(&s);
        }
    }
}
