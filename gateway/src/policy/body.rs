//! JSON body mapping: fields removed, renamed and added by dotted paths
//! (`user.email`), on request bodies on the way up and response bodies on the
//! way back.
//!
//! Only bodies whose `Content-Type` is JSON (`application/json`,
//! `application/*+json`) are read; others pass untouched and unread. A mapped
//! body is read whole, up to a cap (the API's `max_body_bytes`, else
//! [`DEFAULT_MAPPED_BODY_BYTES`]), and the gateway fails closed past it: a field
//! the API removes must never slip through because a body was large.
//! Requests over the cap get 413 `body_too_large`, responses 502
//! `response_transform_failed`. Compressed bodies are refused the same way;
//! the gateway asks the upstream for identity encoding when it maps responses.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full, Limited};
use serde_json::{Map, Value};
use tollgate_core::model::{BodyOps, DEFAULT_MAPPED_BODY_BYTES};

use crate::error::GatewayError;
use crate::metering::{BodyLimitExceeded, CountingBody};
use crate::proxy::ProxiedBody;
use crate::proxy::RequestBody;

/// True when the `Content-Type` is JSON: `application/json` or a
/// `+json` structured syntax such as `application/problem+json`.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media = ct.split(';').next().unwrap_or("").trim();
    let Some((kind, sub)) = media.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// True when the body carries a content coding other than identity.
fn is_encoded(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// The cap on bodies read whole for mapping.
pub fn cap(max_body_bytes: Option<u64>) -> u64 {
    max_body_bytes.unwrap_or(DEFAULT_MAPPED_BODY_BYTES)
}

/// Applies `ops` to a JSON document: removals, then renames, then additions.
/// Paths name fields of nested objects; a document (or a step on a path) that
/// is not an object is left as it is, so the mapping never destroys data it
/// cannot address.
pub fn apply(doc: &mut Value, ops: &BodyOps) {
    for path in &ops.remove {
        take(doc, path);
    }
    for (from, to) in &ops.rename {
        if let Some(v) = take(doc, from)
            && let Err(v) = put(doc, to, v)
        {
            // The new place cannot hold it: keep the field where it was.
            let _ = put(doc, from, v);
        }
    }
    for (path, value) in &ops.add {
        let _ = put(doc, path, value.clone());
    }
}

/// Removes and returns the field at `path`.
fn take(doc: &mut Value, path: &str) -> Option<Value> {
    let (parents, last) = match path.rsplit_once('.') {
        Some((parents, last)) => (Some(parents), last),
        None => (None, path),
    };
    let mut at = doc;
    if let Some(parents) = parents {
        for name in parents.split('.') {
            at = at.as_object_mut()?.get_mut(name)?;
        }
    }
    at.as_object_mut()?.remove(last)
}

/// Sets the field at `path`, creating missing objects on the way. Gives the
/// value back when a step on the path is not an object.
fn put(doc: &mut Value, path: &str, value: Value) -> Result<(), Value> {
    let (parents, last) = match path.rsplit_once('.') {
        Some((parents, last)) => (Some(parents), last),
        None => (None, path),
    };
    let mut at = doc;
    if let Some(parents) = parents {
        for name in parents.split('.') {
            let Some(obj) = at.as_object_mut() else {
                return Err(value);
            };
            at = obj.entry(name).or_insert_with(|| Value::Object(Map::new()));
        }
    }
    match at.as_object_mut() {
        Some(obj) => {
            obj.insert(last.to_owned(), value);
            Ok(())
        }
        None => Err(value),
    }
}

/// Maps a JSON document held in `raw`; `None` when `raw` is not JSON.
fn map_bytes(raw: &[u8], ops: &BodyOps) -> Option<Bytes> {
    let mut doc: Value = serde_json::from_slice(raw).ok()?;
    apply(&mut doc, ops);
    serde_json::to_vec(&doc).ok().map(Bytes::from)
}

/// Sets `Content-Length` to the mapped body's length.
fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

/// Reads a JSON request body whole and maps it. The client's bytes are
/// counted into `bytes_in` as they arrive (metering counts what the client
/// sent, not what the upstream gets). Fixes `Content-Length`.
pub async fn map_request<B>(
    headers: &mut HeaderMap,
    body: B,
    ops: &BodyOps,
    bytes_in: Arc<AtomicU64>,
    max_body_bytes: Option<u64>,
) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if is_encoded(headers) {
        return Err(GatewayError::InvalidBody {
            reason: "a compressed body cannot be transformed; send it uncompressed".into(),
        });
    }
    let max = cap(max_body_bytes);
    let raw = match CountingBody::new(body, bytes_in, Some(max)).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<BodyLimitExceeded>() => {
            return Err(GatewayError::BodyTooLarge { max });
        }
        Err(e) => {
            tracing::debug!(error = %e, "request body failed");
            return Err(GatewayError::InvalidBody {
                reason: "the request body could not be read".into(),
            });
        }
    };
    let mapped = if raw.is_empty() {
        raw
    } else {
        map_bytes(&raw, ops).ok_or_else(|| GatewayError::InvalidBody {
            reason: "the body is not valid JSON, as its Content-Type says".into(),
        })?
    };
    set_length(headers, mapped.len());
    Ok(mapped)
}

