//! Subscribing apps to plans from the portal, and the admin's decision on a
//! subscription that waits for approval.
//!
//! What a developer can do with a plan follows from the plan alone
//! ([`offer`]): a free plan subscribes at once, a free plan that needs
//! approval creates a pending subscription, and a paid plan cannot be
//! subscribed to until billing exists. Ownership is checked here, not in the
//! handlers: an app that is not the developer's is [`SubscribeError::NotFound`],
//! exactly like an app that does not exist.

use std::sync::Arc;

use askama::Template;
use tollgate_core::model::{NewSubscription, Plan, PlanStatus, Subscription, SubscriptionStatus};
use tollgate_core::{Store, StoreError};

use crate::accounts::Mailer;
use crate::accounts::mailer::Mail;

/// What the portal offers a developer for a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Free: subscribing makes an active subscription at once.
    Free,
    /// Free, but an admin approves each subscription (pending until then).
    NeedsApproval,
    /// Paid: shown with its price; no subscription until billing is configured.
    BillingNotConfigured,
}

/// What the portal offers for `plan`.
pub fn offer(plan: &Plan) -> Offer {
    if !plan.price.is_free() {
        Offer::BillingNotConfigured
    } else if plan.approval_required {
        Offer::NeedsApproval
    } else {
        Offer::Free
    }
}

/// Why a developer's subscription was not made.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The app or plan does not exist, is not theirs, is not offered, or does
    /// not cover the API.
    #[error("no such app or plan")]
    NotFound,
    /// The plan is paid and billing is not configured.
    #[error("billing is not configured")]
    BillingNotConfigured,
    /// The app already has a live subscription to the plan.
    #[error("already subscribed")]
    AlreadySubscribed,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

fn found<T>(r: Result<T, StoreError>) -> Result<T, SubscribeError> {
    match r {
        Ok(v) => Ok(v),
        Err(StoreError::NotFound { .. }) => Err(SubscribeError::NotFound),
        Err(e) => Err(SubscribeError::Store(e)),
    }
}

/// Subscribes `developer_id`'s app to a plan covering `api_slug`: active at
/// once for a free plan, pending for one that needs approval. The gateway
/// admits the app within a second of an active subscription.
pub async fn subscribe(
    store: &Store,
    developer_id: &str,
    app_id: &str,
    plan_id: &str,
    api_slug: &str,
) -> Result<Subscription, SubscribeError> {
    let app = found(store.get_app(app_id).await)?;
    if app.developer_id != developer_id {
        return Err(SubscribeError::NotFound);
    }
    let plan = found(store.get_plan(plan_id).await)?;
    if plan.status != PlanStatus::Active || !plan.apis.iter().any(|s| s == api_slug) {
        return Err(SubscribeError::NotFound);
    }
    let status = match offer(&plan) {
        Offer::Free => SubscriptionStatus::Active,
        Offer::NeedsApproval => SubscriptionStatus::Pending,
        Offer::BillingNotConfigured => return Err(SubscribeError::BillingNotConfigured),
    };
    store
        .create_subscription(NewSubscription {
            app_id: app.id,
            plan_id: plan.id,
            status: Some(status),
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => SubscribeError::AlreadySubscribed,
            e => SubscribeError::Store(e),
        })
}

/// An admin's answer to a pending subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The subscription becomes active.
    Approve,
    /// The subscription is cancelled.
    Reject,
}

/// Mails developers the admin's decisions, with a link to the portal.
#[derive(Debug, Clone)]
pub struct DecisionMail {
    mailer: Arc<Mailer>,
    portal_url: String,
    brand: String,
}

impl DecisionMail {
    /// Decision mail through `mailer`, linking to `portal_url`.
    pub fn new(mailer: Mailer, portal_url: &str, brand: &str) -> Self {
        Self {
            mailer: Arc::new(mailer),
            portal_url: portal_url.trim_end_matches('/').to_owned(),
            brand: brand.to_owned(),
        }
    }
}

