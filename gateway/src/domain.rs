//! Registrable domains: the part of a DNS name one owner registered, by the public suffix
//! list (`psl` compiles the list into the binary, so nothing is fetched at run time).
//! `a.cdn.example.co.uk` and `b.cdn.example.co.uk` share `example.co.uk`; `example.co.uk`
//! and `other.co.uk` share nothing. The list's private section counts too: every
//! `*.cloudfront.net` distribution or `*.compute.amazonaws.com` host is its own customer's,
//! so knowing one says nothing about another.

/// The registrable domain of `name`, lowercased and without the root's dot
/// (`eu.API.vendor.co.uk.` → `vendor.co.uk`). A name that is itself a public suffix
/// (`co.uk`) or a single label (`localhost`) is its own domain.
pub fn registrable(name: &str) -> String {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match psl::domain_str(&name) {
        Some(domain) => domain.to_owned(),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::registrable;

    #[test]
    fn hosts_of_one_registrant_share_a_domain_and_registrants_under_one_suffix_do_not() {
        assert_eq!(registrable("a.cdn.example.co.uk"), "example.co.uk");
        assert_eq!(registrable("b.cdn.example.co.uk"), "example.co.uk");
        assert_eq!(registrable("other.co.uk"), "other.co.uk");
        assert_ne!(registrable("example.co.uk"), registrable("other.co.uk"));
        assert_eq!(registrable("eu.API.vendor.com."), "vendor.com");
        assert_eq!(registrable("vendor.com"), "vendor.com");
    }

    #[test]
    fn cloud_customers_under_a_shared_provider_domain_are_apart() {
        assert_ne!(registrable("d111abcdef8.cloudfront.net"), registrable("d222ghijkl9.cloudfront.net"));
        assert_ne!(
            registrable("ec2-52-1-2-3.compute-1.amazonaws.com"),
            registrable("ec2-54-9-8-7.compute-1.amazonaws.com")
        );
        assert_eq!(registrable("x.vendor.s3.amazonaws.com"), registrable("y.vendor.s3.amazonaws.com"));
    }

    #[test]
    fn suffixes_single_labels_and_unlisted_suffixes() {
        assert_eq!(registrable("co.uk"), "co.uk");
        assert_eq!(registrable("localhost"), "localhost");
        // Not on the list: the default rule takes the last label as the suffix.
        assert_eq!(registrable("printer.office.lan"), "office.lan");
    }
}
