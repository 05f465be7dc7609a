//! Durations on the command line (`12h`, `30m`, `45s`, `1500ms`, `2d`), shared
//! by `hangar serve` and the client commands.

use std::time::Duration;

/// Parses a duration like `12h`, `30m`, `45s`, `1500ms`, `2d` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 12h, 30m, 45s)"))?;
    let scale = match unit {
        "" | "s" => 1,
        "ms" => return Ok(Duration::from_millis(n)),
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "'{text}': unknown unit '{unit}' (use ms, s, m, h or d)"
            ))
        }
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("'{text}' is too long a duration"))
}

/// Parses a duration and checks it lies in `min..=max`, so a flag can neither
/// be zero where zero makes no sense nor overflow a deadline.
pub fn parse_bounded(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let value = parse_duration(text)?;
    if value < min || value > max {
        return Err(format!(
            "'{}' is out of range: use {} to {}",
            text.trim(),
            human(min),
            human(max)
        ));
    }
    Ok(value)
}

/// The shortest exact spelling of `d` in the units [`parse_duration`] reads.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(43_200));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("300000000000000d").is_err(), "overflow");
    }

    #[test]
    fn bounds_are_checked_and_named() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(365 * 86_400));
        assert!(parse_bounded("0", min, max)
            .unwrap_err()
            .contains("1s to 365d"));
        assert!(parse_bounded("366d", min, max).is_err());
        assert_eq!(parse_bounded("1s", min, max).unwrap(), min);
    }
}
