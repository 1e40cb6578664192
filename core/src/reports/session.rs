//! The session record of one finished connection and its line in the `-S` file
//! (SPEC §4): `[yyyy-mm-dd HH:MM:SS] plug[PID] FROM PEER TO IN OUT DURATION`.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::config::addr::{canonical_ip, Destination, Source};
use crate::connection::relay::RelayOutcome;

/// A local wall-clock time, broken down; the adapter reads the clock and time zone
/// and passes it in, the core only formats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallTime {
    /// Year, e.g. 2026.
    pub year: i32,
    /// Month, 1-12.
    pub month: u8,
    /// Day of the month, 1-31.
    pub day: u8,
    /// Hour, 0-23.
    pub hour: u8,
    /// Minute, 0-59.
    pub minute: u8,
    /// Second, 0-60 (leap second).
    pub second: u8,
}

impl fmt::Display for WallTime {
    /// `yyyy-mm-dd HH:MM:SS`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Everything the session line says about one connection that reached a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The listener (FROM).
    pub source: Source,
    /// The client's address (PEER), canonical.
    pub peer: IpAddr,
    /// The destination as given (TO), also with `-h`.
    pub destination: Destination,
    /// Bytes received from the client (IN).
    pub from_client: u64,
    /// Bytes received from the destination, tunnel bytes only (OUT).
    pub from_destination: u64,
    /// From accept to close.
    pub duration: Duration,
}

impl SessionRecord {
    /// Builds the record of a finished relay; `duration` runs from accept to close.
    pub fn new(
        source: Source,
        peer: IpAddr,
        destination: Destination,
        outcome: &RelayOutcome,
        duration: Duration,
    ) -> Self {
        SessionRecord {
            source,
            peer: canonical_ip(peer),
            destination,
            from_client: outcome.from_client,
            from_destination: outcome.from_destination,
            duration,
        }
    }

    /// The line to append to the session file, newline included. `pid` is the
    /// daemon's; the word is `plug[PID]` whatever the binary is called.
    pub fn line(&self, closed_at: WallTime, pid: u32) -> String {
        format!(
            "[{closed_at}] plug[{pid}] {} {} {} {} {} {}\n",
            self.source.session_text(),
            self.peer,
            self.destination,
            self.from_client,
            self.from_destination,
            self.duration.as_micros()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::relay::RelayEnd;

    fn wall() -> WallTime {
        WallTime {
            year: 2026,
            month: 3,
            day: 7,
            hour: 4,
            minute: 5,
            second: 9,
        }
    }

    fn outcome(i: u64, o: u64) -> RelayOutcome {
        RelayOutcome {
            from_client: i,
            from_destination: o,
            spliced: 0,
            end: RelayEnd::Finished,
        }
    }

    #[test]
    fn exact_line_spec_4() {
        let r = SessionRecord::new(
            Source::parse("8080").unwrap(),
            "127.0.0.1".parse().unwrap(),
            Destination::parse("127.0.0.1:9000", 8080, false).unwrap(),
            &outcome(10, 20),
            Duration::from_micros(1_234_567),
        );
        assert_eq!(
            r.line(wall(), 4242),
            "[2026-03-07 04:05:09] plug[4242] 8080 127.0.0.1 127.0.0.1:9000 10 20 1234567\n"
        );
    }

    #[test]
    fn listen_address_and_ipv6_forms_spec_4() {
        let r = SessionRecord::new(
            Source::parse("[::1]:8080").unwrap(),
            "::ffff:127.0.0.2".parse().unwrap(),
            Destination::parse("[::1]:9000", 8080, false).unwrap(),
            &outcome(0, 0),
            Duration::from_micros(7),
        );
        assert_eq!(
            r.line(wall(), 1),
            "[2026-03-07 04:05:09] plug[1] [::1]:8080 127.0.0.2 [::1]:9000 0 0 7\n"
        );
        let r = SessionRecord {
            peer: "2001:db8::7".parse().unwrap(),
            ..r
        };
        assert!(r.line(wall(), 1).contains(" 2001:db8::7 [::1]:9000 "));
    }

    #[test]
    fn proxied_destination_is_written_as_given_spec_4() {
        let r = SessionRecord::new(
            Source::parse("2022").unwrap(),
            "127.0.0.1".parse().unwrap(),
            Destination::parse("customer.example.com:22", 2022, true).unwrap(),
            &outcome(1, 2),
            Duration::ZERO,
        );
        assert_eq!(
            r.line(wall(), 9),
            "[2026-03-07 04:05:09] plug[9] 2022 127.0.0.1 customer.example.com:22 1 2 0\n"
        );
    }
}
