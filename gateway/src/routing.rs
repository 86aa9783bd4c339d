//! Operation routing inside an API: the paths and methods of its OpenAPI
//! document, matched as templates (`/users/{id}`), the most specific first.
//!
//! An API without a document (or with no `paths`) passes every path and method
//! through. One with paths admits only the operations it documents: an unknown
//! path is a 404, a known path with another method a 405 with `Allow`.

use std::sync::Arc;

use http::Method;
use tollgate_core::model::{ApiPolicies, POLICY_EXTENSION};

/// One path segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

/// A documented path and the methods it takes.
#[derive(Debug, Clone)]
pub struct Operation {
    /// The template as written in the document, e.g. `/users/{id}`.
    pub template: String,
    segments: Vec<Segment>,
    methods: Vec<Method>,
    /// Policies overridden for this path (`x-tollgate-policies` on the path
    /// item), and per method (on the operation).
    path_policies: Option<Arc<ApiPolicies>>,
    method_policies: Vec<(Method, Arc<ApiPolicies>)>,
}

/// What routing says about a request inside an API.
#[derive(Debug, PartialEq, Eq)]
pub enum OperationMatch<'a> {
    /// The API documents no operations: anything goes.
    Unrestricted,
    /// This operation's template matched, with the method.
    Matched {
        /// The template that matched.
        template: &'a str,
        /// Policies overridden for this route, if any.
        policies: Option<&'a Arc<ApiPolicies>>,
    },
    /// A template matched but not the method.
    MethodNotAllowed {
        /// The template that matched.
        template: &'a str,
        /// The methods it takes.
        allowed: Vec<Method>,
    },
    /// No template matched.
    NotFound,
}

const METHODS: [(&str, Method); 8] = [
    ("get", Method::GET),
    ("put", Method::PUT),
    ("post", Method::POST),
    ("delete", Method::DELETE),
    ("options", Method::OPTIONS),
    ("head", Method::HEAD),
    ("patch", Method::PATCH),
    ("trace", Method::TRACE),
];

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

fn overridden(base: &ApiPolicies, place: &serde_json::Value) -> Option<Arc<ApiPolicies>> {
    let patch = place.get(POLICY_EXTENSION)?;
    match base.overlay(patch) {
        Ok(p) => Some(Arc::new(p)),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring an invalid x-tollgate-policies");
            None
        }
    }
}

