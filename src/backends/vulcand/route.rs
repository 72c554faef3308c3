//! A parser for Vulcand's frontend route language, so a route Vulcand would
//! refuse is reported against its app before any call.
//!
//! The language (github.com/vulcand/route, its README): matcher calls
//! `Host`, `HostRegexp`, `Path`, `PathRegexp`, `Method`, `MethodRegexp` (one
//! string argument each), `Header`, `HeaderRegexp` (name, value), joined by
//! `&&` and grouped with parentheses. String literals are Go literals: `"…"`
//! with Go escapes, or raw `` `…` ``. There is no `||` and no negation.
//!
//! Invariants:
//! - Pure: no I/O. `parse` accepts only what Vulcand accepts, within the
//!   limits below, and says where and why it refuses.
//! - Deliberately approximate: regexp arguments get a structural check
//!   (balanced groups and classes, no dangling escape or repeat) rather than a
//!   full RE2 compile; trie arguments get a placeholder check (`<name>`).
//!   `Host` arguments must look like host names (stricter than Vulcand, which
//!   would accept a host that can never match).

use std::fmt;

/// A parsed route expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A matcher call, e.g. `Host("a.example.com")`.
    Matcher { name: Matcher, args: Vec<String> },
    /// `a && b`.
    And(Box<Route>, Box<Route>),
}

/// The matchers Vulcand knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matcher {
    Host,
    HostRegexp,
    Path,
    PathRegexp,
    Method,
    MethodRegexp,
    Header,
    HeaderRegexp,
}

impl Matcher {
    fn parse(name: &str) -> Option<Matcher> {
        Some(match name {
            "Host" => Matcher::Host,
            "HostRegexp" => Matcher::HostRegexp,
            "Path" => Matcher::Path,
            "PathRegexp" => Matcher::PathRegexp,
            "Method" => Matcher::Method,
            "MethodRegexp" => Matcher::MethodRegexp,
            "Header" => Matcher::Header,
            "HeaderRegexp" => Matcher::HeaderRegexp,
            _ => return None,
        })
    }

    fn arity(self) -> usize {
        match self {
            Matcher::Header | Matcher::HeaderRegexp => 2,
            _ => 1,
        }
    }

