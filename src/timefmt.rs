//! RFC 3339 formatting of revfs times (UTC).

use crate::format::Time;

pub fn rfc3339(t: Time) -> String {
    match chrono::DateTime::from_timestamp(t.secs, t.nanos) {
        Some(d) => d.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        None => format!("{}.{:09}", t.secs, t.nanos),
    }
}