/// Reads a JSON response body whole (within `timeout`) and maps it; fixes
/// `Content-Length`. Fails closed: a body over the cap, compressed or not
/// JSON is a 502, never passed on unmapped.
pub async fn map_response<B>(
    headers: &mut HeaderMap,
    body: B,
    ops: &BodyOps,
    max_body_bytes: Option<u64>,
    timeout: Duration,
) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let failed = |reason: String| GatewayError::ResponseTransformFailed { reason };
    if is_encoded(headers) {
        return Err(failed("the upstream sent a compressed body".into()));
    }
    let max = cap(max_body_bytes);
    let read = Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX)).collect();
    let raw = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(failed(format!(
                "the upstream's body is larger than {max} bytes"
            )));
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "upstream body failed");
            return Err(GatewayError::UpstreamUnreachable);
        }
        Err(_) => return Err(GatewayError::UpstreamTimeout),
    };
    let mapped = if raw.is_empty() {
        raw
    } else {
        map_bytes(&raw, ops)
            .ok_or_else(|| failed("the upstream's body is not valid JSON".into()))?
    };
    set_length(headers, mapped.len());
    Ok(mapped)
}

/// The transform phase's part for request bodies: a JSON body the API maps
/// is read and mapped (counted into `bytes_in` as it arrives); any other body
/// is streamed untouched. Returns the body to send and whether it is already
/// counted.
pub async fn request_phase(
    headers: &mut HeaderMap,
    body: RequestBody,
    ops: Option<&BodyOps>,
    bytes_in: &Arc<AtomicU64>,
    max_body_bytes: Option<u64>,
) -> Result<(RequestBody, bool), GatewayError> {
    match ops {
        Some(ops) if is_json(headers) => {
            // Boxed so calls that map nothing carry no buffering state in their future.
            let mapped = Box::pin(map_request(
                headers,
                body,
                ops,
                bytes_in.clone(),
                max_body_bytes,
            ))
            .await?;
            Ok((Either::Right(Full::new(mapped)), true))
        }
        _ => Ok((body, false)),
    }
}