    fn is_regexp(self) -> bool {
        matches!(self, Matcher::HostRegexp | Matcher::PathRegexp | Matcher::MethodRegexp | Matcher::HeaderRegexp)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a route expression is refused; `at` is a byte offset into it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("empty route expression")]
    Empty,
    #[error("at {at}: unterminated string literal")]
    UnterminatedString { at: usize },
    #[error("at {at}: invalid escape in string literal")]
    BadEscape { at: usize },
    #[error("at {at}: unexpected {found}, expected {expected}")]
    Unexpected { at: usize, found: String, expected: &'static str },
    #[error("at {at}: operator || is not supported (Vulcand routes combine matchers with && only)")]
    Or { at: usize },
    #[error(
        "at {at}: unknown matcher {name:?} (known: Host, HostRegexp, Path, PathRegexp, Method, MethodRegexp, Header, HeaderRegexp)"
    )]
    UnknownMatcher { at: usize, name: String },
    #[error("at {at}: {matcher} takes {want} string argument(s), got {got}")]
    Arity { at: usize, matcher: Matcher, want: usize, got: usize },
    #[error("{matcher}: invalid host name {host:?}")]
    BadHost { matcher: Matcher, host: String },
    #[error("{matcher}: bad regular expression {expr:?}: {why}")]
    BadRegexp { matcher: Matcher, expr: String, why: &'static str },
    #[error("{matcher}: bad placeholder in {expr:?}: every < needs a name and a closing >")]
    BadPlaceholder { matcher: Matcher, expr: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Str(String),
    LParen,
    RParen,
    Comma,
    And,
    Or,
    Other(char),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier {s:?}"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::LParen => "\"(\"".to_owned(),
            Tok::RParen => "\")\"".to_owned(),
            Tok::Comma => "\",\"".to_owned(),
            Tok::And => "\"&&\"".to_owned(),
            Tok::Or => "\"||\"".to_owned(),
            Tok::Other(c) => format!("{c:?}"),
        }
    }
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, RouteError> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' | ')' | ',' => {
                out.push((
                    at,
                    if c == '(' {
                        Tok::LParen
                    } else if c == ')' {
                        Tok::RParen
                    } else {
                        Tok::Comma
                    },
                ));
                i += 1;
            }
            '&' | '|' if chars.get(i + 1).map(|p| p.1) == Some(c) => {
                out.push((at, if c == '&' { Tok::And } else { Tok::Or }));
                i += 2;
            }
            '`' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(RouteError::UnterminatedString { at }),
                        Some((_, '`')) => break,
                        Some((_, ch)) => s.push(*ch),
                    }
                    i += 1;
                }
                i += 1;
                out.push((at, Tok::Str(s)));
            }
            '"' => {
                let (s, next) = lex_quoted(&chars, i)?;
                out.push((at, Tok::Str(s)));
                i = next;
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut s = String::new();
                while let Some((_, ch)) = chars.get(i) {
                    if ch.is_alphanumeric() || *ch == '_' {
                        s.push(*ch);
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push((at, Tok::Ident(s)));
            }
            other => {
                out.push((at, Tok::Other(other)));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// A Go interpreted string literal starting at `chars[start]` (the quote).
/// Returns the value and the index after the closing quote.
fn lex_quoted(chars: &[(usize, char)], start: usize) -> Result<(String, usize), RouteError> {
    let at = chars[start].0;
    let mut s = String::new();
    let mut i = start + 1;
    loop {
        let Some(&(pos, ch)) = chars.get(i) else {
            return Err(RouteError::UnterminatedString { at });
        };
        match ch {
            '"' => return Ok((s, i + 1)),
            '\n' => return Err(RouteError::UnterminatedString { at }),
            '\\' => {
                let Some(&(_, e)) = chars.get(i + 1) else {
                    return Err(RouteError::UnterminatedString { at });
                };
                let bad = RouteError::BadEscape { at: pos };
                let simple = match e {
                    'a' => Some('\u{7}'),
                    'b' => Some('\u{8}'),
                    'f' => Some('\u{c}'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    'v' => Some('\u{b}'),
                    '\\' => Some('\\'),
                    '"' => Some('"'),
                    _ => None,
                };
                if let Some(c) = simple {
                    s.push(c);
                    i += 2;
                    continue;
                }
                let (digits, radix) = match e {
                    'x' => (2, 16),
                    'u' => (4, 16),
                    'U' => (8, 16),
                    '0'..='7' => (3, 8),
                    _ => return Err(bad),
                };
                let first = if radix == 8 { i + 1 } else { i + 2 };
                let text: String = chars.iter().skip(first).take(digits).map(|p| p.1).collect();
                if text.chars().count() != digits {
                    return Err(bad);
                }
                let n = u32::from_str_radix(&text, radix).map_err(|_| bad.clone())?;
                // \x and octal escapes are bytes in Go; keep ASCII only, which
                // is all a route needs.
                let c = if radix == 8 || e == 'x' {
                    if n > 0x7f {
                        return Err(bad);
                    }
                    char::from_u32(n)
                } else {
                    char::from_u32(n)
                };
                s.push(c.ok_or(bad)?);
                i = first + digits;
            }
            c => {
                s.push(c);
                i += 1;
            }
        }
    }
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&(usize, Tok)> {
        self.toks.get(self.pos)
    }

    fn unexpected(&self, expected: &'static str) -> RouteError {
        match self.peek() {
            Some((at, Tok::Or)) => RouteError::Or { at: *at },
            Some((at, t)) => RouteError::Unexpected { at: *at, found: t.describe(), expected },
            None => RouteError::Unexpected { at: self.len, found: "end of expression".to_owned(), expected },
        }
    }

    fn expr(&mut self) -> Result<Route, RouteError> {
        let mut left = self.primary()?;
        while let Some((_, Tok::And)) = self.peek() {
            self.pos += 1;
            let right = self.primary()?;
            left = Route::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn primary(&mut self) -> Result<Route, RouteError> {
        match self.peek().cloned() {
            Some((_, Tok::LParen)) => {
                self.pos += 1;
                let inner = self.expr()?;
                match self.peek() {
                    Some((_, Tok::RParen)) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    _ => Err(self.unexpected("\")\" or \"&&\"")),
                }
            }
            Some((at, Tok::Ident(name))) => {
                self.pos += 1;
                let matcher = Matcher::parse(&name).ok_or(RouteError::UnknownMatcher { at, name })?;
                if !matches!(self.peek(), Some((_, Tok::LParen))) {
                    return Err(self.unexpected("\"(\" after a matcher name"));
                }
                self.pos += 1;
                let mut args = Vec::new();
                if matches!(self.peek(), Some((_, Tok::RParen))) {
                    self.pos += 1;
                } else {
                    loop {
                        match self.peek().cloned() {
                            Some((_, Tok::Str(s))) => {
                                self.pos += 1;
                                args.push(s);
                            }
                            _ => return Err(self.unexpected("a string literal")),
                        }
                        match self.peek() {
                            Some((_, Tok::Comma)) => self.pos += 1,
                            Some((_, Tok::RParen)) => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(self.unexpected("\",\" or \")\"")),
                        }
                    }
                }
                if args.len() != matcher.arity() {
                    return Err(RouteError::Arity { at, matcher, want: matcher.arity(), got: args.len() });
                }
                check_args(matcher, &args)?;
                Ok(Route::Matcher { name: matcher, args })
            }
            _ => Err(self.unexpected("a matcher or \"(\"")),
        }
    }
}

/// Parses and checks a route expression as Vulcand would on frontend upsert.
pub fn parse(src: &str) -> Result<Route, RouteError> {
    if src.trim().is_empty() {
        return Err(RouteError::Empty);
    }
    let toks = lex(src)?;
    let mut p = Parser { toks, pos: 0, len: src.len() };
    let route = p.expr()?;
    if p.peek().is_some() {
        return Err(p.unexpected("\"&&\" or end of expression"));
    }
    Ok(route)
}

fn check_args(m: Matcher, args: &[String]) -> Result<(), RouteError> {
    // The matched value is the last argument (Header's first is the name).
    let Some(value) = args.last() else {
        return Ok(());
    };
    if m.is_regexp() {
        return check_regexp(value).map_err(|why| RouteError::BadRegexp { matcher: m, expr: value.clone(), why });
    }
    if !placeholders_ok(value) {
        return Err(RouteError::BadPlaceholder { matcher: m, expr: value.clone() });
    }
    if m == Matcher::Host && !host_ok(value) {
        return Err(RouteError::BadHost { matcher: m, host: value.clone() });
    }
    Ok(())
}

/// Every `<` opens a placeholder with a non-empty name, closed by `>`.
fn placeholders_ok(s: &str) -> bool {
    let mut open = false;
    let mut name_len = 0;
    for c in s.chars() {
        match (c, open) {
            ('<', false) => {
                open = true;
                name_len = 0;
            }
            ('<', true) => return false,
            ('>', true) => {
                if name_len == 0 {
                    return false;
                }
                open = false;
            }
            ('>', false) => return false,
            (_, true) => name_len += 1,
            (_, false) => {}
        }
    }
    !open
}

/// A host name (labels of letters, digits, `-`, `_`, or `<placeholders>`,
/// separated by dots), optionally with `:port`.
fn host_ok(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return false;
    }
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '<' | '>' | '*'))
    })
}

/// Structural RE2 check: balanced groups and classes, no dangling escape, no
/// repeat operator with nothing to repeat.
fn check_regexp(re: &str) -> Result<(), &'static str> {
    let mut depth = 0usize;
    let mut chars = re.chars().peekable();
    // Whether the previous item can be repeated.
    let mut repeatable = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if chars.next().is_none() {
                    return Err("trailing backslash");
                }
                repeatable = true;
            }
            '[' => {
                // A class: `]` right after `[` or `[^` is a literal.
                if chars.peek() == Some(&'^') {
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    chars.next();
                }
                loop {
                    match chars.next() {
                        None => return Err("missing closing ]"),
                        Some('\\') => {
                            if chars.next().is_none() {
                                return Err("trailing backslash");
                            }
                        }
                        Some(']') => break,
                        Some(_) => {}
                    }
                }
                repeatable = true;
            }
            '(' => {
                depth += 1;
                if chars.peek() == Some(&'?') {
                    chars.next();
                }
                repeatable = false;
            }
            ')' => {
                if depth == 0 {
                    return Err("unexpected )");
                }
                depth -= 1;
                repeatable = true;
            }
            '*' | '+' | '?' => {
                if !repeatable {
                    return Err("missing argument to repetition operator");
                }
                // `a*?` is lazy, `a**` is an error in RE2.
                if chars.peek() == Some(&'?') {
                    chars.next();
                }
                repeatable = false;
            }
            '|' => repeatable = false,
            _ => repeatable = true,
        }
    }
    if depth != 0 {
        return Err("missing closing )");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) {
        if let Err(e) = parse(src) {
            panic!("{src:?} refused: {e}");
        }
    }

    fn bad(src: &str, want: &str) {
        match parse(src) {
            Ok(r) => panic!("{src:?} accepted as {r:?}"),
            Err(e) => assert!(e.to_string().contains(want), "{src:?}: {e} does not mention {want:?}"),
        }
    }

    #[test]
    fn accepts_what_vulcand_accepts() {
        ok(r#"Host("web.example.com")"#);
        ok(r#"Host("web.example.com") && PathRegexp("/.*")"#);
        ok(r#"PathRegexp("/.*")"#);
        ok("Path(`/`)");
        ok(r#"Host("<sub>.example.com")"#);
        ok(r#"HostRegexp(".*\\.example\\.com")"#);
        ok(r#"Method("GET") && MethodRegexp("GET|HEAD")"#);
        ok(r#"Header("Content-Type","application/json")"#);
        ok(r#"HeaderRegexp("X-Ver", "v[0-9]+")"#);
        ok(r#"(Host("a.b") && (Path("/x") && Method("GET")))"#);
        ok(r#"  Host( "a.b:8080" )  "#);
        ok(r#"PathRegexp("/(api|v1)/[^/]+/?")"#);
        ok(r#"Path("/a\x2fb\u00e9")"#);
    }

    #[test]
    fn refuses_what_vulcand_refuses() {
        bad("", "empty");
        bad(r#"Host("web.example.com)"#, "unterminated");
        bad("Path(`/)", "unterminated");
        bad(r#"Host("a.b""#, "expected");
        bad(r#"(Host("a.b")"#, "\")\"");
        bad(r#"Host("a.b"))"#, "end of expression");
        bad(r#"Hots("a.b")"#, "unknown matcher \"Hots\"");
        bad(r#"Host("a.b") || Path("/")"#, "||");
        bad(r#"Host("a.b") &&"#, "end of expression");
        bad(r#"Host("a.b") & Path("/")"#, "'&'");
        bad(r#"Host("a.b") Path("/")"#, "\"&&\"");
        bad(r#"Header("X")"#, "takes 2");
        bad(r#"Host("a", "b")"#, "takes 1");
        bad("Host(web.example.com)", "string literal");
        bad(r#"Host("a\qb")"#, "escape");
        bad(r#"Host("bad host")"#, "host name");
        bad(r#"Host("")"#, "host name");
        bad(r#"Host("a..b")"#, "host name");
        bad(r#"PathRegexp("/(a")"#, "missing closing )");
        bad(r#"PathRegexp("[a-")"#, "missing closing ]");
        bad(r#"PathRegexp("*a")"#, "repetition");
        bad(r#"PathRegexp("a\\")"#, "trailing backslash");
        bad(r#"Path("/<id")"#, "placeholder");
        bad(r#"Path("/<>")"#, "placeholder");
    }

    #[test]
    fn builds_the_tree() {
        let r = parse(r#"Host("a.b") && Header("X-A", "1")"#).unwrap();
        assert_eq!(
            r,
            Route::And(
                Box::new(Route::Matcher { name: Matcher::Host, args: vec!["a.b".into()] }),
                Box::new(Route::Matcher { name: Matcher::Header, args: vec!["X-A".into(), "1".into()] }),
            )
        );
    }
}
