//! Numeric addresses and ports: parsing (CLI-5, CLI-7, CLI-8), IPv4-mapped
//! canonicalisation, and the text forms used in logs and the session line.
//!
//! plug never resolves names (CLI-5): every address here is numeric, except a
//! destination's host when an upstream CONNECT proxy is used, which is passed to the
//! proxy verbatim and therefore only checked to be a well-formed host name.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a word is not a valid address or port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrError {
    /// The port is not a whole number from 1 to 65535.
    BadPort(String),
    /// The port part of a word (`addr:port`) is not a whole number from 1 to
    /// 65535; the whole word is kept so the message names what the user wrote.
    BadPortIn {
        /// The port part.
        port: String,
        /// The whole word.
        word: String,
    },
    /// The address is not a numeric IPv4 or IPv6 address.
    BadAddress(String),
    /// The host is neither a numeric address nor a well-formed host name.
    BadHost(String),
    /// A port was required but the word has none.
    MissingPort(String),
    /// An IPv6 address with a port was written without brackets.
    UnbracketedIpv6(String),
    /// A destination attribute (OPT-16) that is unknown, out of range or given
    /// twice; the message says which, the word is kept whole.
    BadAttribute {
        /// What is wrong with it.
        why: String,
        /// The whole destination word.
        word: String,
    },
}

impl fmt::Display for AddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrError::BadPort(w) => write!(f, "bad port '{w}': expected a number from 1 to 65535"),
            AddrError::BadPortIn { port, word } if port.is_empty() => {
                write!(f, "bad port in '{word}': the port after ':' is missing")
            }
            AddrError::BadPortIn { port, word } => write!(
                f,
                "bad port '{port}' in '{word}': expected a number from 1 to 65535"
            ),
            AddrError::BadAddress(w) => {
                write!(f, "bad address '{w}': expected a numeric IPv4 or IPv6 address (plug looks up host names only with --resolve, or through -h)")
            }
            AddrError::BadHost(w) => write!(
                f,
                "bad host '{w}': expected a numeric address or a host name"
            ),
            AddrError::MissingPort(w) => write!(f, "'{w}' has no port: expected addr:port"),
            AddrError::UnbracketedIpv6(w) => {
                write!(f, "'{w}': write an IPv6 address with a port as [addr]:port")
            }
            AddrError::BadAttribute { why, word } => write!(f, "bad destination '{word}': {why}"),
        }
    }
}

impl std::error::Error for AddrError {}

/// True when a socket bound to `bind` (`-p`) can connect to `addr`: no bind, or
/// one of the same family. An address of the other family is skipped, never a
/// reason to drop a client or to mark a destination down (OPT-11, FAULT-6).
pub(crate) fn reachable_from(bind: Option<IpAddr>, addr: &SocketAddr) -> bool {
    bind.is_none_or(|b| b.is_ipv4() == addr.is_ipv4())
}

/// Returns the address a client really has: an IPv4-mapped IPv6 address
/// (`::ffff:a.b.c.d`, as a dual-stack listener reports IPv4 clients) becomes the IPv4
/// address it carries (CLI-8); every other address is returned unchanged.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Parses a port: one to five ASCII digits with a value from 1 to 65535.
pub(crate) fn parse_port(word: &str) -> Result<u16, AddrError> {
    let bad = || AddrError::BadPort(word.to_string());
    if word.is_empty() || word.len() > 5 || !word.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match word.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(port) => Ok(port),
    }
}

/// Parses a numeric IP address, IPv4 dotted quad or IPv6, optionally in brackets
/// (`[::1]`). Names are refused: plug does no DNS lookups (CLI-5).
pub(crate) fn parse_ip(word: &str) -> Result<IpAddr, AddrError> {
    let inner = word
        .strip_prefix('[')
        .and_then(|w| w.strip_suffix(']'))
        .unwrap_or(word);
    if let Ok(v4) = inner.parse::<Ipv4Addr>() {
        if inner.len() == word.len() {
            return Ok(IpAddr::V4(v4));
        }
    }
    match inner.parse::<Ipv6Addr>() {
        Ok(v6) => Ok(IpAddr::V6(v6)),
        Err(_) => Err(AddrError::BadAddress(word.to_string())),
    }
}

