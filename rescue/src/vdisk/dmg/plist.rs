//! The XML property list of a DMG, read as far as its block tables: `resource-fork` → `blkx`, an array
//! of dictionaries whose `Data` is a base64 `mish` block table and whose `CFName` or `Name` names the
//! partition it holds.
//!
//! A small parser of the property-list subset of XML, bounded: it reads a byte slice the caller has
//! already bounded, nests at most [`MAX_DEPTH`] deep, skips the declaration, comments and the DOCTYPE
//! (no entities are defined or expanded beyond XML's five and character references), and every error
//! says at which byte of the list it stopped.

/// How deep dictionaries and arrays may nest (a DMG's list nests 4 deep).
const MAX_DEPTH: usize = 32;

/// One entry of `blkx`.
pub(crate) struct Blkx {
    /// `CFName`, else `Name`, else empty.
    pub(crate) name: String,
    /// `Data`, decoded.
    pub(crate) data: Vec<u8>,
}

/// What went wrong and at which byte of the list.
pub(crate) type Error = (usize, String);

/// The `blkx` entries of the property list `xml`.
pub(crate) fn blkx(xml: &[u8]) -> Result<Vec<Blkx>, Error> {
    let mut p = Parser {
        lex: Lexer { s: xml, pos: 0 },
        peeked: None,
    };
    let root = p.document()?;
    let Value::Dict(mut top) = root.value else {
        return Err((root.at, "its top element is not a dictionary".into()));
    };
    let fork = take(&mut top, "resource-fork")
        .ok_or_else(|| (root.at, "it has no `resource-fork` dictionary".to_string()))?;
    let Value::Dict(mut fork_entries) = fork.value else {
        return Err((fork.at, "`resource-fork` is not a dictionary".into()));
    };
    let list = take(&mut fork_entries, "blkx")
        .ok_or_else(|| (fork.at, "`resource-fork` has no `blkx` array".to_string()))?;
    let Value::Array(items) = list.value else {
        return Err((list.at, "`blkx` is not an array".into()));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Dict(mut entry) = item.value else {
            return Err((item.at, "an entry of `blkx` is not a dictionary".into()));
        };
        let name = ["CFName", "Name"]
            .iter()
            .find_map(|k| match take(&mut entry, k).map(|n| n.value) {
                Some(Value::String(s)) => Some(s),
                _ => None,
            })
            .unwrap_or_default();
        let data = match take(&mut entry, "Data") {
            Some(Node {
                value: Value::Data(d),
                ..
            }) => d,
            Some(n) => return Err((n.at, format!("`Data` of `blkx` entry `{name}` is not data"))),
            None => return Err((item.at, format!("`blkx` entry `{name}` has no `Data`"))),
        };
        out.push(Blkx { name, data });
    }
    Ok(out)
}

/// The value of `key` in `dict` (the first, if the key repeats), taken out.
fn take(dict: &mut Vec<(String, Node)>, key: &str) -> Option<Node> {
    let i = dict.iter().position(|(k, _)| k == key)?;
    Some(dict.swap_remove(i).1)
}

/// A value and the byte of the list where it starts.
struct Node {
    at: usize,
    value: Value,
}

