//! Everything `cpns` prints goes through here, so that a closed pipe (`cpns … | head`) ends the
//! command quietly with exit code 0 instead of the panic of `println!`, and so that times are
//! shown one way: local dates for people, Unix seconds in JSON (docs/API.md).

use std::io::{IsTerminal, Write};

/// Writes to stdout; on a closed pipe, exits at once with [`crate::EXIT_OK`] (the reader has
/// what it wanted). Other write errors are reported on stderr and exit with
/// [`crate::EXIT_FAILED`].
pub(crate) fn stdout(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        closed_or_failed(&e);
    }
}

/// Writes to stderr, with the same handling of a closed pipe.
pub(crate) fn stderr(args: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    if let Err(e) = err.write_fmt(args) {
        closed_or_failed(&e);
    }
}

fn closed_or_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(i32::from(crate::EXIT_OK));
    }
    let _ = writeln!(std::io::stderr(), "cpns: writing the output: {e}");
    std::process::exit(i32::from(crate::EXIT_FAILED));
}

/// Whether progress bars and spinners are shown: only when stderr (where they draw) is a
/// terminal and the output is not JSON.
pub(crate) fn progress_on(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// A Unix time (seconds) as a local date and time, e.g. `2027-12-01 09:43:49 CET`.
pub(crate) fn local_time(unix_secs: u64) -> String {
    let Ok(secs) = i64::try_from(unix_secs) else {
        return format!("{unix_secs} (unix s)");
    };
    match jiff::Timestamp::from_second(secs) {
        Ok(t) => t
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        Err(_) => format!("{unix_secs} (unix s)"),
    }
}

/// A time in milliseconds since the Unix epoch as a local time of day with milliseconds
/// (trace tables: the date is the same for a whole flow).
pub(crate) fn local_time_ms(unix_ms: u64) -> String {
    let Ok(ms) = i64::try_from(unix_ms) else {
        return unix_ms.to_string();
    };
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%Y-%m-%d %H:%M:%S%.3f")
            .to_string(),
        Err(_) => unix_ms.to_string(),
    }
}

/// `println!` through [`stdout`].
macro_rules! outln {
    () => { $crate::output::stdout(format_args!("\n")) };
    ($($t:tt)*) => { $crate::output::stdout(format_args!("{}\n", format_args!($($t)*))) };
}

/// `print!` through [`stdout`].
macro_rules! out {
    ($($t:tt)*) => { $crate::output::stdout(format_args!($($t)*)) };
}

/// `eprintln!` through [`stderr`].
macro_rules! errln {
    ($($t:tt)*) => { $crate::output::stderr(format_args!("{}\n", format_args!($($t)*))) };
}

pub(crate) use {errln, out, outln};

#[cfg(test)]
mod tests {
    #[test]
    fn local_times_are_dates() {
        let t = super::local_time(1_827_647_633);
        assert!(t.starts_with("2027-"), "{t}");
        assert!(!t.contains("unix"), "{t}");
        assert!(super::local_time_ms(1_795_406_536_750).contains(".750"));
    }
}
