//! The simulator's own options, from `sim.cfg` on the boot disk: whitespace-separated words.
//!
//! - `mem=<MiB>`: guest RAM (default 256, 16 ..= 4096, a multiple of 2).
//! - `trace`: print every VMGEXIT.

use core::fmt;

/// Parsed options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub mem_mib: u64,
    pub trace: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mem_mib: 256,
            trace: false,
        }
    }
}

/// A word of `sim.cfg` the simulator does not accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError<'a> {
    Unknown(&'a str),
    BadMemory(&'a str),
}

impl fmt::Display for OptionError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(w) => write!(f, "unknown option `{w}` (known: mem=<MiB>, trace)"),
            Self::BadMemory(w) => write!(
                f,
                "`{w}`: guest memory must be an even number of MiB from 16 to 4096"
            ),
        }
    }
}

impl Options {
    pub fn parse(text: &str) -> Result<Self, OptionError<'_>> {
        let mut o = Self::default();
        for word in text.split_ascii_whitespace() {
            if word == "trace" {
                o.trace = true;
            } else if let Some(v) = word.strip_prefix("mem=") {
                o.mem_mib = v
                    .parse()
                    .ok()
                    .filter(|m| (16..=4096).contains(m) && m % 2 == 0)
                    .ok_or(OptionError::BadMemory(word))?;
            } else {
                return Err(OptionError::Unknown(word));
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults_and_words() {
        assert_eq!(Options::parse(""), Ok(Options::default()));
        assert_eq!(
            Options::parse(" mem=64\ttrace\n"),
            Ok(Options {
                mem_mib: 64,
                trace: true
            })
        );
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert_eq!(
            Options::parse("mem=15"),
            Err(OptionError::BadMemory("mem=15"))
        );
        assert_eq!(
            Options::parse("mem=33"),
            Err(OptionError::BadMemory("mem=33"))
        );
        assert_eq!(
            Options::parse("mem=8192"),
            Err(OptionError::BadMemory("mem=8192"))
        );
        assert_eq!(
            Options::parse("mem=x"),
            Err(OptionError::BadMemory("mem=x"))
        );
        assert_eq!(Options::parse("fast"), Err(OptionError::Unknown("fast")));
    }
}
