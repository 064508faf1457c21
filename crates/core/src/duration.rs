//! Durations written as strings: `"30s"`, `"5m"`, `"1h30m"`, `"2d"`.

use std::fmt;
use std::str::FromStr;

/// A non-negative duration in whole seconds, written as a sequence of `<number><unit>` with
/// units `s`, `m`, `h` and `d` (for example `"90s"`, `"1h30m"`). It serializes back in its
/// shortest form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationSpec {
    secs: u64,
}

/// Why a duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected e.g. \"30s\", \"5m\", \"1h30m\", \"2d\")")]
pub struct DurationParseError {
    input: String,
    reason: &'static str,
}

impl DurationSpec {
    pub const fn from_secs(secs: u64) -> Self {
        Self { secs }
    }

    pub const fn as_secs(self) -> u64 {
        self.secs
    }

    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.secs)
    }
}

impl FromStr for DurationSpec {
    type Err = DurationParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| DurationParseError {
            input: input.to_owned(),
            reason,
        };
        if input.is_empty() {
            return Err(err("empty"));
        }
        let mut secs: u64 = 0;
        let mut digits = String::new();
        for c in input.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            if digits.is_empty() {
                return Err(err("a unit must follow a number"));
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                _ => return Err(err("unknown unit")),
            };
            let n: u64 = digits.parse().map_err(|_| err("number too large"))?;
            secs = n
                .checked_mul(unit)
                .and_then(|part| secs.checked_add(part))
                .ok_or_else(|| err("too large"))?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(err("missing unit"));
        }
        Ok(Self { secs })
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secs == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.secs;
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

impl serde::Serialize for DurationSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DurationSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for DurationSpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^([0-9]+[smhd])+$"))
            .description(Some("A duration such as `30s`, `5m`, `1h30m` or `2d`."))
            .examples(["5m"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for DurationSpec {}

#[cfg(test)]
mod tests {
    use super::DurationSpec;

    #[test]
    fn parses_and_prints() {
        let d: DurationSpec = "1h30m".parse().unwrap_or(DurationSpec::from_secs(0));
        assert_eq!(d.as_secs(), 5_400);
        assert_eq!(d.to_string(), "1h30m");
        assert_eq!(
            "90s".parse::<DurationSpec>().map(|d| d.to_string()),
            Ok("1m30s".into())
        );
        assert_eq!(
            "2d".parse::<DurationSpec>().map(|d| d.as_secs()),
            Ok(172_800)
        );
        assert_eq!(DurationSpec::from_secs(0).to_string(), "0s");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "-5s",
            "5 s",
            "1.5h",
            "99999999999999999999s",
        ] {
            assert!(
                bad.parse::<DurationSpec>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
