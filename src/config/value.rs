//! Text forms of setting values. Every source (env var, `PGBOUNCER_DATABASES`
//! option, YAML scalar) is reduced to text and parsed here, so one setting
//! accepts exactly the same spellings wherever it is written.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::modes::{AuthType, LogFormat, PoolMode, Scheduler, SslMode};

/// How masked secrets are shown.
pub const MASK: &str = "****";

/// A value that can be parsed from, and shown as, a PgBouncer-style setting string.
pub trait SettingValue: Sized {
    /// Parse the text form; the error is a short reason (the caller adds which setting).
    fn parse_setting(raw: &str) -> Result<Self, String>;
    /// Show the value in a form `parse_setting` accepts.
    fn render(&self) -> String;
}

macro_rules! integer_setting {
    ($($ty:ty),+) => {$(
        impl SettingValue for $ty {
            fn parse_setting(raw: &str) -> Result<Self, String> {
                raw.trim()
                    .parse()
                    .map_err(|_| format!("expected an integer from 0 to {}", <$ty>::MAX))
            }
            fn render(&self) -> String {
                self.to_string()
            }
        }
    )+};
}
integer_setting!(u16, u32, u64);

impl SettingValue for bool {
    /// PgBouncer takes 0/1; the usual words are accepted too.
    fn parse_setting(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "on" | "yes" => Ok(true),
            "0" | "false" | "off" | "no" => Ok(false),
            _ => Err("expected a boolean (0/1, true/false, on/off, yes/no)".to_string()),
        }
    }
    fn render(&self) -> String {
        if *self { "1" } else { "0" }.to_string()
    }
}

impl SettingValue for String {
    fn parse_setting(raw: &str) -> Result<Self, String> {
        Ok(raw.trim().to_string())
    }
    fn render(&self) -> String {
        self.clone()
    }
}

/// Comma-separated list; blanks around items and empty items are dropped.
impl SettingValue for Vec<String> {
    fn parse_setting(raw: &str) -> Result<Self, String> {
        Ok(split_list(raw).map(str::to_string).collect())
    }
    fn render(&self) -> String {
        self.join(",")
    }
}

/// Comma-separated list of paths.
impl SettingValue for Vec<PathBuf> {
    fn parse_setting(raw: &str) -> Result<Self, String> {
        Ok(split_list(raw).map(PathBuf::from).collect())
    }
    fn render(&self) -> String {
        let items: Vec<String> = self.iter().map(|p| p.display().to_string()).collect();
        items.join(",")
    }
}

/// Empty means "not set", as in PgBouncer.
impl SettingValue for Option<PathBuf> {
    fn parse_setting(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        Ok((!raw.is_empty()).then(|| PathBuf::from(raw)))
    }
    fn render(&self) -> String {
        self.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }
}

/// Empty or `off` disables (used by `metrics_addr`).
impl SettingValue for Option<SocketAddr> {
    fn parse_setting(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.is_empty() || raw.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        raw.parse()
            .map(Some)
            .map_err(|_| "expected ip:port (e.g. 0.0.0.0:9127), empty or off".to_string())
    }
    fn render(&self) -> String {
        self.map(|a| a.to_string())
            .unwrap_or_else(|| "off".to_string())
    }
}

/// Seconds as PgBouncer takes them (`5`, `0.5`), or with a unit: `50us`, `500ms`, `5s`, `2m`, `1h`.
impl SettingValue for Duration {
    fn parse_setting(raw: &str) -> Result<Self, String> {
        parse_duration(raw).ok_or_else(|| {
            "expected seconds (e.g. 5 or 0.5) or a duration like 500ms, 5s, 2m, 1h".to_string()
        })
    }
    fn render(&self) -> String {
        if self.subsec_nanos() == 0 {
            format!("{}s", self.as_secs())
        } else {
            format!("{}ms", self.as_secs_f64() * 1000.0)
        }
    }
}