/// Parses the port part `port` of `word` (CLI-7: the message names the word).
fn parse_port_in(port: &str, word: &str) -> Result<u16, AddrError> {
    parse_port(port).map_err(|_| AddrError::BadPortIn {
        port: port.to_string(),
        word: word.to_string(),
    })
}

/// Splits `host[:port]`, `[v6][:port]` or a bare IPv6 address into host text and
/// optional port text, without judging either.
fn split_host_port(word: &str) -> Result<(&str, Option<&str>), AddrError> {
    if let Some(rest) = word.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(AddrError::BadAddress(word.to_string()));
        };
        if after.is_empty() {
            return Ok((host, None));
        }
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None => Err(AddrError::BadAddress(word.to_string())),
        };
    }
    if word.parse::<Ipv6Addr>().is_ok() {
        return Ok((word, None));
    }
    match word.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Err(AddrError::UnbracketedIpv6(word.to_string())),
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((word, None)),
    }
}

/// Parses `addr[:port]` with a numeric address; `default_port` is used when the word
/// has no port. IPv6 with a port is written `[addr]:port`.
pub(crate) fn parse_socket_addr(word: &str, default_port: u16) -> Result<SocketAddr, AddrError> {
    let (host, port) = split_host_port(word)?;
    let ip = parse_ip(host).map_err(|_| AddrError::BadAddress(word.to_string()))?;
    let port = match port {
        Some(p) => parse_port_in(p, word)?,
        None => default_port,
    };
    Ok(SocketAddr::new(ip, port))
}

/// The host part of a destination.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Host {
    /// A numeric address: the only kind allowed without an upstream proxy.
    Ip(IpAddr),
    /// A host name, allowed only with `-h`, where the upstream proxy resolves it.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// True when `name` is a syntactically valid DNS host name (letters, digits, `-`, `_`,
/// dot-separated labels of 1 to 63 characters, 253 in all). This is what keeps a
/// destination from smuggling spaces or line breaks into a CONNECT request.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The largest `,weight=N` (OPT-16).
pub const MAX_WEIGHT: u32 = 1000;

/// What a destination word may add after commas (OPT-16): how much of the
/// rotation it takes, and whether it takes new clients at all. Not part of the
/// destination's identity: its text without them is ([`Destination`]'s `Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attributes {
    /// `,weight=N`: 1 to [`MAX_WEIGHT`], 1 when not given.
    pub weight: u32,
    /// `,drain`: no new clients; open connections go on.
    pub drain: bool,
}

impl Default for Attributes {
    fn default() -> Self {
        Attributes {
            weight: 1,
            drain: false,
        }
    }
}

impl Attributes {
    /// Parses what follows the first comma of `word` (`weight=3,drain`): each
    /// attribute at most once, weights 1 to [`MAX_WEIGHT`].
    fn parse(list: &str, word: &str) -> Result<Self, AddrError> {
        let bad = |why: String| AddrError::BadAttribute {
            why,
            word: word.to_string(),
        };
        let mut attrs = Attributes::default();
        let (mut weighted, mut drained) = (false, false);
        for item in list.split(',') {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (item, None),
            };
            let twice = |name: &str| bad(format!("attribute '{name}' given twice"));
            match (name, value) {
                ("weight", Some(v)) => {
                    if std::mem::replace(&mut weighted, true) {
                        return Err(twice("weight"));
                    }
                    attrs.weight = match v.parse::<u32>() {
                        Ok(w)
                            if (1..=MAX_WEIGHT).contains(&w)
                                && v.bytes().all(|b| b.is_ascii_digit()) =>
                        {
                            w
                        }
                        _ => {
                            return Err(bad(format!(
                                "bad weight '{v}': expected a whole number from 1 to {MAX_WEIGHT}"
                            )))
                        }
                    };
                }
                ("drain", None) => {
                    if std::mem::replace(&mut drained, true) {
                        return Err(twice("drain"));
                    }
                    attrs.drain = true;
                }
                _ => {
                    return Err(bad(format!(
                        "unknown attribute '{item}': expected weight=N or drain"
                    )))
                }
            }
        }
        Ok(attrs)
    }
}

