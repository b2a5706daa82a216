//! Bounded log text: anyone who can write under the etcd prefix chooses keys and values, so
//! text taken from them is cut before it reaches a log line or a long-lived set.

use std::fmt;
use std::hash::{Hash, Hasher};

/// Characters kept from the start of a long text; the end is kept too (half as many), since
/// what follows a peer's value in a message ("… is not vxlan") says what was wrong. Enough
/// that weft's own messages, which quote a key or a short value, are never cut.
pub const HEAD_CHARS: usize = 256;
const TAIL_CHARS: usize = HEAD_CHARS / 2;

/// A text as it goes into a log: whole when short, else its head, `…(N bytes)…` and its tail.
#[derive(Debug, Clone, Copy)]
pub struct Clipped<'a>(&'a str);

/// Wraps `text` (peer-provided, or a message quoting it) for logging, at most about
/// [`HEAD_CHARS`] + 48 characters whatever its length.
pub fn clip(text: &str) -> Clipped<'_> {
    Clipped(text)
}

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let chars = text.chars().count();
        if chars <= HEAD_CHARS + TAIL_CHARS + 16 {
            return f.write_str(text);
        }
        let head: String = text.chars().take(HEAD_CHARS).collect();
        let tail: String = text.chars().skip(chars - TAIL_CHARS).collect();
        write!(f, "{head}…({} bytes)…{tail}", text.len())
    }
}

/// A fixed-size stand-in for a text in a warn-once set: remembering a peer's megabyte value
/// would let it grow our memory by writing values we only warn about.
pub fn fingerprint(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_logged_whole() {
        assert_eq!(clip("backend type \"udp\" is not vxlan").to_string(), "backend type \"udp\" is not vxlan");
    }

    #[test]
    fn long_text_keeps_its_head_its_tail_and_its_size() {
        let text = format!("backend type \"{}\" is not vxlan", "x".repeat(1_000_000));
        let logged = clip(&text).to_string();
        assert!(logged.len() < 500, "{logged}");
        assert!(logged.starts_with("backend type \"xxx"), "{logged}");
        assert!(logged.contains(&format!("…({} bytes)…", text.len())), "{logged}");
        assert!(logged.ends_with("xx\" is not vxlan"), "{logged}");
    }

    #[test]
    fn multibyte_text_is_cut_on_character_boundaries() {
        let text = "é".repeat(500);
        let logged = clip(&text).to_string();
        assert!(logged.starts_with(&"é".repeat(HEAD_CHARS)));
        assert!(logged.contains("…(1000 bytes)…"));
    }

    #[test]
    fn fingerprints_tell_texts_apart() {
        assert_eq!(fingerprint("a"), fingerprint("a"));
        assert_ne!(fingerprint("a"), fingerprint("b"));
    }
}