/// The transform phase's part for response bodies: a JSON answer with a body
/// is read and mapped. A `HEAD` answer loses its `Content-Length`, which
/// would describe the unmapped body.
pub async fn response_phase(
    mut response: Response<ProxiedBody>,
    method: &Method,
    ops: &BodyOps,
    max_body_bytes: Option<u64>,
    timeout: Duration,
) -> Result<Response<ProxiedBody>, GatewayError> {
    // The headers are read and edited in the map (the proxy phase merged
    // the lines already for a route with transforms).
    crate::headers::merge_raw_headers(&mut response);
    let status = response.status();
    if !is_json(response.headers())
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    if *method == Method::HEAD {
        parts.headers.remove(header::CONTENT_LENGTH);
        return Ok(Response::from_parts(parts, body));
    }
    let mapped = Box::pin(map_response(
        &mut parts.headers,
        body,
        ops,
        max_body_bytes,
        timeout,
    ))
    .await?;
    Ok(Response::from_parts(parts, ProxiedBody::whole(mapped)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops(v: Value) -> BodyOps {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn fields_are_removed_renamed_and_added_by_dotted_paths() {
        let mut doc = json!({
            "id": 7,
            "user": {"email": "a@example.com", "password": "x", "name": "Ann"},
            "debug": true
        });
        apply(
            &mut doc,
            &ops(json!({
                "remove": ["debug", "user.password", "missing.field"],
                "rename": {"user.email": "contact.email", "id": "user_id"},
                "add": {"meta.version": 2, "user.tags": ["a"], "source": "gw"}
            })),
        );
        assert_eq!(
            doc,
            json!({
                "user_id": 7,
                "user": {"name": "Ann", "tags": ["a"]},
                "contact": {"email": "a@example.com"},
                "meta": {"version": 2},
                "source": "gw"
            })
        );
    }

    #[test]
    fn paths_through_non_objects_change_nothing() {
        let mut doc = json!({"list": [1, 2], "n": 1});
        let before = doc.clone();
        apply(
            &mut doc,
            &ops(json!({"remove": ["list.0", "n.x"], "add": {"n.x": 1, "list.y": 2}})),
        );
        assert_eq!(doc, before);

        // A rename whose target cannot hold the value keeps it in place.
        apply(&mut doc, &ops(json!({"rename": {"list": "n.list"}})));
        assert_eq!(doc, before);

        // Documents that are not objects pass as they are.
        let mut arr = json!([{"a": 1}]);
        apply(&mut arr, &ops(json!({"remove": ["a"], "add": {"b": 1}})));
        assert_eq!(arr, json!([{"a": 1}]));
    }

    #[test]
    fn add_replaces_and_rename_overwrites() {
        let mut doc = json!({"a": {"b": 1}, "c": 2});
        apply(
            &mut doc,
            &ops(json!({"rename": {"c": "a.b"}, "add": {"a": {"x": null}}})),
        );
        assert_eq!(doc, json!({"a": {"x": null}}));
    }

    #[test]
    fn json_content_types_are_recognized() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for (ct, json) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/problem+json", true),
            ("application/vnd.api+JSON", true),
            ("text/json", false),
            ("application/jsonp", false),
            ("application/x-www-form-urlencoded", false),
            ("+json", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_json(&h), json, "{ct}");
        }
    }

    #[tokio::test]
    async fn request_bodies_are_mapped_counted_and_capped() {
        let o = ops(json!({"remove": ["secret"]}));
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("27"));
        let counted = Arc::new(AtomicU64::new(0));
        let raw = r#"{"secret": 1, "keep": true}"#;
        let body = http_body_util::Full::new(Bytes::from(raw));
        let mapped = map_request(&mut h, body, &o, counted.clone(), None)
            .await
            .unwrap();
        assert_eq!(&mapped[..], br#"{"keep":true}"#);
        assert_eq!(h[header::CONTENT_LENGTH], "13");
        assert_eq!(
            counted.load(std::sync::atomic::Ordering::Relaxed),
            raw.len() as u64
        );

        let big = http_body_util::Full::new(Bytes::from(vec![b' '; 101]));
        let e = map_request(&mut h, big, &o, counted.clone(), Some(100))
            .await
            .unwrap_err();
        assert_eq!(e, GatewayError::BodyTooLarge { max: 100 });

        let bad = http_body_util::Full::new(Bytes::from_static(b"{nope"));
        let e = map_request(&mut h, bad, &o, counted, None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_body");
    }

    #[tokio::test]
    async fn response_bodies_fail_closed() {
        let o = ops(json!({"remove": ["secret"]}));
        let mut h = HeaderMap::new();
        let body = http_body_util::Full::new(Bytes::from_static(br#"{"secret":1}"#));
        let mapped = map_response(&mut h, body, &o, None, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(&mapped[..], b"{}");
        assert_eq!(h[header::CONTENT_LENGTH], "2");

        let big = http_body_util::Full::new(Bytes::from(vec![b' '; 11]));
        let e = map_response(&mut h, big, &o, Some(10), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "response_transform_failed");

        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let gz = http_body_util::Full::new(Bytes::from_static(b"\x1f\x8b"));
        let e = map_response(&mut h, gz, &o, None, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "response_transform_failed");
    }
}