/// A destination as given on the command line: host and port (CLI-4, CLI-5),
/// and its attributes (OPT-16).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Destination {
    /// The host: numeric, or a name when going through an upstream proxy.
    pub host: Host,
    /// The port; the source port when the word had none (CLI-4).
    pub port: u16,
    /// `,weight=N`, `,drain`.
    pub attributes: Attributes,
}

impl Destination {
    /// A destination with default attributes.
    pub fn new(host: Host, port: u16) -> Self {
        Destination {
            host,
            port,
            attributes: Attributes::default(),
        }
    }

    /// Parses `addr[:port]`, `[v6][:port]` or, when `allow_names` (only with `-h`),
    /// `name[:port]`; `default_port` (the source port) is used when there is none.
    /// Attributes follow commas: `10.0.0.5:80,weight=3,drain` (OPT-16).
    pub fn parse(word: &str, default_port: u16, allow_names: bool) -> Result<Self, AddrError> {
        let (address, attributes) = match word.split_once(',') {
            Some((a, list)) => (a, Attributes::parse(list, word)?),
            None => (word, Attributes::default()),
        };
        let mut dest = Self::parse_address(address, default_port, allow_names)?;
        dest.attributes = attributes;
        Ok(dest)
    }

    fn parse_address(word: &str, default_port: u16, allow_names: bool) -> Result<Self, AddrError> {
        let (host, port) = split_host_port(word)?;
        let port = match port {
            Some(p) => parse_port_in(p, word)?,
            None => default_port,
        };
        let host = match parse_ip(host) {
            Ok(ip) => Host::Ip(canonical_ip(ip)),
            Err(_) if allow_names && !word.starts_with('[') && is_host_name(host) => {
                Host::Name(host.to_string())
            }
            Err(_) if allow_names => return Err(AddrError::BadHost(word.to_string())),
            Err(_) => return Err(AddrError::BadAddress(word.to_string())),
        };
        Ok(Destination::new(host, port))
    }

    /// The socket address to connect to, or `None` for a named host (which only an
    /// upstream proxy can reach).
    pub(crate) fn socket_addr(&self) -> Option<SocketAddr> {
        match &self.host {
            Host::Ip(ip) => Some(SocketAddr::new(*ip, self.port)),
            Host::Name(_) => None,
        }
    }
}

impl fmt::Display for Destination {
    /// `addr:port`, `[v6]:port` or `name:port`: the TO field, the CONNECT
    /// target, and the destination's identity across a reload (OPT-16: without
    /// attributes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Where plug listens: the source argument, possibly with `-i` (CLI-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The listen address when one was given (`-i` or `addr:port`); `None` means
    /// every IPv4 address, as 2.5.5 bound.
    pub addr: Option<IpAddr>,
    /// The listen port.
    pub port: u16,
}

