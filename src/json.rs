//! JSON, written and read: log lines, PutResult metadata, action results, the
//! CLI's `--json` output. Small on purpose: the values hangar exchanges are
//! flat objects of strings and numbers, and serde_json with serde would add
//! more to the static binary than this whole module is.

use std::fmt::{self, Write as _};

/// A JSON value. Objects keep their keys in insertion order, so output is
/// stable and reads in the order a person expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// Integers exactly (row counts and byte sizes exceed f64's 2^53).
    Int(i128),
    Float(f64),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl Value {
    /// An object from `(key, value)` pairs, in order.
    pub fn object<K: Into<String>>(fields: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Object(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The value under `key`, if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// Any number as an f64 (an integer beyond 2^53 loses precision).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(n) => Some(*n as f64),
            Value::Float(x) => Some(*x),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The `(key, value)` pairs of an object, in order.
    pub fn as_object(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Object(fields) => Some(fields),
            _ => None,
        }
    }

    /// Parses one JSON document (RFC 8259). Nesting is bounded, so hostile
    /// input cannot exhaust the stack.
    pub fn parse(text: &str) -> Result<Value, String> {
        let mut parser = Parser {
            bytes: text.as_bytes(),
            at: 0,
            depth: 0,
        };
        let value = parser.value()?;
        parser.skip_space();
        if parser.at != parser.bytes.len() {
            return Err(parser.error("unexpected text after the JSON value"));
        }
        Ok(value)
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Value {
                Value::Int(i128::from(n))
            }
        }
    )*};
}
from_int!(u8, u16, u32, u64, i8, i16, i32, i64);

