use std::time::Duration;

use tollgate_core::key::KeyHash;
use tollgate_core::model::*;
use tollgate_core::time::Timestamp;
use tollgate_core::{Store, StoreError};

use crate::on_both;

fn new_api(slug: &str) -> NewApi {
    NewApi {
        name: format!("API {slug}"),
        slug: slug.to_owned(),
        base_path: format!("/{slug}"),
        hosts: vec![],
        upstreams: vec!["http://127.0.0.1:9000".to_owned()],
        visibility: None,
        openapi: None,
        policies: None,
    }
}

fn new_plan(name: &str, apis: &[&str]) -> NewPlan {
    NewPlan {
        name: name.to_owned(),
        apis: apis.iter().map(|s| (*s).to_owned()).collect(),
        price_minor: None,
        currency: None,
        billing_interval: None,
        included_calls: None,
        rate_limits: None,
        overage: None,
        quota_anchor: None,
        approval_required: None,
        status: None,
    }
}

async fn developer(store: &Store, email: &str) -> User {
    store
        .create_user(NewUser {
            email: email.to_owned(),
            name: "Ada".to_owned(),
            role: None,
        })
        .await
        .unwrap()
}

async fn apis_crud(store: Store) {
    let mut input = new_api("weather");
    input.openapi = Some(serde_json::json!({"openapi": "3.0.3", "info": {"title": "W"}}));
    let api = store.create_api(input).await.unwrap();
    assert!(api.id.starts_with("api_"));
    assert_eq!(api.visibility, Visibility::Public);
    assert_eq!(store.get_api(&api.id).await.unwrap(), api);
    assert_eq!(store.get_api_by_slug("weather").await.unwrap().id, api.id);

    let mut same_slug = new_api("weather");
    same_slug.base_path = "/weather2".into();
    let dup = store.create_api(same_slug).await.unwrap_err();
    assert!(
        matches!(&dup, StoreError::Conflict(m) if m.contains("slug weather")),
        "{dup:?}"
    );
    let mut same_path = new_api("other");
    same_path.base_path = "/weather".into();
    let dup = store.create_api(same_path).await.unwrap_err();
    assert!(
        matches!(&dup, StoreError::Conflict(m) if m.contains("base_path /weather")),
        "{dup:?}"
    );

    let patched = store
        .update_api(
            &api.id,
            serde_json::from_value(serde_json::json!({
                "name": "Weather v2", "upstreams": ["http://a:1", "http://b:2"], "openapi": null
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(patched.name, "Weather v2");
    assert_eq!(patched.upstreams.len(), 2);
    assert_eq!(patched.openapi, None);
    assert_eq!(store.get_api(&api.id).await.unwrap(), patched);

    store.create_api(new_api("maps")).await.unwrap();
    let names: Vec<_> = store
        .list_apis()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.slug)
        .collect();
    assert_eq!(names, ["maps", "weather"]);

    store.delete_api(&api.id).await.unwrap();
    assert!(matches!(
        store.get_api(&api.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete_api(&api.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.update_api("api_missing", ApiPatch::default()).await,
        Err(StoreError::NotFound { .. })
    ));
}
on_both!(apis_crud_and_conflicts, super::apis_crud);

async fn plans_crud(store: Store) {
    store.create_api(new_api("weather")).await.unwrap();
    store.create_api(new_api("maps")).await.unwrap();
    let mut input = new_plan("Pro", &["weather", "maps"]);
    input.price_minor = Some(4900);
    input.currency = Some("eur".into());
    input.included_calls = Some(100_000);
    let plan = store.create_plan(input).await.unwrap();
    assert_eq!(plan.apis, ["maps", "weather"]);
    assert_eq!(plan.price.to_string(), "49.00 EUR");
    assert_eq!(plan.included_calls, Some(100_000));
    assert_eq!(plan.status, PlanStatus::Active);

    let err = store
        .create_plan(new_plan("Bad", &["nope"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(v) if v.field == "apis[0]"),
        "{err:?}"
    );

    let patched = store
        .update_plan(
            &plan.id,
            serde_json::from_value(serde_json::json!({"apis": ["maps"], "included_calls": null}))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(patched.apis, ["maps"]);
    assert_eq!(patched.included_calls, None);
    assert_eq!(patched.price.amount_minor, 4900);
    assert_eq!(store.list_plans().await.unwrap(), vec![patched.clone()]);

    // Deleting an API takes it out of the plan.
    let maps = store.get_api_by_slug("maps").await.unwrap();
    store.delete_api(&maps.id).await.unwrap();
    assert!(store.get_plan(&plan.id).await.unwrap().apis.is_empty());

    store.delete_plan(&plan.id).await.unwrap();
    assert!(matches!(
        store.get_plan(&plan.id).await,
        Err(StoreError::NotFound { .. })
    ));
}
on_both!(plans_crud_and_coverage, super::plans_crud);

async fn users_and_apps(store: Store) {
    let dev = developer(&store, "Ada@Example.com").await;
    assert_eq!(dev.email, "ada@example.com");
    assert_eq!(dev.role, Role::Developer);
    assert_eq!(store.get_user(&dev.id).await.unwrap(), dev);
    assert!(matches!(
        store.get_user("usr_nope").await,
        Err(StoreError::NotFound { .. })
    ));
    let err = store
        .create_user(NewUser {
            email: "ADA@example.com".into(),
            name: "x".into(),
            role: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)));
    store
        .create_user(NewUser {
            email: "boss@example.com".into(),
            name: "B".into(),
            role: Some(Role::Admin),
        })
        .await
        .unwrap();
    assert_eq!(
        store.list_users(Role::Developer).await.unwrap(),
        vec![dev.clone()]
    );
    assert_eq!(
        store
            .find_user_by_email("ADA@EXAMPLE.COM")
            .await
            .unwrap()
            .map(|u| u.id),
        Some(dev.id.clone())
    );

    let app = store
        .create_app(NewApp {
            developer_id: dev.id.clone(),
            name: "Mobile".into(),
        })
        .await
        .unwrap();
    assert_eq!(store.get_app(&app.id).await.unwrap(), app);
    assert_eq!(
        store.list_apps(Some(&dev.id)).await.unwrap(),
        vec![app.clone()]
    );
    assert!(store.list_apps(Some("usr_other")).await.unwrap().is_empty());
    let err = store
        .create_app(NewApp {
            developer_id: "usr_nope".into(),
            name: "X".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(&err, StoreError::Invalid(v) if v.field == "developer_id"));
}
on_both!(users_and_apps, super::users_and_apps);

async fn keys_lifecycle(store: Store) {
    let dev = developer(&store, "k@example.com").await;
    let app = store
        .create_app(NewApp {
            developer_id: dev.id.clone(),
            name: "A".into(),
        })
        .await
        .unwrap();
    let issued = store.issue_key(&app.id, None).await.unwrap();
    assert!(issued.secret.starts_with(&issued.record.prefix));
    let found = store
        .find_key_by_hash(KeyHash::of(&issued.secret))
        .await
        .unwrap();
    assert_eq!(found, Some(issued.record.clone()));
    assert_eq!(
        store
            .find_key_by_hash(KeyHash::of("tg_live_wrong"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.list_keys(&app.id).await.unwrap(),
        vec![issued.record.clone()]
    );

    let past = Timestamp(Timestamp::now().0 - 1000);
    assert!(matches!(
        store.issue_key(&app.id, Some(past)).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.issue_key("app_nope", None).await,
        Err(StoreError::NotFound { .. })
    ));

    let at = Timestamp::now();
    store
        .touch_keys(std::slice::from_ref(&issued.record.id), at)
        .await
        .unwrap();
    assert_eq!(
        store.get_key(&issued.record.id).await.unwrap().last_used_at,
        Some(at)
    );

    let before = store.config_version().await.unwrap();
    let revoked = store.revoke_key(&issued.record.id).await.unwrap();
    assert_eq!(revoked.status, KeyStatus::Revoked);
    assert!(revoked.revoked_at.is_some());
    assert_eq!(store.config_version().await.unwrap(), before + 1);
    // Revoking again is a no-op and bumps nothing.
    store.revoke_key(&issued.record.id).await.unwrap();
    assert_eq!(store.config_version().await.unwrap(), before + 1);
    assert!(store.load_gateway_config().await.unwrap().keys.is_empty());
}
on_both!(keys_lifecycle, super::keys_lifecycle);

async fn keys_rotate_with_an_overlap(store: Store) {
    let dev = developer(&store, "rot@example.com").await;
    let app = store
        .create_app(NewApp {
            developer_id: dev.id.clone(),
            name: "A".into(),
        })
        .await
        .unwrap();
    let old = store.issue_key(&app.id, None).await.unwrap().record;

    let v0 = store.config_version().await.unwrap();
    let before = Timestamp::now();
    let new = store.rotate_key(&old.id, 60_000).await.unwrap();
    let after = Timestamp::now();
    assert_ne!(new.record.id, old.id);
    assert_eq!(new.record.app_id, app.id);
    assert_eq!(new.record.expires_at, None);
    assert!(new.secret.starts_with(&new.record.prefix));
    let ends = store.get_key(&old.id).await.unwrap().expires_at.unwrap();
    assert!(ends.0 >= before.0 + 60_000 && ends.0 <= after.0 + 60_000);
    // One version for both changes, named in the change log.
    assert_eq!(store.config_version().await.unwrap(), v0 + 1);
    let set = store.changes_since(v0).await.unwrap().unwrap();
    assert!(set.apps.contains(&app.id));
    let slice = store.load_app_slice(&app.id).await.unwrap().unwrap();
    assert_eq!(slice.keys.len(), 2, "both keys work during the overlap");
    assert_eq!(
        slice
            .keys
            .iter()
            .find(|k| k.id == old.id)
            .unwrap()
            .expires_at,
        Some(ends)
    );

    // A second rotation never lengthens the old key's life.
    store.rotate_key(&old.id, 3_600_000).await.unwrap();
    assert_eq!(store.get_key(&old.id).await.unwrap().expires_at, Some(ends));

    // Zero ends it at once; then it cannot be rotated again.
    let third = store.rotate_key(&new.record.id, 0).await.unwrap();
    let ended = store
        .get_key(&new.record.id)
        .await
        .unwrap()
        .expires_at
        .unwrap();
    assert!(ended <= Timestamp::now());
    assert!(matches!(
        store.rotate_key(&new.record.id, 0).await,
        Err(StoreError::Conflict(_))
    ));
    store.revoke_key(&third.record.id).await.unwrap();
    assert!(matches!(
        store.rotate_key(&third.record.id, 1000).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.rotate_key(&old.id, -1).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.rotate_key("key_nope", 1000).await,
        Err(StoreError::NotFound { .. })
    ));
}
on_both!(
    keys_rotate_with_an_overlap,
    super::keys_rotate_with_an_overlap
);

async fn apps_rename_and_delete(store: Store) {
    store.create_api(new_api("weather")).await.unwrap();
    let plan = store
        .create_plan(new_plan("Free", &["weather"]))
        .await
        .unwrap();
    let dev = developer(&store, "del@example.com").await;
    let app = store
        .create_app(NewApp {
            developer_id: dev.id.clone(),
            name: "A".into(),
        })
        .await
        .unwrap();
    let key = store.issue_key(&app.id, None).await.unwrap().record;

    // Names are not served by the gateway: no version for a rename.
    let v0 = store.config_version().await.unwrap();
    let renamed = store.rename_app(&app.id, "  Mobile  ").await.unwrap();
    assert_eq!(renamed.name, "Mobile");
    assert!(renamed.updated_at >= app.updated_at);
    assert_eq!(store.config_version().await.unwrap(), v0);
    assert!(matches!(
        store.rename_app(&app.id, " ").await,
        Err(StoreError::Invalid(v)) if v.field == "name"
    ));
    assert!(matches!(
        store.rename_app("app_nope", "X").await,
        Err(StoreError::NotFound { .. })
    ));

    // A live subscription blocks deletion; a cancelled one does not.
    let sub = store
        .create_subscription(NewSubscription {
            app_id: app.id.clone(),
            plan_id: plan.id.clone(),
            status: None,
        })
        .await
        .unwrap();
    assert!(matches!(
        store.delete_app(&app.id).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store.get_app(&app.id).await.is_ok());
    store
        .set_subscription_status(&sub.id, SubscriptionStatus::Cancelled)
        .await
        .unwrap();
    let v1 = store.config_version().await.unwrap();
    store.delete_app(&app.id).await.unwrap();
    assert_eq!(store.config_version().await.unwrap(), v1 + 1);
    assert!(
        store
            .changes_since(v1)
            .await
            .unwrap()
            .unwrap()
            .apps
            .contains(&app.id)
    );
    assert!(matches!(
        store.get_app(&app.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.get_key(&key.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.load_app_slice(&app.id).await.unwrap().is_none());
    assert!(store.load_gateway_config().await.unwrap().keys.is_empty());
    assert!(matches!(
        store.delete_app(&app.id).await,
        Err(StoreError::NotFound { .. })
    ));
}
on_both!(apps_rename_and_delete, super::apps_rename_and_delete);

async fn subscriptions_lifecycle(store: Store) {
    let api = store.create_api(new_api("weather")).await.unwrap();
    let plan = store
        .create_plan(new_plan("Free", &["weather"]))
        .await
        .unwrap();
    let dev = developer(&store, "s@example.com").await;
    let app = store
        .create_app(NewApp {
            developer_id: dev.id.clone(),
            name: "A".into(),
        })
        .await
        .unwrap();
    let sub = store
        .create_subscription(NewSubscription {
            app_id: app.id.clone(),
            plan_id: plan.id.clone(),
            status: None,
        })
        .await
        .unwrap();
    assert_eq!(sub.status, SubscriptionStatus::Active);
    let dup = store
        .create_subscription(NewSubscription {
            app_id: app.id.clone(),
            plan_id: plan.id.clone(),
            status: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(dup, StoreError::Conflict(_)));
    let bad = store
        .create_subscription(NewSubscription {
            app_id: "app_x".into(),
            plan_id: plan.id.clone(),
            status: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(&bad, StoreError::Invalid(v) if v.field == "app_id"));

    let config = store.load_gateway_config().await.unwrap();
    assert_eq!(config.subscriptions.len(), 1);
    assert_eq!(config.subscriptions[0].api_ids, vec![api.id.clone()]);

    let suspended = store
        .set_subscription_status(&sub.id, SubscriptionStatus::Suspended)
        .await
        .unwrap();
    assert_eq!(suspended.status, SubscriptionStatus::Suspended);
    assert!(matches!(
        store.delete_plan(&plan.id).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .set_subscription_status(&sub.id, SubscriptionStatus::Cancelled)
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_subscription_status(&sub.id, SubscriptionStatus::Active)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(
        store
            .load_gateway_config()
            .await
            .unwrap()
            .subscriptions
            .is_empty()
    );
    assert_eq!(
        store.list_subscriptions(Some(&app.id)).await.unwrap().len(),
        1
    );
    assert_eq!(store.list_subscriptions(None).await.unwrap().len(), 1);
    assert_eq!(store.list_apps(None).await.unwrap(), vec![app.clone()]);

    store
        .update_plan(
            &plan.id,
            PlanPatch {
                status: Some(PlanStatus::Archived),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let refused = store
        .create_subscription(NewSubscription {
            app_id: app.id.clone(),
            plan_id: plan.id.clone(),
            status: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(&refused, StoreError::Invalid(v) if v.field == "plan_id"));
}
on_both!(subscriptions_lifecycle, super::subscriptions_lifecycle);

async fn changes_are_published(store: Store) {
    let mut rx = store.subscribe_changes();
    let start = *rx.borrow_and_update();
    store.create_api(new_api("weather")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*rx.borrow(), start + 1);

    // A change through a second handle (another process) reaches the first by
    // LISTEN/NOTIFY on PostgreSQL or by polling on SQLite.
    let watcher = store.watch_remote_changes(Duration::from_millis(100));
    let url = store_url(&store).await;
    let other = Store::open(&url).await.unwrap();
    other.create_api(new_api("maps")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*rx.borrow(), start + 2);
    watcher.abort();
    other.close().await;
}
on_both!(changes_reach_other_handles, super::changes_are_published);

async fn store_url(store: &Store) -> String {
    store.url().to_owned()
}

async fn migrations_are_idempotent(store: Store) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
}
on_both!(migrations_are_idempotent, super::migrations_are_idempotent);

async fn quota_leases(store: Store) {
    let period = 1_767_225_600_000;
    let a = store
        .lease_quota("sub_1", period, 10, Some(25))
        .await
        .unwrap();
    assert_eq!((a.start, a.granted), (0, 10));
    let b = store
        .lease_quota("sub_1", period, 10, Some(25))
        .await
        .unwrap();
    assert_eq!((b.start, b.granted), (10, 10));
    let c = store
        .lease_quota("sub_1", period, 10, Some(25))
        .await
        .unwrap();
    assert_eq!(
        (c.start, c.granted),
        (20, 5),
        "a hard cap grants only what is left"
    );
    let d = store
        .lease_quota("sub_1", period, 10, Some(25))
        .await
        .unwrap();
    assert_eq!(d.granted, 0);
    assert_eq!(store.quota_leased("sub_1", period).await.unwrap(), 25);
    store.release_quota("sub_1", period, 4).await.unwrap();
    assert_eq!(store.quota_leased("sub_1", period).await.unwrap(), 21);
    let e = store
        .lease_quota("sub_1", period, 10, Some(25))
        .await
        .unwrap();
    assert_eq!((e.start, e.granted), (21, 4));
    // Without a cap (soft quota) leases are never refused; periods are separate.
    let f = store.lease_quota("sub_1", period, 10, None).await.unwrap();
    assert_eq!((f.start, f.granted), (25, 10));
    assert_eq!(store.quota_leased("sub_1", period + 1).await.unwrap(), 0);
    assert_eq!(store.quota_leased("sub_2", period).await.unwrap(), 0);

    // Concurrent leases never hand out the same calls.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.lease_quota("sub_c", period, 7, Some(40)).await.unwrap()
        }));
    }
    let mut granted = 0;
    let mut ranges = Vec::new();
    for t in tasks {
        let l = t.await.unwrap();
        granted += l.granted;
        if l.granted > 0 {
            ranges.push((l.start, l.start + l.granted));
        }
    }
    assert_eq!(granted, 40);
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping leases {ranges:?}");
    }
}
on_both!(quota_leases, super::quota_leases);

async fn client_secrets(store: Store) {
    let dev = developer(&store, "cs@example.com").await;
    let app = store
        .create_app(NewApp {
            developer_id: dev.id.clone(),
            name: "A".into(),
        })
        .await
        .unwrap();
    let before = store.config_version().await.unwrap();
    let first = store.rotate_client_secret(&app.id).await.unwrap();
    assert!(first.starts_with("tg_cs_"));
    assert_eq!(store.config_version().await.unwrap(), before + 1);
    let second = store.rotate_client_secret(&app.id).await.unwrap();
    assert_ne!(first, second);
    let config = store.load_gateway_config().await.unwrap();
    let record = config.apps.iter().find(|a| a.id == app.id).unwrap();
    assert_eq!(
        record.client_secret_hash,
        Some(KeyHash::of(&second)),
        "only the newest secret is kept"
    );
    assert_eq!(record.developer_id, dev.id);
    assert!(matches!(
        store.rotate_client_secret("app_nope").await,
        Err(StoreError::NotFound { .. })
    ));
}
on_both!(client_secrets, super::client_secrets);

async fn change_log_names_what_changed(store: Store) {
    let v0 = store.config_version().await.unwrap();
    let api = store.create_api(new_api("weather")).await.unwrap();
    let plan = store
        .create_plan(new_plan("Free", &["weather"]))
        .await
        .unwrap();
    let dev = developer(&store, "log@example.com").await;
    let app = store
        .create_app(NewApp {
            developer_id: dev.id.clone(),
            name: "A".into(),
        })
        .await
        .unwrap();
    let key = store.issue_key(&app.id, None).await.unwrap();
    let sub = store
        .create_subscription(NewSubscription {
            app_id: app.id.clone(),
            plan_id: plan.id.clone(),
            status: None,
        })
        .await
        .unwrap();

    let set = store.changes_since(v0).await.unwrap().expect("a full log");
    assert_eq!(set.version, store.config_version().await.unwrap());
    assert_eq!(
        set.apis.iter().map(String::as_str).collect::<Vec<_>>(),
        [api.id.as_str()]
    );
    assert_eq!(
        set.plans.iter().map(String::as_str).collect::<Vec<_>>(),
        [plan.id.as_str()]
    );
    assert_eq!(
        set.apps.iter().map(String::as_str).collect::<Vec<_>>(),
        [app.id.as_str()]
    );
    let now = store.config_version().await.unwrap();
    assert_eq!(
        store.changes_since(now).await.unwrap().unwrap().apps.len(),
        0,
        "nothing changed since the current version"
    );

    // What the gateway re-reads for a changed app or plan.
    assert_eq!(
        store.apps_of_plan(&plan.id).await.unwrap(),
        [app.id.as_str()]
    );
    let slice = store.load_app_slice(&app.id).await.unwrap().unwrap();
    assert_eq!(slice.keys.len(), 1);
    assert_eq!(slice.keys[0].hash, KeyHash::of(&key.secret));
    assert_eq!(slice.subscriptions[0].id, sub.id);
    assert_eq!(slice.subscriptions[0].api_ids, [api.id.as_str()]);
    store.revoke_key(&key.record.id).await.unwrap();
    let set = store.changes_since(now).await.unwrap().unwrap();
    assert_eq!(
        set.apps.iter().map(String::as_str).collect::<Vec<_>>(),
        [app.id.as_str()]
    );
    assert!(
        store
            .load_app_slice(&app.id)
            .await
            .unwrap()
            .unwrap()
            .keys
            .is_empty()
    );
    assert!(store.load_app_slice("app_missing").await.unwrap().is_none());
    assert_eq!(
        store
            .load_apis(&[api.id.clone(), "api_gone".into()])
            .await
            .unwrap()
            .len(),
        1
    );

    // A gap in the log (rows pruned, or versions from before the log) means
    // the caller must reload everything.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(store.url()).await.unwrap();
    sqlx::query("DELETE FROM config_changes WHERE version = $1")
        .bind(now)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(store.changes_since(now - 1).await.unwrap(), None);
    assert!(store.changes_since(now).await.unwrap().is_some());
}
on_both!(
    change_log_names_what_changed,
    super::change_log_names_what_changed
);

async fn base_paths_are_unique_per_host(store: Store) {
    let with_hosts = |slug: &str, hosts: &[&str]| {
        let mut a = new_api(slug);
        a.base_path = "/v1".into();
        a.hosts = hosts.iter().map(|h| (*h).to_owned()).collect();
        a
    };
    let a = store
        .create_api(with_hosts("a", &["a.example.com"]))
        .await
        .unwrap();
    store
        .create_api(with_hosts("b", &["b.example.com"]))
        .await
        .unwrap();
    // One API may answer every other host on the same base path.
    let any = store.create_api(with_hosts("any", &[])).await.unwrap();
    let err = store.create_api(with_hosts("any2", &[])).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains(&any.id) && m.contains("every host")),
        "{err:?}"
    );
    let err = store
        .create_api(with_hosts("c", &["c.example.com", "a.example.com"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Conflict(m) if m.contains(&a.id) && m.contains("a.example.com")),
        "{err:?}"
    );
    // Moving an API onto a taken host is refused too.
    let b = store.get_api_by_slug("b").await.unwrap();
    let err = store
        .update_api(
            &b.id,
            serde_json::from_value(serde_json::json!({"hosts": ["a.example.com"]})).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(store.list_apis().await.unwrap().len(), 3);
}
on_both!(
    base_paths_are_unique_per_host,
    super::base_paths_are_unique_per_host
);

/// SQLite's table rebuild (migration 0008) keeps every API and every plan's
/// coverage: run it again over data and compare.
#[tokio::test]
async fn sqlite_rebuild_of_apis_keeps_data_and_coverage() {
    let db = tollgate_testkit::TestDb::new(tollgate_testkit::Db::Sqlite).await;
    let store = Store::open(&db.url).await.unwrap();
    let api = store.create_api(new_api("weather")).await.unwrap();
    let plan = store
        .create_plan(new_plan("Free", &["weather"]))
        .await
        .unwrap();
    let before = store.list_apis().await.unwrap();
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(store.url())
        .await
        .unwrap();
    let sql = include_str!("../../../migrations/sqlite/0008_base_path_per_host.sql");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    assert_eq!(store.list_apis().await.unwrap(), before);
    assert_eq!(store.get_plan(&plan.id).await.unwrap().apis, ["weather"]);
    let config = store.load_gateway_config().await.unwrap();
    assert_eq!(config.apis[0].id, api.id);
    store.close().await;
    db.cleanup().await;
}