impl Source {
    /// Parses the source argument: `port`, `:port`, `*:port`, `addr:port` or
    /// `[v6addr]:port`.
    pub fn parse(word: &str) -> Result<Self, AddrError> {
        if let Some(port) = word.strip_prefix("*:").or_else(|| word.strip_prefix(':')) {
            return Ok(Source {
                addr: None,
                port: parse_port_in(port, word)?,
            });
        }
        if word.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Source {
                addr: None,
                port: parse_port(word)?,
            });
        }
        let (host, port) = split_host_port(word)?;
        let Some(port) = port else {
            return Err(AddrError::MissingPort(word.to_string()));
        };
        let ip = parse_ip(host).map_err(|_| AddrError::BadAddress(word.to_string()))?;
        Ok(Source {
            addr: Some(ip),
            port: parse_port_in(port, word)?,
        })
    }

    /// The socket address to bind: the given address, or `0.0.0.0` (2.5.5's
    /// INADDR_ANY; use `-i ::` for a dual-stack listener).
    pub fn bind_addr(&self) -> SocketAddr {
        SocketAddr::new(
            self.addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            self.port,
        )
    }

    /// The FROM field of the session line (SPEC §4): the port, or `addr:port` when a
    /// listen address was given.
    pub(crate) fn session_text(&self) -> String {
        match self.addr {
            None => self.port.to_string(),
            Some(ip) => SocketAddr::new(ip, self.port).to_string(),
        }
    }

    /// The syslog tag of PROC-5: `(port)` or `(addr port)`.
    pub(crate) fn log_tag(&self) -> String {
        match self.addr {
            None => format!("({})", self.port),
            Some(ip) => format!("({ip} {})", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_validated_cli_7() {
        assert_eq!(parse_port("80"), Ok(80));
        assert_eq!(parse_port("65535"), Ok(65535));
        for bad in [
            "", "0", "65536", "99999", "-1", "+80", "8a", " 80", "000080",
        ] {
            assert!(parse_port(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ip_parsing_is_numeric_only_cli_5() {
        assert_eq!(parse_ip("10.0.0.5"), Ok("10.0.0.5".parse().unwrap()));
        assert_eq!(parse_ip("::1"), Ok("::1".parse().unwrap()));
        assert_eq!(parse_ip("[::1]"), Ok("::1".parse().unwrap()));
        for bad in [
            "localhost",
            "300.1.2.3",
            "1.2.3",
            "[1.2.3.4]",
            "",
            "[::1",
            "1.2.3.4 ",
        ] {
            assert!(parse_ip(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn mapped_addresses_are_canonical_cli_8() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(canonical_ip(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical_ip(v6), v6);
    }

    #[test]
    fn destination_forms_cli_4_cli_8() {
        let d = Destination::parse("10.0.0.5", 8080, false).unwrap();
        assert_eq!(d.to_string(), "10.0.0.5:8080");
        let d = Destination::parse("10.0.0.5:80", 8080, false).unwrap();
        assert_eq!(d.socket_addr(), Some("10.0.0.5:80".parse().unwrap()));
        let d = Destination::parse("[::1]:22", 8080, false).unwrap();
        assert_eq!(d.to_string(), "[::1]:22");
        let d = Destination::parse("::1", 8080, false).unwrap();
        assert_eq!(d.to_string(), "[::1]:8080");
        let d = Destination::parse("[::1]", 8080, false).unwrap();
        assert_eq!(d.port, 8080);
        assert_eq!(
            Destination::parse("::1:22x", 1, false),
            Err(AddrError::UnbracketedIpv6("::1:22x".into()))
        );
        assert!(Destination::parse("example.com:22", 1, false).is_err());
        assert!(Destination::parse("10.0.0.5:99999", 1, false).is_err());
        assert!(Destination::parse("10.0.0.5:", 1, false).is_err());
    }

    #[test]
    fn names_only_with_a_proxy_cli_5() {
        let d = Destination::parse("customer.example.com:22", 1, true).unwrap();
        assert_eq!(d.host, Host::Name("customer.example.com".into()));
        assert_eq!(d.socket_addr(), None);
        assert_eq!(d.to_string(), "customer.example.com:22");
        for bad in ["bad host:22", "a\r\nb:22", "x..y:1", "[name]:22", ":22"] {
            assert!(
                Destination::parse(bad, 1, true).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn source_forms_cli_8() {
        assert_eq!(
            Source::parse("8080").unwrap(),
            Source {
                addr: None,
                port: 8080
            }
        );
        assert_eq!(
            Source::parse(":8080").unwrap(),
            Source {
                addr: None,
                port: 8080
            }
        );
        assert_eq!(
            Source::parse("*:8080").unwrap(),
            Source {
                addr: None,
                port: 8080
            }
        );
        let s = Source::parse("127.0.0.1:8080").unwrap();
        assert_eq!(s.addr, Some("127.0.0.1".parse().unwrap()));
        let s = Source::parse("[::1]:8080").unwrap();
        assert_eq!(s.bind_addr(), "[::1]:8080".parse().unwrap());
        assert_eq!(s.session_text(), "[::1]:8080");
        assert_eq!(s.log_tag(), "(::1 8080)");
        assert!(Source::parse("127.0.0.1").is_err());
        assert!(Source::parse("0").is_err());
        assert!(Source::parse("host:80").is_err());
        assert!(Source::parse("*:").is_err());
    }

    #[test]
    fn source_text_forms_spec_4_proc_5() {
        let s = Source::parse("119").unwrap();
        assert_eq!(s.session_text(), "119");
        assert_eq!(s.log_tag(), "(119)");
        assert_eq!(s.bind_addr(), "0.0.0.0:119".parse().unwrap());
        let s = Source {
            addr: Some("192.168.0.14".parse().unwrap()),
            port: 119,
        };
        assert_eq!(s.session_text(), "192.168.0.14:119");
        assert_eq!(s.log_tag(), "(192.168.0.14 119)");
    }

    #[test]
    fn destination_attributes_opt_16() {
        let d = Destination::parse("10.0.0.5:80,weight=3,drain", 1, false).unwrap();
        assert_eq!(
            d.attributes,
            Attributes {
                weight: 3,
                drain: true
            }
        );
        assert_eq!(d.to_string(), "10.0.0.5:80", "named without its attributes");
        let d = Destination::parse("[::1],drain", 22, false).unwrap();
        assert_eq!(
            (d.to_string().as_str(), d.attributes.weight),
            ("[::1]:22", 1)
        );
        for (word, says) in [
            ("10.0.0.5,weight=0", "bad weight '0'"),
            ("10.0.0.5,weight=1001", "bad weight '1001'"),
            ("10.0.0.5,weight=+5", "bad weight '+5'"),
            ("10.0.0.5,weight=", "bad weight ''"),
            (
                "10.0.0.5,weight=2,weight=3",
                "attribute 'weight' given twice",
            ),
            ("10.0.0.5,drain,drain", "attribute 'drain' given twice"),
            ("10.0.0.5,backup", "unknown attribute 'backup'"),
            ("10.0.0.5,drain=1", "unknown attribute 'drain=1'"),
            ("10.0.0.5,", "unknown attribute ''"),
        ] {
            let e = Destination::parse(word, 80, false).unwrap_err().to_string();
            assert!(
                e.contains(says) && e.contains(&format!("'{word}'")),
                "{word}: {e}"
            );
        }
        assert_eq!(
            Destination::parse("10.0.0.5,weight=1000", 80, false)
                .unwrap()
                .attributes
                .weight,
            MAX_WEIGHT
        );
    }

    #[test]
    fn a_bad_port_says_what_is_wrong_with_it_cli_7() {
        let missing = Destination::parse("127.0.0.1:", 80, false).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "bad port in '127.0.0.1:': the port after ':' is missing"
        );
        let big = Destination::parse("127.0.0.1:99999", 80, false).unwrap_err();
        assert_eq!(
            big.to_string(),
            "bad port '99999' in '127.0.0.1:99999': expected a number from 1 to 65535"
        );
    }

    #[test]
    fn host_names_take_letters_digits_hyphens_and_underscores_cli_5() {
        for ok in ["web-1.example.com", "_srv.example", "a", "x1-y_2.local."] {
            let d = Destination::parse(&format!("{ok}:80"), 80, true);
            assert!(d.is_ok(), "{ok}: {d:?}");
        }
        for bad in ["a b", "a..b", "a/b", "ä.example"] {
            let d = Destination::parse(&format!("{bad}:80"), 80, true);
            assert!(matches!(d, Err(AddrError::BadHost(_))), "{bad}: {d:?}");
        }
    }
}
