//! The simulator's own options, from `sim.cfg` on the boot disk: whitespace-separated words.
//!
//! - `mem=<MiB>`: guest RAM (default 256, 16 ..= 4096, a multiple of 2).
//! - `trace`: print every VMGEXIT.
//! - `ghcb_max=<1|2>`: the highest GHCB protocol version offered (default 2). With 1 the
//!   simulator serves the guest as a version 1 hypervisor would: it does not know the version 2
//!   requests (HV_FEATURES, the MSR protocol's AP Reset Hold, the SEV-SNP ones).
//! - `inject=<vector>@<exit>`: the simulator as a hostile hypervisor (Heckler): after vCPU 0's
//!   `<exit>`th #VMEXIT (counted from 1) it injects an external interrupt on `<vector>` (0 ..=
//!   255, no error code, whatever the guest's RFLAGS.IF) with the next VMRUN. Unlike the test
//!   hypercall `INJECT_INTERRUPT` it needs no cooperation from the guest: it reaches the stage.

use core::fmt;
use sev::msr_protocol::GhcbVersion;

/// Parsed options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub mem_mib: u64,
    pub trace: bool,
    /// The highest GHCB protocol version the SEV information offers.
    pub ghcb_max: GhcbVersion,
    /// `inject=`: (vector, vCPU 0's exit after which it is injected).
    pub inject: Option<(u8, u64)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mem_mib: 256,
            trace: false,
            ghcb_max: GhcbVersion::MAX,
            inject: None,
        }
    }
}

/// A word of `sim.cfg` the simulator does not accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError<'a> {
    Unknown(&'a str),
    BadMemory(&'a str),
    BadGhcbVersion(&'a str),
    BadInject(&'a str),
}

impl fmt::Display for OptionError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(w) => write!(
                f,
                "unknown option `{w}` (known: mem=<MiB>, trace, ghcb_max=<1|2>, \
                 inject=<vector>@<exit>)"
            ),
            Self::BadMemory(w) => write!(
                f,
                "`{w}`: guest memory must be an even number of MiB from 16 to 4096"
            ),
            Self::BadGhcbVersion(w) => write!(
                f,
                "`{w}`: the GHCB protocol versions are {} and {}",
                GhcbVersion::MIN.number(),
                GhcbVersion::MAX.number()
            ),
            Self::BadInject(w) => write!(
                f,
                "`{w}`: inject=<vector>@<exit> takes a vector 0 ..= 255 and an exit from 1"
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
            } else if let Some(v) = word.strip_prefix("ghcb_max=") {
                o.ghcb_max = v
                    .parse()
                    .ok()
                    .and_then(GhcbVersion::from_number)
                    .ok_or(OptionError::BadGhcbVersion(word))?;
            } else if let Some(v) = word.strip_prefix("inject=") {
                o.inject = Some(
                    v.split_once('@')
                        .and_then(|(vector, exit)| Some((vector.parse().ok()?, exit.parse().ok()?)))
                        .filter(|&(_, exit)| exit >= 1)
                        .ok_or(OptionError::BadInject(word))?,
                );
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
                trace: true,
                ghcb_max: GhcbVersion::V2,
                inject: None,
            })
        );
        assert_eq!(
            Options::parse("inject=29@3").map(|o| o.inject),
            Ok(Some((29, 3)))
        );
        assert_eq!(
            Options::parse("inject=255@100000").map(|o| o.inject),
            Ok(Some((255, 100_000)))
        );
        assert_eq!(
            Options::parse("ghcb_max=1").map(|o| o.ghcb_max),
            Ok(GhcbVersion::V1)
        );
        assert_eq!(
            Options::parse("ghcb_max=2 mem=32").map(|o| (o.ghcb_max, o.mem_mib)),
            Ok((GhcbVersion::V2, 32))
        );
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for bad in [
            "inject=256@1",
            "inject=14@0",
            "inject=14",
            "inject=@3",
            "inject=x@y",
        ] {
            assert_eq!(Options::parse(bad), Err(OptionError::BadInject(bad)));
        }
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
        for bad in ["ghcb_max=0", "ghcb_max=3", "ghcb_max=", "ghcb_max=v1"] {
            assert_eq!(Options::parse(bad), Err(OptionError::BadGhcbVersion(bad)));
        }
    }
}
