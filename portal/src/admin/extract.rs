//! A JSON body extractor whose errors follow the admin API's error policy:
//! malformed JSON is a 400 `invalid_json`; well-formed JSON of the wrong shape is
//! a 422 naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest JSON body the admin API reads (OpenAPI documents can be large).
const MAX_BODY: usize = 8 << 20;

/// A JSON request body; an empty body is read as `{}`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the request body is larger than {} MiB", MAX_BODY >> 20),
                )
            })?;
        let _ = state;
        parse(&bytes, content_type.as_deref()).map(JsonBody)
    }
}

fn parse<T: DeserializeOwned>(bytes: &Bytes, content_type: Option<&str>) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else if let Some(ct) = content_type
        && !ct.starts_with("application/json")
        && !ct.contains("+json")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send JSON with Content-Type: application/json (got {ct})"),
        ));
    } else {
        bytes
    };
    // Syntax first, so a typo is a 400 and a wrong shape a 422.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.inner().to_string();
        let path = e.path().to_string();
        let field = if path == "." {
            // Missing and unknown fields are reported at the object level.
            inner
                .split('`')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_else(|| "body".to_owned())
        } else {
            path
        };
        ApiError::validation(field, inner)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        name: String,
        n: Option<u32>,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse::<T>(&Bytes::from_static(b"{\"n\": 1}"), None).unwrap_err();
        assert_eq!((e.status.as_u16(), e.field.as_deref()), (422, Some("name")));
        let e = parse::<T>(
            &Bytes::from_static(b"{\"name\": \"a\", \"n\": \"x\"}"),
            None,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("n"));
        let e =
            parse::<T>(&Bytes::from_static(b"{\"name\": \"a\", \"zzz\": 1}"), None).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("zzz"));
        let e = parse::<T>(&Bytes::from_static(b"{nope"), None).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "invalid_json"));
        let e = parse::<T>(
            &Bytes::from_static(b"name=a"),
            Some("application/x-www-form-urlencoded"),
        )
        .unwrap_err();
        assert_eq!(e.status.as_u16(), 415);
        assert!(
            parse::<T>(
                &Bytes::from_static(b"{\"name\":\"a\"}"),
                Some("application/json; charset=utf-8")
            )
            .is_ok()
        );
    }
}