enum Value {
    Dict(Vec<(String, Node)>),
    Array(Vec<Node>),
    String(String),
    Data(Vec<u8>),
    /// A number, a date or a boolean: not needed.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Open(&'a [u8]),
    Close(&'a [u8]),
    Empty(&'a [u8]),
    Text(&'a [u8]),
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// The byte after the first `end` at or after `from`.
    fn past(&self, from: usize, end: &[u8], what: &str) -> Result<usize, Error> {
        self.s
            .get(from..)
            .and_then(|rest| rest.windows(end.len()).position(|w| w == end))
            .map(|i| from + i + end.len())
            .ok_or_else(|| (from, format!("{what} that does not end")))
    }

    /// The next token and where it starts, skipping declarations, comments and the DOCTYPE.
    fn next(&mut self) -> Result<Option<(usize, Token<'a>)>, Error> {
        loop {
            let at = self.pos;
            let rest = match self.s.get(at..) {
                Some(r) if !r.is_empty() => r,
                _ => return Ok(None),
            };
            if rest[0] != b'<' {
                let n = rest.iter().position(|&c| c == b'<').unwrap_or(rest.len());
                self.pos += n;
                return Ok(Some((at, Token::Text(&rest[..n]))));
            }
            if rest.starts_with(b"<?") {
                self.pos = self.past(at, b"?>", "a declaration")?;
            } else if rest.starts_with(b"<!--") {
                self.pos = self.past(at + 4, b"-->", "a comment")?;
            } else if rest.starts_with(b"<![CDATA[") {
                return Err((
                    at,
                    "a CDATA section, which property lists do not use".into(),
                ));
            } else if rest.starts_with(b"<!") {
                // The DOCTYPE; an internal subset would define entities, which a property list has none of.
                let end = self.past(at, b">", "a DOCTYPE")?;
                if rest[..end - at].contains(&b'[') {
                    return Err((at, "a DOCTYPE with an internal subset".into()));
                }
                self.pos = end;
            } else {
                return self.tag(at, rest).map(Some);
            }
        }
    }

    /// The tag at `at` (`rest` starts with `<`).
    fn tag(&mut self, at: usize, rest: &'a [u8]) -> Result<(usize, Token<'a>), Error> {
        let closing = rest.get(1) == Some(&b'/');
        let start = if closing { 2 } else { 1 };
        // The end of the tag, past quoted attribute values.
        let mut quote = None;
        let mut end = None;
        for (i, &c) in rest.iter().enumerate().skip(start) {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, b'"' | b'\'') => quote = Some(c),
                (None, b'>') => {
                    end = Some(i);
                    break;
                }
                (None, b'<') => return Err((at, "a tag that does not end".into())),
                _ => {}
            }
        }
        let end = end.ok_or_else(|| (at, "a tag that does not end".to_string()))?;
        let inner = &rest[start..end];
        let empty = !closing && inner.last() == Some(&b'/');
        let name_len = inner
            .iter()
            .position(|c| c.is_ascii_whitespace() || *c == b'/')
            .unwrap_or(inner.len());
        let name = &inner[..name_len];
        if name.is_empty() {
            return Err((at, "a tag without a name".into()));
        }
        self.pos = at + end + 1;
        Ok((
            at,
            if closing {
                Token::Close(name)
            } else if empty {
                Token::Empty(name)
            } else {
                Token::Open(name)
            },
        ))
    }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    peeked: Option<(usize, Token<'a>)>,
}

fn shown(name: &[u8]) -> String {
    String::from_utf8_lossy(&name[..name.len().min(40)]).into_owned()
}

impl<'a> Parser<'a> {
    fn next(&mut self) -> Result<Option<(usize, Token<'a>)>, Error> {
        match self.peeked.take() {
            Some(t) => Ok(Some(t)),
            None => self.lex.next(),
        }
    }

    /// The next token that is not whitespace between elements.
    fn next_element(&mut self) -> Result<(usize, Token<'a>), Error> {
        loop {
            match self.next()? {
                None => return Err((self.lex.pos, "it ends inside an element".into())),
                Some((_, Token::Text(t))) if t.iter().all(u8::is_ascii_whitespace) => {}
                Some((at, Token::Text(_))) => {
                    return Err((at, "text where an element belongs".into()))
                }
                Some(t) => return Ok(t),
            }
        }
    }

    /// `<plist>` around one value, or the value alone.
    fn document(&mut self) -> Result<Node, Error> {
        let (at, first) = self.next_element()?;
        let value = if first == Token::Open(b"plist") {
            let v = self.value(0)?;
            match self.next_element()? {
                (_, Token::Close(b"plist")) => v,
                (at, _) => return Err((at, "more than one value in `<plist>`".into())),
            }
        } else {
            self.peeked = Some((at, first));
            self.value(0)?
        };
        loop {
            match self.next()? {
                None => return Ok(value),
                Some((_, Token::Text(t))) if t.iter().all(u8::is_ascii_whitespace) => {}
                Some((at, _)) => return Err((at, "more after the property list's end".into())),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, Error> {
        if depth > MAX_DEPTH {
            return Err((
                self.lex.pos,
                format!("values nested more than {MAX_DEPTH} deep"),
            ));
        }
        let (at, token) = self.next_element()?;
        let value = match token {
            Token::Empty(b"dict") => Value::Dict(Vec::new()),
            Token::Empty(b"array") => Value::Array(Vec::new()),
            Token::Empty(b"string") => Value::String(String::new()),
            Token::Empty(b"data") => Value::Data(Vec::new()),
            Token::Empty(b"true" | b"false" | b"integer" | b"real" | b"date") => Value::Other,
            Token::Open(b"dict") => self.dict(depth)?,
            Token::Open(b"array") => {
                let mut items = Vec::new();
                loop {
                    match self.next_element()? {
                        (_, Token::Close(b"array")) => break Value::Array(items),
                        t => {
                            self.peeked = Some(t);
                            items.push(self.value(depth + 1)?);
                        }
                    }
                }
            }
            Token::Open(b"string") => Value::String(text(self.text(b"string")?, at)?),
            Token::Open(b"data") => Value::Data(base64(self.text(b"data")?).map_err(|e| (at, e))?),
            Token::Open(name @ (b"true" | b"false" | b"integer" | b"real" | b"date")) => {
                self.text(name)?;
                Value::Other
            }
            Token::Open(name) | Token::Empty(name) => {
                return Err((
                    at,
                    format!("`<{}>`, not a property-list value", shown(name)),
                ))
            }
            Token::Close(name) => {
                return Err((at, format!("`</{}>` where a value belongs", shown(name))))
            }
            Token::Text(_) => return Err((at, "text where a value belongs".into())),
        };
        Ok(Node { at, value })
    }

    /// A dictionary's keys and values, up to `</dict>`.
    fn dict(&mut self, depth: usize) -> Result<Value, Error> {
        let mut entries = Vec::new();
        loop {
            match self.next_element()? {
                (_, Token::Close(b"dict")) => return Ok(Value::Dict(entries)),
                (at, Token::Open(b"key")) => {
                    let key = text(self.text(b"key")?, at)?;
                    let v = self.value(depth + 1)?;
                    entries.push((key, v));
                }
                (_, Token::Empty(b"key")) => {
                    let v = self.value(depth + 1)?;
                    entries.push((String::new(), v));
                }
                (at, _) => return Err((at, "a dictionary entry without its `<key>`".into())),
            }
        }
    }

    /// The text of an element up to its closing tag `</name>`.
    fn text(&mut self, name: &[u8]) -> Result<&'a [u8], Error> {
        let mut body: &'a [u8] = b"";
        loop {
            match self.next()? {
                None => return Err((self.lex.pos, format!("`<{}>` does not end", shown(name)))),
                Some((_, Token::Close(n))) if n == name => return Ok(body),
                Some((_, Token::Text(t))) if body.is_empty() => body = t,
                Some((at, _)) => {
                    return Err((at, format!("`<{}>` holds more than text", shown(name))))
                }
            }
        }
    }
}

/// XML text: UTF-8, with the five predefined entities and character references.
fn text(raw: &[u8], at: usize) -> Result<String, Error> {
    let s = std::str::from_utf8(raw).map_err(|_| (at, "text that is not UTF-8".to_string()))?;
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after
            .find(';')
            .filter(|&i| i <= 10)
            .ok_or_else(|| (at, "an `&` that starts no entity".to_string()))?;
        let entity = &after[..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32).ok_or_else(|| {
                    (
                        at,
                        format!("`&{entity};`, an entity a property list does not define"),
                    )
                })?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Base64 with whitespace anywhere (Apple's lists break it into indented lines).
fn base64(text: &[u8]) -> Result<Vec<u8>, String> {
    let compact: String = text
        .iter()
        .filter(|c| !c.is_ascii_whitespace())
        .map(|&c| char::from(c))
        .collect();
    crate::units::base64_decode(&compact)
        .ok_or_else(|| "a character outside base64 in its data".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn entities_are_decoded_and_unknown_ones_refused() {
        assert_eq!(text(b"a &amp; b &#x41;&#66;", 0).unwrap(), "a & b AB");
        assert!(text(b"&nbsp;", 0).is_err());
        assert!(text(b"a & b", 0).is_err());
    }

    #[test]
    fn a_property_list_gives_its_blkx_entries() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<!-- a comment -->
<dict>
	<key>resource-fork</key>
	<dict>
		<key>blkx</key>
		<array>
			<dict>
				<key>Attributes</key>
				<string>0x0050</string>
				<key>CFName</key>
				<string>disk image &amp; more</string>
				<key>Data</key>
				<data>
				bWlzaA==
				</data>
				<key>ID</key>
				<integer>-1</integer>
				<key>Flag</key>
				<true/>
			</dict>
			<dict><key>Name</key><string>two</string><key>Data</key><data/></dict>
		</array>
		<key>plst</key>
		<array/>
	</dict>
</dict>
</plist>
"#;
        let b = blkx(xml).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].name, "disk image & more");
        assert_eq!(b[0].data, b"mish");
        assert_eq!(b[1].name, "two");
        assert!(b[1].data.is_empty());
    }

    #[test]
    fn damaged_lists_say_where() {
        for (xml, at) in [
            (&b"<plist><dict><key>resource-fork</key><dict>"[..], 43),
            (b"<plist><dict><key>a</key></dict></plist>", 25),
            (
                b"<plist><dict><key>resource-fork</key><dict/></dict></plist>",
                37,
            ),
            (
                b"<plist><dict><key>x</key><string>a<b/></string></dict></plist>",
                34,
            ),
            (b"<plist><dict></dict></plist><dict/>", 28),
            (
                b"<plist><dict><key>a</key><data>!!</data></dict></plist>",
                25,
            ),
        ] {
            let (got, why) = blkx(xml).err().unwrap();
            assert_eq!(got, at, "{why}");
        }
        let deep = format!("{}{}", "<array>".repeat(100), "</array>".repeat(100));
        let (_, why) = blkx(deep.as_bytes()).err().unwrap();
        assert!(why.contains("nested"), "{why}");
    }
}