impl Operation {
    fn parse(template: &str, item: &serde_json::Value, base: &ApiPolicies) -> Option<Self> {
        let segments = segments(template)
            .map(|s| {
                if s.starts_with('{') && s.ends_with('}') {
                    Segment::Param
                } else {
                    Segment::Literal(s.to_owned())
                }
            })
            .collect();
        let mut methods: Vec<Method> = METHODS
            .iter()
            .filter(|(name, _)| item.get(*name).is_some())
            .map(|(_, m)| m.clone())
            .collect();
        if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
            methods.push(Method::HEAD);
        }
        let path_policies = overridden(base, item);
        let path_base = path_policies.as_deref().unwrap_or(base);
        let method_policies = METHODS
            .iter()
            .filter_map(|(name, m)| {
                let op = item.get(*name)?;
                overridden(path_base, op).map(|p| (m.clone(), p))
            })
            .collect();
        (!methods.is_empty()).then(|| Self {
            template: template.to_owned(),
            segments,
            methods,
            path_policies,
            method_policies,
        })
    }

    /// Literal segments weigh more than parameters, position by position.
    fn specificity(&self) -> Vec<u8> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 2,
                Segment::Param => 1,
            })
            .collect()
    }

    fn matches(&self, path: &str) -> bool {
        let mut parts = segments(path);
        for seg in &self.segments {
            match (seg, parts.next()) {
                (Segment::Literal(l), Some(p)) if l == p => {}
                (Segment::Param, Some(_)) => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

/// The operations of one API, most specific first.
#[derive(Debug, Clone, Default)]
pub struct Operations {
    ops: Vec<Operation>,
}

impl Operations {
    /// Reads the `paths` of an OpenAPI document (none when absent), with route
    /// policy overrides laid over the API's `base` policies.
    pub fn from_openapi(doc: Option<&serde_json::Value>, base: &ApiPolicies) -> Self {
        let Some(paths) = doc.and_then(|d| d.get("paths")).and_then(|p| p.as_object()) else {
            return Self::default();
        };
        let mut ops: Vec<Operation> = paths
            .iter()
            .filter_map(|(t, item)| Operation::parse(t, item, base))
            .collect();
        ops.sort_by(|a, b| {
            b.specificity()
                .cmp(&a.specificity())
                .then_with(|| a.template.cmp(&b.template))
        });
        Self { ops }
    }

    /// Matches the path after the API's base path and the method.
    pub fn route(&self, path: &str, method: &Method) -> OperationMatch<'_> {
        if self.ops.is_empty() {
            return OperationMatch::Unrestricted;
        }
        let mut path_matched: Option<&Operation> = None;
        for op in self.ops.iter().filter(|op| op.matches(path)) {
            if op.methods.contains(method) {
                let by_method = op
                    .method_policies
                    .iter()
                    .find(|(m, _)| m == method)
                    .map(|(_, p)| p);
                // HEAD follows GET's overrides.
                let by_get = (*method == Method::HEAD)
                    .then(|| {
                        op.method_policies
                            .iter()
                            .find(|(m, _)| *m == Method::GET)
                            .map(|(_, p)| p)
                    })
                    .flatten();
                return OperationMatch::Matched {
                    template: &op.template,
                    policies: by_method.or(by_get).or(op.path_policies.as_ref()),
                };
            }
            path_matched.get_or_insert(op);
        }
        match path_matched {
            Some(op) => OperationMatch::MethodNotAllowed {
                template: &op.template,
                allowed: op.methods.clone(),
            },
            None => OperationMatch::NotFound,
        }
    }

    /// Every policy override of a route (path or operation level).
    pub fn overrides(&self) -> impl Iterator<Item = &ApiPolicies> {
        self.ops.iter().flat_map(|op| {
            op.path_policies
                .iter()
                .chain(op.method_policies.iter().map(|(_, p)| p))
                .map(|p| &**p)
        })
    }

    /// Number of documented operations (paths).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the API documents no paths.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops() -> Operations {
        Operations::from_openapi(
            Some(&serde_json::json!({
                "openapi": "3.0.3",
                "paths": {
                    "/users/{id}": {"get": {}, "delete": {}},
                    "/users/me": {"get": {}},
                    "/users": {"post": {}},
                    "/orgs/{org}/users/{id}": {"get": {}},
                    "/": {"get": {}}
                }
            })),
            &ApiPolicies::default(),
        )
    }

    #[test]
    fn the_most_specific_template_wins() {
        let o = ops();
        assert_eq!(
            o.route("/users/me", &Method::GET),
            OperationMatch::Matched {
                template: "/users/me",
                policies: None
            }
        );
        assert_eq!(
            o.route("/users/42", &Method::GET),
            OperationMatch::Matched {
                template: "/users/{id}",
                policies: None
            }
        );
        assert_eq!(
            o.route("/users/42/", &Method::DELETE),
            OperationMatch::Matched {
                template: "/users/{id}",
                policies: None
            }
        );
        assert_eq!(
            o.route("/orgs/a/users/b", &Method::GET),
            OperationMatch::Matched {
                template: "/orgs/{org}/users/{id}",
                policies: None
            }
        );
        assert_eq!(
            o.route("", &Method::GET),
            OperationMatch::Matched {
                template: "/",
                policies: None
            }
        );
        assert_eq!(
            o.route("/users/42", &Method::HEAD),
            OperationMatch::Matched {
                template: "/users/{id}",
                policies: None
            },
            "HEAD goes with GET"
        );
    }

    #[test]
    fn unknown_paths_and_methods_are_told_apart() {
        let o = ops();
        assert_eq!(o.route("/nope", &Method::GET), OperationMatch::NotFound);
        assert_eq!(
            o.route("/users/1/extra", &Method::GET),
            OperationMatch::NotFound
        );
        // /users/me documents only GET, but /users/{id} also matches and takes DELETE.
        assert_eq!(
            o.route("/users/me", &Method::DELETE),
            OperationMatch::Matched {
                template: "/users/{id}",
                policies: None
            }
        );
        assert_eq!(
            o.route("/users", &Method::GET),
            OperationMatch::MethodNotAllowed {
                template: "/users",
                allowed: vec![Method::POST]
            }
        );
    }

    #[test]
    fn no_document_means_no_restriction() {
        assert_eq!(
            Operations::from_openapi(None, &ApiPolicies::default()).route("/x", &Method::GET),
            OperationMatch::Unrestricted
        );
        let empty = Operations::from_openapi(
            Some(&serde_json::json!({"openapi": "3.0.0"})),
            &ApiPolicies::default(),
        );
        assert_eq!(
            empty.route("/x", &Method::PUT),
            OperationMatch::Unrestricted
        );
    }
}
