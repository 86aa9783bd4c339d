//! Field rules shared by every way an object enters the store.

use crate::error::ValidationError;

type Check = Result<(), ValidationError>;

/// A display name: 1 to 200 characters, not blank.
pub fn name(field: &str, value: &str) -> Check {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.chars().count() > 200 {
        return Err(ValidationError::new(
            field,
            "must be at most 200 characters",
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A URL-safe identifier: lowercase letters, digits and dashes, 1 to 63 characters,
/// starting with a letter or digit.
pub fn slug(field: &str, value: &str) -> Check {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!(
                "{value:?} is not a slug; use 1-63 lowercase letters, digits and dashes, e.g. \"weather-api\""
            ),
        ))
    }
}

/// A gateway path prefix: starts with `/`, no trailing slash, segments of
/// unreserved URL characters.
pub fn base_path(field: &str, value: &str) -> Check {
    let bad = || {
        ValidationError::new(
            field,
            format!(
                "{value:?} is not a base path; use a path such as \"/weather\" or \"/v1/weather\" (starts with /, no trailing /, letters, digits, -._~)"
            ),
        )
    };
    if !value.starts_with('/') || value.len() < 2 || value.len() > 200 || value.ends_with('/') {
        return Err(bad());
    }
    for segment in value[1..].split('/') {
        if segment.is_empty()
            || segment == "."
            || segment == ".."
            || !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        {
            return Err(bad());
        }
    }
    Ok(())
}

/// An upstream base URL: http or https with a host, no query or fragment.
pub fn upstream(field: &str, value: &str) -> Check {
    match url::Url::parse(value) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.query().is_none()
                && u.fragment().is_none()
                && u.username().is_empty() =>
        {
            Ok(())
        }
        _ => Err(ValidationError::new(
            field,
            format!(
                "{value:?} is not an upstream URL; expected http://host:port or https://host/path without query or credentials"
            ),
        )),
    }
}

/// An e-mail address, checked loosely: one `@`, something on both sides, a dot in the domain.
pub fn email(field: &str, value: &str) -> Check {
    let ok = value.len() <= 254
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && match value.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("{value:?} is not an e-mail address"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(slug("slug", "weather-api").is_ok());
        assert!(slug("slug", "v2").is_ok());
        for bad in ["", "Weather", "-a", "a-", "a b", "a/b", &"x".repeat(64)] {
            assert!(slug("slug", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base_paths() {
        assert!(base_path("base_path", "/weather").is_ok());
        assert!(base_path("base_path", "/v1/weather_api").is_ok());
        for bad in [
            "",
            "/",
            "weather",
            "/weather/",
            "/a//b",
            "/a/../b",
            "/a b",
            "/a?x",
        ] {
            assert!(base_path("base_path", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstreams() {
        assert!(upstream("u", "http://127.0.0.1:9000").is_ok());
        assert!(upstream("u", "https://api.example.com/v2").is_ok());
        for bad in [
            "",
            "ftp://x",
            "http://",
            "localhost:80",
            "http://a/?q=1",
            "http://u:p@h/",
        ] {
            assert!(upstream("u", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert!(email("email", "ada@example.com").is_ok());
        for bad in ["", "ada", "ada@", "@x.com", "a@b", "a b@c.d", "a@b@c.d"] {
            assert!(email("email", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert!(name("name", "Weather").is_ok());
        assert!(name("name", "  ").is_err());
        assert!(name("name", &"x".repeat(201)).is_err());
    }
}
