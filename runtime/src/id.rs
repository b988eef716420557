//! Container ids.

use crate::{Error, Result};
use std::fmt;

/// Longest id accepted (a path component, a cgroup directory name).
pub const MAX_ID_LEN: usize = 200;

/// A validated container id: `[A-Za-z0-9_+.-]+`, not `.` or `..`, at most
/// [`MAX_ID_LEN`] bytes (runc's rule plus a length bound).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainId(String);

impl DomainId {
    /// Validates `s` as an id.
    pub fn new(s: &str) -> Result<DomainId> {
        let bad = |why| {
            Err(Error::InvalidId {
                id: s.to_string(),
                why,
            })
        };
        if s.is_empty() {
            return bad("empty");
        }
        if s.len() > MAX_ID_LEN {
            return bad("longer than 200 bytes");
        }
        if s == "." || s == ".." {
            return bad("'.' and '..' are not ids");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
        {
            return bad("only letters, digits, '_', '+', '-' and '.' are allowed");
        }
        Ok(DomainId(s.to_string()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_ids() {
        for s in ["a", "abc-123_x.y+z", &"x".repeat(200)] {
            assert!(DomainId::new(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn bad_ids() {
        for s in ["", ".", "..", "../x", "a/b", "a b", &"x".repeat(201), "é"] {
            assert!(DomainId::new(s).is_err(), "{s}");
        }
    }
}
