//! The transform phase: header, query and path changes an API asks for.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue};
use tollgate_core::model::{HeaderOps, PathRewrite, QueryOps};

/// Applies header changes: remove, then rename, then set.
pub fn apply_headers(headers: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        headers.remove(name.as_str());
    }
    for (from, to) in &ops.rename {
        let values: Vec<HeaderValue> = headers.get_all(from.as_str()).iter().cloned().collect();
        if values.is_empty() {
            continue;
        }
        headers.remove(from.as_str());
        if let Ok(to) = HeaderName::from_bytes(to.as_bytes()) {
            for v in values {
                headers.append(to.clone(), v);
            }
        }
    }
    for (name, value) in &ops.add {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
}

/// The query string after removing and setting parameters; `None` when empty.
pub fn rewrite_query(query: Option<&str>, ops: &QueryOps) -> Option<String> {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if ops.remove.iter().any(|r| *r == k) || ops.add.contains_key(k.as_ref()) {
            continue;
        }
        out.append_pair(&k, &v);
        any = true;
    }
    for (k, v) in &ops.add {
        out.append_pair(k, v);
        any = true;
    }
    any.then(|| out.finish())
}

/// The path after the base path, rewritten.
pub fn rewrite_path<'a>(rest: &'a str, rewrite: &PathRewrite) -> Cow<'a, str> {
    let mut path: Cow<'a, str> = Cow::Borrowed(rest);
    if let Some(prefix) = &rewrite.strip_prefix
        && let Some(stripped) = rest.strip_prefix(prefix.as_str())
        && (stripped.is_empty() || stripped.starts_with('/'))
    {
        path = Cow::Borrowed(stripped);
    }
    if let Some(prefix) = &rewrite.add_prefix {
        path = Cow::Owned(format!("{prefix}{path}"));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_removed_renamed_and_set() {
        let mut h = HeaderMap::new();
        h.insert("x-old", HeaderValue::from_static("1"));
        h.insert("x-secret", HeaderValue::from_static("s"));
        h.insert("x-keep", HeaderValue::from_static("k"));
        let ops: HeaderOps = serde_json::from_value(serde_json::json!({
            "remove": ["x-secret"], "rename": {"x-old": "x-new"}, "add": {"x-keep": "replaced", "x-added": "a"}
        }))
        .unwrap();
        apply_headers(&mut h, &ops);
        assert!(!h.contains_key("x-secret") && !h.contains_key("x-old"));
        assert_eq!(h["x-new"], "1");
        assert_eq!(h["x-keep"], "replaced");
        assert_eq!(h["x-added"], "a");
    }

    #[test]
    fn query_parameters_are_removed_and_set() {
        let ops: QueryOps = serde_json::from_value(
            serde_json::json!({"remove": ["debug"], "add": {"version": "2", "a b": "c&d"}}),
        )
        .unwrap();
        assert_eq!(
            rewrite_query(Some("x=1&debug=true&version=1"), &ops).as_deref(),
            Some("x=1&a+b=c%26d&version=2")
        );
        let only_remove: QueryOps =
            serde_json::from_value(serde_json::json!({"remove": ["x"]})).unwrap();
        assert_eq!(rewrite_query(Some("x=1"), &only_remove), None);
    }

    #[test]
    fn paths_are_rewritten_on_segment_boundaries() {
        let r = PathRewrite {
            strip_prefix: Some("/v1".into()),
            add_prefix: Some("/api".into()),
        };
        assert_eq!(rewrite_path("/v1/users", &r), "/api/users");
        assert_eq!(rewrite_path("/v1", &r), "/api");
        assert_eq!(rewrite_path("/v10/users", &r), "/api/v10/users");
        assert_eq!(rewrite_path("/users", &PathRewrite::default()), "/users");
    }
}
