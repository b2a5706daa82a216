//! Reading a JSON object the way Go's `encoding/json` fills a struct, so weftd and flanneld
//! read one etcd value alike.
//!
//! Go matches a member to a field by name, exactly or else case-insensitively (with Unicode
//! simple folding: `K`, the Kelvin sign, is a `k`, and `ſ` an `s`); members that match no field
//! are ignored; a field named twice takes each value in turn, so the last one wins. A JSON
//! `null` leaves a string or number field as it was. Custom decoders (flannel's IP and MAC
//! types) see the value's raw text, quotes and escapes included.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The members of one JSON object in input order, duplicates kept, each value as raw text.
pub type Members = Vec<(String, Box<RawValue>)>;

/// Reads `text` as a JSON object. `Ok(None)` is a top-level `null`, which Go accepts and which
/// leaves every field at its zero value.
///
/// # Errors
/// The text is not JSON, nests deeper than Go allows, or its top-level value is neither an
/// object nor `null`.
pub fn object(text: &str) -> Result<Option<Members>, String> {
    check_depth(text)?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let members = deserializer.deserialize_any(ObjectVisitor).map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok(members)
}

/// How deep Go's scanner lets arrays and objects nest (`maxNestingDepth` in encoding/json).
const MAX_DEPTH: usize = 10_000;

/// Refuses text whose arrays and objects nest past [`MAX_DEPTH`], as Go does: its scanner
/// checks the whole input before decoding, so a member no field matches counts too.
///
/// # Errors
/// The nesting goes past the limit.
fn check_depth(text: &str) -> Result<(), String> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (at, byte) in text.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            _ if in_string => {}
            b'[' | b'{' => depth += 1,
            // Unbalanced closers make the text invalid JSON; the parser says so.
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_DEPTH {
            return Err(format!(
                "exceeded max depth: arrays and objects nest more than {MAX_DEPTH} deep at byte {at} (Go's limit)"
            ));
        }
    }
    Ok(())
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Option<Members>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(MemberName(name)) = map.next_key()? {
            members.push((name, map.next_value::<Box<RawValue>>()?));
        }
        Ok(Some(members))
    }
}

/// A member name read as Go reads it: an escaped lone surrogate (`"\ud800"`), which serde
/// refuses in a string, becomes U+FFFD (Go makes one, we may make several), so the member is
/// simply one no field matches.
struct MemberName(String);

impl<'de> serde::Deserialize<'de> for MemberName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(MemberNameVisitor)
    }
}

struct MemberNameVisitor;

impl Visitor<'_> for MemberNameVisitor {
    type Value = MemberName;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, name: &str) -> Result<MemberName, E> {
        Ok(MemberName(name.to_string()))
    }

    fn visit_bytes<E>(self, name: &[u8]) -> Result<MemberName, E> {
        Ok(MemberName(String::from_utf8_lossy(name).into_owned()))
    }
}

/// Which of `fields` (Go field names, ASCII) the member `name` fills: the exact match if there
/// is one, else the first that matches without regard to case.
pub fn field_index(name: &str, fields: &[&str]) -> Option<usize> {
    fields.iter().position(|f| *f == name).or_else(|| fields.iter().position(|f| folds_to(name, f)))
}

/// Whether `name` equals the ASCII `field` under Go's case folding.
fn folds_to(name: &str, field: &str) -> bool {
    let folded = name.chars().map(|c| match c {
        '\u{212A}' => Some('k'),
        '\u{017F}' => Some('s'),
        c if c.is_ascii() => Some(c.to_ascii_lowercase()),
        _ => None,
    });
    let mut field = field.chars().map(|c| c.to_ascii_lowercase());
    for c in folded {
        if c.is_none() || c != field.next() {
            return false;
        }
    }
    field.next().is_none()
}

/// Whether a raw value is JSON `null`.
pub fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// Decodes a raw value into a Go `string` field: `Ok(None)` for `null` (the field keeps its
/// value).
///
/// # Errors
/// The value is not a string.
pub fn string(raw: &RawValue) -> Result<Option<String>, String> {
    if is_null(raw) {
        return Ok(None);
    }
    serde_json::from_str(raw.get()).map(Some).map_err(|_| format!("{} is not a string", raw.get()))
}

