//! Object ids: a short type prefix and a UUID v7, e.g. `api_0192f0c4…`.
//!
//! The prefix tells support staff what an id refers to at a glance; v7 ids sort
//! by creation time, which keeps B-tree inserts local.

/// Kinds of objects and their id prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A person: developer, admin or analyst.
    User,
    /// A published API.
    Api,
    /// A plan.
    Plan,
    /// A developer's application.
    App,
    /// An API key.
    Key,
    /// A subscription of an app to a plan.
    Subscription,
}

impl IdKind {
    /// The prefix of ids of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::User => "usr",
            Self::Api => "api",
            Self::Plan => "plan",
            Self::App => "app",
            Self::Key => "key",
            Self::Subscription => "sub",
        }
    }
}

/// A new id of the given kind.
pub fn new_id(kind: IdKind) -> String {
    format!("{}_{}", kind.prefix(), uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_kind_and_are_unique() {
        let a = new_id(IdKind::Api);
        let b = new_id(IdKind::Api);
        assert!(a.starts_with("api_"));
        assert_eq!(a.len(), 4 + 32);
        assert_ne!(a, b);
    }
}