/// `auto`, or a duration as above (`idle_poll_time`).
impl SettingValue for super::IdlePoll {
    fn parse_setting(raw: &str) -> Result<Self, String> {
        if raw.trim().eq_ignore_ascii_case("auto") {
            return Ok(super::IdlePoll::Auto);
        }
        parse_duration(raw)
            .map(super::IdlePoll::Fixed)
            .ok_or_else(|| "expected auto or a duration like 100us, 0.1ms, 0".to_string())
    }
    fn render(&self) -> String {
        match self {
            super::IdlePoll::Auto => "auto".to_string(),
            super::IdlePoll::Fixed(time) => time.render(),
        }
    }
}

fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    // Longest suffixes first so "ms" is not read as "m".
    let units: [(&str, f64); 6] = [
        ("ms", 0.001),
        ("us", 0.000_001),
        ("min", 60.0),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    let (number, scale) = units
        .iter()
        .find_map(|(suffix, scale)| raw.strip_suffix(suffix).map(|n| (n.trim_end(), *scale)))
        .unwrap_or((raw, 1.0));
    let value: f64 = number.parse().ok()?;
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(value * scale).ok()
}

macro_rules! mode_setting {
    ($($ty:ty),+) => {$(
        impl SettingValue for $ty {
            fn parse_setting(raw: &str) -> Result<Self, String> {
                raw.parse().map_err(|e: super::modes::InvalidMode| format!("expected one of {}", e.expected.trim_end()))
            }
            fn render(&self) -> String {
                self.as_str().to_string()
            }
        }
    )+};
}
mode_setting!(AuthType, PoolMode, SslMode, LogFormat, Scheduler);

fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A password: kept out of `Debug` output and shown masked everywhere pgrelay prints config.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Any scalar, so an all-digit YAML password need not be quoted.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarText {
            shape: Shape::Scalar,
            finish: |text| Ok(Secret(text)),
        })
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value, for the code that must send it to the server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({MASK})")
    }
}

/// Whether a setting or option name holds a secret whose value must never be echoed.
pub fn is_secret_name(name: &str) -> bool {
    name.to_ascii_lowercase().contains("password")
}

/// A YAML scalar (or list of scalars) parsed through [`SettingValue`], so YAML
/// accepts the same spellings as the environment.
#[derive(Debug)]
pub struct YamlSetting<T>(pub T);

impl<'de, T: SettingValue> Deserialize<'de> for YamlSetting<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarText {
            shape: Shape::ScalarOrList,
            finish: |text: String| {
                T::parse_setting(&text)
                    .map(YamlSetting)
                    .map_err(|reason| format!("invalid value {text:?}: {reason}"))
            },
        })
    }
}

/// For `#[serde(deserialize_with)]` on optional fields of typed YAML structs.
pub fn optional_setting<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: SettingValue,
{
    YamlSetting::<T>::deserialize(d).map(|v| Some(v.0))
}

/// For `#[serde(deserialize_with)]` on required fields of typed YAML structs.
pub fn setting<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: SettingValue,
{
    YamlSetting::<T>::deserialize(d).map(|v| v.0)
}

/// What a YAML value may be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Scalar,
    /// A scalar, or a list of scalars joined with commas.
    ScalarOrList,
}

/// Turns a YAML value into text and hands it to `finish` *inside* the visitor:
/// serde_yaml_ng then tags an error with the value's own line and column.
struct ScalarText<F> {
    shape: Shape,
    finish: F,
}

impl<F> ScalarText<F> {
    fn done<V, E: de::Error>(self, text: String) -> Result<V, E>
    where
        F: FnOnce(String) -> Result<V, String>,
    {
        (self.finish)(text).map_err(E::custom)
    }
}

