//! An error and its sources on one line, for messages where only the outermost error's text
//! would hide the cause (aya keeps the errno in a source, reqwest the TLS or connect failure).
//! Reads and writes nothing.

/// `error: source: source's source ...`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_keeps_the_errno_from_the_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("`bpf_link_create` failed")]
        struct Outer(#[source] std::io::Error);
        let error = Outer(std::io::Error::from_raw_os_error(95));
        let text = error_chain(&error);
        assert!(text.starts_with("`bpf_link_create` failed: "), "{text}");
        assert!(text.contains("os error 95"), "{text}");
    }
}