#[derive(Template)]
#[template(path = "mail/subscription_approved.txt")]
struct Approved<'a> {
    brand: &'a str,
    app: &'a str,
    plan: &'a str,
    apis: &'a str,
    link: &'a str,
}

#[derive(Template)]
#[template(path = "mail/subscription_rejected.txt")]
struct Rejected<'a> {
    brand: &'a str,
    app: &'a str,
    plan: &'a str,
    apis: &'a str,
    link: &'a str,
}

/// The message telling a developer about `decision`.
pub fn decision_mail(
    brand: &str,
    portal_url: &str,
    decision: Decision,
    app: &str,
    plan: &Plan,
) -> Mail {
    let apis = plan.apis.join(", ");
    let link = match plan.apis.first() {
        Some(slug) => format!("{portal_url}/apis/{slug}"),
        None => format!("{portal_url}/apis"),
    };
    let (subject, body) = match decision {
        Decision::Approve => (
            format!("Your subscription to {} is approved", plan.name),
            Approved {
                brand,
                app,
                plan: &plan.name,
                apis: &apis,
                link: &link,
            }
            .render(),
        ),
        Decision::Reject => (
            format!("Your subscription to {} was not approved", plan.name),
            Rejected {
                brand,
                app,
                plan: &plan.name,
                apis: &apis,
                link: &link,
            }
            .render(),
        ),
    };
    Mail {
        subject,
        // The templates have no fallible parts; show an error rather than lose the mail.
        body: body.unwrap_or_else(|e| format!("(message could not be rendered: {e})")),
    }
}

/// Approves (active) or rejects (cancelled) a pending subscription and mails
/// the app's developer. Only pending subscriptions can be decided; the
/// gateway applies the new status within a second.
pub async fn decide(
    store: &Store,
    mail: &DecisionMail,
    id: &str,
    decision: Decision,
) -> Result<Subscription, StoreError> {
    let current = store.get_subscription(id).await?;
    if current.status != SubscriptionStatus::Pending {
        return Err(StoreError::Conflict(format!(
            "subscription {id} is {}; only pending subscriptions can be approved or rejected",
            current.status
        )));
    }
    let status = match decision {
        Decision::Approve => SubscriptionStatus::Active,
        Decision::Reject => SubscriptionStatus::Cancelled,
    };
    let decided = store.set_subscription_status(id, status).await?;
    let app = store.get_app(&decided.app_id).await?;
    let plan = store.get_plan(&decided.plan_id).await?;
    let developer = store.get_user(&app.developer_id).await?;
    mail.mailer.dispatch(
        &developer.email,
        decision_mail(&mail.brand, &mail.portal_url, decision, &app.name, &plan),
    );
    Ok(decided)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_mails_name_app_plan_and_link() {
        let plan: Plan = Plan {
            id: "plan_1".into(),
            name: "Gold & Co".into(),
            apis: vec!["weather".into()],
            price: tollgate_billing::Money {
                amount_minor: 0,
                currency: tollgate_billing::Currency::usd(),
            },
            billing_interval: tollgate_billing::BillingInterval::Month,
            included_calls: None,
            rate_limits: vec![],
            overage: false,
            quota_anchor: tollgate_core::model::QuotaAnchor::Calendar,
            approval_required: true,
            status: PlanStatus::Active,
            created_at: tollgate_core::time::Timestamp(0),
            updated_at: tollgate_core::time::Timestamp(0),
        };
        let m = decision_mail(
            "Acme",
            "http://p.test",
            Decision::Approve,
            "<b>App</b>",
            &plan,
        );
        assert_eq!(m.subject, "Your subscription to Gold & Co is approved");
        assert!(
            m.body.contains("\"<b>App</b>\""),
            "plain text, not escaped: {}",
            m.body
        );
        assert!(m.body.contains("http://p.test/apis/weather"), "{}", m.body);
        let m = decision_mail("Acme", "http://p.test", Decision::Reject, "App", &plan);
        assert!(m.subject.contains("not approved"));
        assert!(m.body.contains("was not approved"), "{}", m.body);
    }
}
