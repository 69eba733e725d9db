//! The system clock behind the domain's `Clock` port.

use std::time::{SystemTime, UNIX_EPOCH};

use tokenjar_domain::Clock;

/// Wall-clock time from the operating system.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        // A clock set before 1970 reads as 0: cookies then look fresh,
        // which is the least surprising failure.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}