impl From<usize> for Value {
    fn from(n: usize) -> Value {
        Value::Int(n as i128)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Value {
        Value::Float(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map(Into::into).unwrap_or(Value::Null)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        write_value(&mut out, self);
        f.write_str(&out)
    }
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        // JSON has no NaN or infinity.
        Value::Float(x) if !x.is_finite() => out.push_str("null"),
        Value::Float(x) => {
            let _ = write!(out, "{x}");
        }
        Value::String(s) => push_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            out.push('{');
            for (i, (key, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(out, key);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// Appends `s` as a JSON string literal (quoted, escaped).
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Control characters, and the two line separators that some
            // JSON-lines readers split on.
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Deepest nesting accepted by [`Value::parse`].
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.at)
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.skip_space();
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, String> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.error("invalid literal"))
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_space();
        match self.bytes.get(self.at) {
            None => Err(self.error("unexpected end of JSON")),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'[') => self.nested(|p| {
                let mut items = Vec::new();
                if p.eat(b']') {
                    return Ok(Value::Array(items));
                }
                loop {
                    items.push(p.value()?);
                    if p.eat(b']') {
                        return Ok(Value::Array(items));
                    }
                    if !p.eat(b',') {
                        return Err(p.error("expected ',' or ']'"));
                    }
                }
            }),
            Some(b'{') => self.nested(|p| {
                let mut fields: Vec<(String, Value)> = Vec::new();
                if p.eat(b'}') {
                    return Ok(Value::Object(fields));
                }
                loop {
                    p.skip_space();
                    if p.bytes.get(p.at) != Some(&b'"') {
                        return Err(p.error("expected a string key"));
                    }
                    let key = p.string()?;
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(p.error(&format!("duplicate key \"{key}\"")));
                    }
                    if !p.eat(b':') {
                        return Err(p.error("expected ':'"));
                    }
                    fields.push((key, p.value()?));
                    if p.eat(b'}') {
                        return Ok(Value::Object(fields));
                    }
                    if !p.eat(b',') {
                        return Err(p.error("expected ',' or '}'"));
                    }
                }
            }),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn nested(
        &mut self,
        body: impl FnOnce(&mut Self) -> Result<Value, String>,
    ) -> Result<Value, String> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error("JSON nested too deeply"));
        }
        self.depth += 1;
        self.at += 1;
        let value = body(self);
        self.depth -= 1;
        value
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, exactly.
    fn number(&mut self) -> Result<Value, String> {
        let start = self.at;
        let digits = |p: &mut Self| {
            let from = p.at;
            while p.bytes.get(p.at).is_some_and(u8::is_ascii_digit) {
                p.at += 1;
            }
            p.at - from
        };
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        let int_start = self.at;
        let int_digits = digits(self);
        if int_digits == 0 || (int_digits > 1 && self.bytes[int_start] == b'0') {
            return Err(self.error("invalid number"));
        }
        let mut float = false;
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            if digits(self) == 0 {
                return Err(self.error("invalid number"));
            }
            float = true;
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return Err(self.error("invalid number"));
            }
            float = true;
        }
        // Only ASCII was consumed.
        let text = std::str::from_utf8(&self.bytes[start..self.at]).unwrap_or("");
        if !float {
            if let Ok(n) = text.parse::<i128>() {
                return Ok(Value::Int(n));
            }
        }
        text.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map(Value::Float)
            .ok_or_else(|| self.error("invalid number"))
    }

    fn string(&mut self) -> Result<String, String> {
        self.at += 1; // the opening quote
        let mut out = String::new();
        loop {
            let rest = &self.bytes[self.at..];
            let plain = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .ok_or_else(|| self.error("unterminated string"))?;
            out.push_str(
                std::str::from_utf8(&rest[..plain]).map_err(|_| self.error("invalid UTF-8"))?,
            );
            self.at += plain;
            match self.bytes[self.at] {
                b'"' => {
                    self.at += 1;
                    return Ok(out);
                }
                b'\\' => {
                    let escape = *self
                        .bytes
                        .get(self.at + 1)
                        .ok_or_else(|| self.error("unterminated string"))?;
                    self.at += 2;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let high = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&high) {
                                if !self.bytes[self.at..].starts_with(b"\\u") {
                                    return Err(self.error("unpaired surrogate"));
                                }
                                self.at += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err(self.error("unpaired surrogate"));
                                }
                                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                high
                            };
                            out.push(
                                char::from_u32(c)
                                    .ok_or_else(|| self.error("invalid \\u escape"))?,
                            );
                        }
                        _ => return Err(self.error("invalid escape")),
                    }
                }
                _ => return Err(self.error("control character in string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.error("invalid \\u escape"))?;
        self.at += 4;
        Ok(digits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_objects_in_order_with_escapes() {
        let v = Value::object([
            ("rows", Value::from(3u64)),
            ("name", Value::from("a\"b\n\u{1}")),
            ("none", Value::Null),
            ("list", Value::Array(vec![true.into(), 1.5.into()])),
        ]);
        assert_eq!(
            v.to_string(),
            r#"{"rows":3,"name":"a\"b\n\u0001","none":null,"list":[true,1.5]}"#
        );
    }

    #[test]
    fn parses_what_it_writes_and_rejects_the_rest() {
        let v = Value::object([
            ("n", Value::from(u64::MAX)),
            ("s", Value::from("é\u{1F600}\\")),
            ("a", Value::Array(vec![Value::Null, (-2i64).into()])),
        ]);
        assert_eq!(Value::parse(&v.to_string()).unwrap(), v);
        assert_eq!(
            Value::parse(r#" {"x": "\ud83d\ude00", "y": 1e3} "#).unwrap(),
            Value::object([("x", Value::from("\u{1F600}")), ("y", Value::Float(1000.0))])
        );
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1 2",
            "\"\\x\"",
            "{\"a\":1,\"a\":2}",
            "nul",
            "\"\u{1}\"",
            "{a:1}",
            "-",
            "\"\\ud800\"",
            "1.",
            "1.e5",
            "-.5",
            ".5",
            "1e",
            "1e+",
            "-01",
            "1-2",
            "1e5.",
            "[1.]",
        ] {
            assert!(Value::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert!(Value::parse(&deep).unwrap_err().contains("deeply"));
    }

    #[test]
    fn numbers_follow_the_json_grammar() {
        for (text, value) in [
            ("0", Value::Int(0)),
            ("-0", Value::Int(0)),
            ("-12", Value::Int(-12)),
            (
                "10000000000000000000000000000000000000000",
                Value::Float(1e40),
            ),
            ("0.5", Value::Float(0.5)),
            ("-1.25e2", Value::Float(-125.0)),
            ("1E-2", Value::Float(0.01)),
            ("2e+1", Value::Float(20.0)),
        ] {
            assert_eq!(Value::parse(text), Ok(value), "{text}");
        }
        assert!(
            Value::parse("1e999").is_err(),
            "infinity is not a JSON number"
        );
    }

    #[test]
    fn accessors_answer_only_for_their_own_kind() {
        let v = Value::parse(r#"{"i":3,"f":2.5,"b":true,"a":[1],"o":{"k":null},"s":"x"}"#).unwrap();
        let get = |k: &str| v.get(k).unwrap();
        assert_eq!(get("i").as_f64(), Some(3.0));
        assert_eq!(get("f").as_f64(), Some(2.5));
        assert_eq!(get("s").as_f64(), None);
        assert_eq!(get("f").as_u64(), None);
        assert_eq!(get("b").as_bool(), Some(true));
        assert_eq!(get("i").as_bool(), None);
        assert_eq!(get("a").as_array(), Some(&[Value::Int(1)][..]));
        assert_eq!(get("o").as_array(), None);
        assert_eq!(
            get("o").as_object(),
            Some(&[("k".to_string(), Value::Null)][..])
        );
        assert_eq!(get("a").as_object(), None);
        assert_eq!(v.as_object().map(<[_]>::len), Some(6));
        assert_eq!(get("s").as_str(), Some("x"));
    }
}