/// Decodes a raw value into a Go `uint16` field: `Ok(None)` for `null`. Go takes only a
/// plain non-negative integer literal (not `1.0`, `1e0` or `-0`) that fits.
///
/// # Errors
/// The value is not such a number.
pub fn uint16(raw: &RawValue) -> Result<Option<u16>, String> {
    let text = raw.get();
    if is_null(raw) {
        return Ok(None);
    }
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| text.parse::<u16>().ok()).flatten().map(Some).ok_or_else(|| format!("{text} is not a number from 0 to 65535"))
}

/// What flannel's IP types decode: the raw text with every leading and trailing `"` cut off
/// (Go's `bytes.Trim`), escapes left as they are.
pub fn trimmed_quotes(raw: &RawValue) -> &str {
    raw.get().trim_matches('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    #[test]
    fn names_match_exactly_first_then_folded() {
        let fields = ["PublicIP", "PublicIPv6", "BackendType"];
        assert_eq!(field_index("PublicIP", &fields), Some(0));
        assert_eq!(field_index("publicip", &fields), Some(0));
        assert_eq!(field_index("PUBLICIPV6", &fields), Some(1));
        assert_eq!(field_index("Bac\u{212A}endType", &fields), Some(2));
        assert_eq!(field_index("BackendTyp", &fields), None);
        assert_eq!(field_index("BackendTypeX", &fields), None);
        assert_eq!(field_index("publıcip", &fields), None, "a dotless i is not an i to Go");
        assert_eq!(field_index("Ab", &["ab", "Ab"]), Some(1));
    }

    #[test]
    fn objects_keep_order_and_duplicates() {
        let members = object(r#" {"a":1,"A":[2],"a":null} "#).unwrap().unwrap();
        let seen: Vec<_> = members.iter().map(|(k, v)| (k.as_str(), v.get())).collect();
        assert_eq!(seen, [("a", "1"), ("A", "[2]"), ("a", "null")]);
        assert!(object("null").unwrap().is_none());
        let members = object(r#"{"\ud800":1,"x":"\udc00"}"#).unwrap().unwrap();
        assert!(members[0].0.chars().all(|c| c == '\u{fffd}') && members[1].0 == "x", "{:?}", members[0].0);
        for bad in ["[]", "\"x\"", "1", "{} x", "{", "not json"] {
            assert!(object(bad).is_err(), "accepted {bad}");
        }
    }

    /// Go 1.19 accepts 10,000 levels (counting the lease object itself) and refuses 10,001,
    /// wherever they are: flanneld ignores such a lease, so weft must too.
    #[test]
    fn nesting_past_gos_depth_limit_is_refused() {
        let nested = |arrays: usize| format!(r#"{{"PublicIP":"10.0.0.1","x":{}{}}}"#, "[".repeat(arrays), "]".repeat(arrays));
        for (arrays, go_accepts) in [(500, true), (MAX_DEPTH - 1, true), (MAX_DEPTH, false), (2 * MAX_DEPTH, false)] {
            assert_eq!(object(&nested(arrays)).is_ok(), go_accepts, "{arrays} arrays inside the object");
        }
        let error = object(&nested(MAX_DEPTH)).unwrap_err();
        assert!(error.contains("exceeded max depth"), "{error}");
        // Brackets inside strings, escaped quotes included, are not nesting.
        let in_strings = format!(r#"{{"x":"\"{}","y":[]}}"#, "[".repeat(2 * MAX_DEPTH));
        assert!(object(&in_strings).is_ok());
    }

    #[test]
    fn scalar_fields_follow_go() {
        assert_eq!(uint16(&raw("7")), Ok(Some(7)));
        assert_eq!(uint16(&raw("null")), Ok(None));
        for bad in ["70000", "-0", "1.0", "1e0", "\"1\"", "true", "[1]"] {
            assert!(uint16(&raw(bad)).is_err(), "accepted {bad}");
        }
        assert_eq!(string(&raw(r#""vx\u006can""#)), Ok(Some("vxlan".to_string())));
        assert_eq!(string(&raw("null")), Ok(None));
        assert!(string(&raw("7")).is_err());
        assert_eq!(trimmed_quotes(&raw(r#""\"1.2.3.4\"""#)), r#"\"1.2.3.4\"#);
    }
}