impl<'de, V, F: FnOnce(String) -> Result<V, String>> Visitor<'de> for ScalarText<F> {
    type Value = V;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shape {
            Shape::Scalar => f.write_str("a string, number or boolean"),
            Shape::ScalarOrList => f.write_str("a string, number, boolean or list of those"),
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<V, E> {
        self.done(v.to_string())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<V, E> {
        self.done(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<V, E> {
        self.done(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<V, E> {
        self.done(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V, E> {
        self.done(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<V, E> {
        self.done(v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<V, E> {
        self.done(String::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<V, E> {
        self.done(String::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<V, A::Error> {
        if self.shape == Shape::Scalar {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<ListItem>()? {
            items.push(item.0);
        }
        self.done(items.join(","))
    }
}

/// One list element: a scalar without commas (they would split it later).
struct ListItem(String);

impl<'de> Deserialize<'de> for ListItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarText {
            shape: Shape::Scalar,
            finish: |text: String| {
                if text.contains(',') {
                    Err("list items must not contain commas".to_string())
                } else {
                    Ok(ListItem(text))
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn durations_accept_seconds_and_units() {
        let cases = [
            ("5", secs(5.0)),
            ("0", Duration::ZERO),
            ("0.5", secs(0.5)),
            (" 120 ", secs(120.0)),
            ("500ms", Duration::from_millis(500)),
            ("5s", secs(5.0)),
            ("2m", secs(120.0)),
            ("2 min", secs(120.0)),
            ("1h", secs(3600.0)),
            ("1.5s", Duration::from_millis(1500)),
        ];
        for (raw, want) in cases {
            assert_eq!(Duration::parse_setting(raw), Ok(want), "{raw}");
        }
    }

    #[test]
    fn durations_reject_garbage_and_negatives() {
        for raw in ["", "abc", "-1", "5x", "ms", "NaN", "inf"] {
            assert!(Duration::parse_setting(raw).is_err(), "{raw} accepted");
        }
    }

    #[test]
    fn durations_render_in_a_reparseable_form() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(30),
            Duration::from_millis(500),
        ] {
            assert_eq!(Duration::parse_setting(&d.render()), Ok(d));
        }
        assert_eq!(Duration::from_millis(500).render(), "500ms");
        assert_eq!(Duration::from_secs(15).render(), "15s");
    }

    #[test]
    fn booleans_accept_pgbouncer_and_word_forms() {
        for raw in ["1", "true", "ON", "yes"] {
            assert_eq!(bool::parse_setting(raw), Ok(true), "{raw}");
        }
        for raw in ["0", "false", "off", "No"] {
            assert_eq!(bool::parse_setting(raw), Ok(false), "{raw}");
        }
        assert!(bool::parse_setting("2").is_err());
    }

    #[test]
    fn lists_split_on_commas_and_drop_blanks() {
        assert_eq!(
            Vec::<String>::parse_setting(" a, b ,,c ").unwrap(),
            vec!["a", "b", "c"]
        );
        assert!(Vec::<String>::parse_setting("").unwrap().is_empty());
    }

    #[test]
    fn metrics_addr_can_be_disabled() {
        assert_eq!(Option::<SocketAddr>::parse_setting("off"), Ok(None));
        assert_eq!(Option::<SocketAddr>::parse_setting(""), Ok(None));
        assert_eq!(
            Option::<SocketAddr>::parse_setting("127.0.0.1:9127"),
            Ok(Some("127.0.0.1:9127".parse().unwrap()))
        );
        assert!(Option::<SocketAddr>::parse_setting("localhost").is_err());
    }

    #[test]
    fn secret_debug_is_masked() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn yaml_scalars_and_lists_go_through_the_same_parser() {
        let d: YamlSetting<Duration> = serde_yaml_ng::from_str("1.5").unwrap();
        assert_eq!(d.0, Duration::from_millis(1500));
        let d: YamlSetting<Duration> = serde_yaml_ng::from_str("\"2m\"").unwrap();
        assert_eq!(d.0, secs(120.0));
        let l: YamlSetting<Vec<String>> = serde_yaml_ng::from_str("[a, b]").unwrap();
        assert_eq!(l.0, vec!["a", "b"]);
        let b: YamlSetting<bool> = serde_yaml_ng::from_str("true").unwrap();
        assert!(b.0);
        let nested = serde_yaml_ng::from_str::<YamlSetting<Vec<String>>>("[a, [b]]");
        assert!(nested.is_err());
        let err = serde_yaml_ng::from_str::<YamlSetting<u32>>("lots").unwrap_err();
        assert!(
            err.to_string().contains("integer from 0 to 4294967295"),
            "{err}"
        );
    }
}
