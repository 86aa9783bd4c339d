//! Declarative configuration against both databases: dump, apply, idempotence,
//! updates, pruning and clashes with objects the file does not list.

use tollgate_core::Store;
use tollgate_core::declarative::Document;
use tollgate_core::key::KeyHash;
use tollgate_core::model::*;
use tollgate_core::store::{ApplyError, ApplyOptions, Backend};
use tollgate_testkit::{Db, TestDb};

use crate::on_both;

const DOC: &str = r#"
format: 1
apis:
  - id: api_weather
    name: Weather
    slug: weather
    base_path: /weather
    upstreams: [http://127.0.0.1:9000]
    policies:
      ip_deny: [10.0.0.0/8]
plans:
  - id: plan_free
    name: Free
    apis: [weather]
    included_calls: 1000
    rate_limits: [{limit: 10, window: second}]
developers:
  - id: usr_ada
    email: Ada@Example.com
    name: Ada
apps:
  - id: app_ada
    developer: usr_ada
    name: Ada's app
    keys:
      - id: key_ada
        prefix: tg_live_AbCd
        hash: "1111111111111111111111111111111111111111111111111111111111111111"
    subscriptions:
      - id: sub_ada
        plan: plan_free
        started_at: 2026-01-15T10:00:00Z
"#;

fn kind(store: &Store) -> Db {
    match store.backend() {
        Backend::Sqlite => Db::Sqlite,
        Backend::Postgres => Db::Postgres,
    }
}

async fn dump_round_trips(store: Store) {
    // A configuration made through the ordinary store functions.
    let mut api = NewApi {
        name: "Maps".into(),
        slug: "maps".into(),
        base_path: "/maps".into(),
        hosts: vec!["maps.example.com".into()],
        upstreams: vec![
            "http://127.0.0.1:9001".into(),
            "http://127.0.0.1:9002".into(),
        ],
        visibility: Some(Visibility::Private),
        openapi: Some(
            serde_json::json!({"openapi": "3.0.3", "info": {"title": "Maps", "version": "1"}, "paths": {"/tiles/{z}": {"get": {}}}}),
        ),
        policies: None,
    };
    api.policies = Some(ApiPolicies {
        keyless: false,
        max_body_bytes: Some(1024),
        ..ApiPolicies::default()
    });
    let api = store.create_api(api).await.unwrap();
    let plan = store
        .create_plan(NewPlan {
            name: "Pro".into(),
            apis: vec!["maps".into()],
            price_minor: Some(4900),
            currency: Some("EUR".into()),
            billing_interval: None,
            included_calls: Some(100_000),
            rate_limits: Some(vec![RateLimit {
                limit: 50,
                window: RateWindow::Second,
                burst: Some(100),
                per: RateScope::Key,
            }]),
            overage: Some(true),
            quota_anchor: Some(QuotaAnchor::Subscription),
            approval_required: Some(true),
            status: None,
        })
        .await
        .unwrap();
    let dev = store
        .create_user(NewUser {
            email: "grace@example.com".into(),
            name: "Grace".into(),
            role: None,
        })
        .await
        .unwrap();
    let app = store
        .create_app(NewApp {
            developer_id: dev.id.clone(),
            name: "Grace's app".into(),
        })
        .await
        .unwrap();
    store.rotate_client_secret(&app.id).await.unwrap();
    let live = store.issue_key(&app.id, None).await.unwrap();
    let old = store.issue_key(&app.id, None).await.unwrap();
    store.revoke_key(&old.record.id).await.unwrap();
    store
        .create_subscription(NewSubscription {
            app_id: app.id.clone(),
            plan_id: plan.id.clone(),
            status: None,
        })
        .await
        .unwrap();

    let doc = store.dump_document().await.unwrap();
    assert_eq!(doc.apis[0].id, api.id);
    assert_eq!(doc.apps[0].keys.len(), 2);
    assert_eq!(doc.apps[0].keys[0].hash, live_hash(&live.secret));
    assert!(doc.apps[0].client_secret_hash.is_some());
    // The YAML text reads back as the same document.
    assert_eq!(Document::parse(&doc.to_yaml()).unwrap(), doc);

    // Applied to an empty database, it makes the same configuration.
    let db = TestDb::new(kind(&store)).await;
    let other = Store::open(&db.url).await.unwrap();
    let report = other
        .apply_document(&doc, ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(report.apis.created, 1);
    assert_eq!(report.keys.created, 2);
    assert_eq!(report.subscriptions.created, 1);
    assert_eq!(other.dump_document().await.unwrap(), doc);
    let key = other
        .find_key_by_hash(KeyHash::of(&live.secret))
        .await
        .unwrap()
        .expect("the live key works in the other database");
    assert_eq!(key.status, KeyStatus::Active);
    assert!(
        other
            .find_key_by_hash(KeyHash::of(&old.secret))
            .await
            .unwrap()
            .is_some_and(|k| k.status == KeyStatus::Revoked && k.revoked_at.is_some())
    );

    // Applying it again changes nothing, not even the version.
    let version = other.config_version().await.unwrap();
    let again = other
        .apply_document(&doc, ApplyOptions::default())
        .await
        .unwrap();
    assert!(!again.changed(), "{again}");
    assert_eq!(other.config_version().await.unwrap(), version);
    other.close().await;
    db.cleanup().await;
}
on_both!(dump_round_trips, super::dump_round_trips);

fn live_hash(secret: &str) -> String {
    KeyHash::of(secret).to_hex()
}

async fn apply_updates_and_prunes(store: Store) {
    let doc = Document::parse(DOC).unwrap();
    let first = store
        .apply_document(&doc, ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(first.to_string().matches("1 created").count(), 6, "{first}");
    let config = store.load_gateway_config().await.unwrap();
    assert_eq!(config.keys.len(), 1);
    assert_eq!(config.subscriptions[0].quota.unwrap().included, 1000);
    assert_eq!(
        config.subscriptions[0].quota.unwrap().subscription_start,
        1_768_471_200_000,
        "started_at is the subscription's start"
    );
    // E-mails are stored lowercase, and the lowercase file is the same file.
    assert_eq!(
        store.dump_document().await.unwrap().developers[0].email,
        "ada@example.com"
    );
    assert!(
        !store
            .apply_document(&doc, ApplyOptions::default())
            .await
            .unwrap()
            .changed()
    );

    // Changes: a new upstream, a second key, the first key revoked.
    let changed = DOC
        .replace("http://127.0.0.1:9000", "http://127.0.0.1:9100")
        .replace(
            "        prefix: tg_live_AbCd\n",
            "        prefix: tg_live_AbCd\n        status: revoked\n",
        )
        .replace(
            "    subscriptions:\n",
            "      - id: key_ada2\n        prefix: tg_live_EfGh\n        hash: \"2222222222222222222222222222222222222222222222222222222222222222\"\n    subscriptions:\n",
        );
    let doc2 = Document::parse(&changed).unwrap();
    let dry = store
        .apply_document(
            &doc2,
            ApplyOptions {
                dry_run: true,
                ..ApplyOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (dry.apis.updated, dry.keys.updated, dry.keys.created),
        (1, 1, 1)
    );
    assert_eq!(
        store.dump_document().await.unwrap().apis[0].upstreams,
        ["http://127.0.0.1:9000"],
        "a dry run writes nothing"
    );
    let version = store.config_version().await.unwrap();
    let second = store
        .apply_document(&doc2, ApplyOptions::default())
        .await
        .unwrap();
    let mut expected = dry.clone();
    expected.version = version + 1;
    assert_eq!(second, expected, "the dry run foretold the changes");
    let config = store.load_gateway_config().await.unwrap();
    assert_eq!(config.keys.len(), 1);
    assert_eq!(config.keys[0].id, "key_ada2");
    assert_eq!(config.apis[0].upstreams, ["http://127.0.0.1:9100"]);

    // Objects made elsewhere are left alone, unless they clash or are pruned.
    let admin_made = store
        .create_api(NewApi {
            name: "Other".into(),
            slug: "other".into(),
            base_path: "/other".into(),
            hosts: vec![],
            upstreams: vec!["http://127.0.0.1:9200".into()],
            visibility: None,
            openapi: None,
            policies: None,
        })
        .await
        .unwrap();
    let admin = store
        .create_user(NewUser {
            email: "admin@example.com".into(),
            name: "Admin".into(),
            role: Some(Role::Admin),
        })
        .await
        .unwrap();
    assert!(
        !store
            .apply_document(&doc2, ApplyOptions::default())
            .await
            .unwrap()
            .changed()
    );
    assert_eq!(store.list_apis().await.unwrap().len(), 2);

    let clashing = changed
        .replace("slug: weather", "slug: other")
        .replace("apis: [weather]", "apis: [other]");
    let err = store
        .apply_document(
            &Document::parse(&clashing).unwrap(),
            ApplyOptions::default(),
        )
        .await
        .unwrap_err();
    let ApplyError::Conflicts(problems) = err else {
        panic!("expected a clash, got {err:?}")
    };
    assert_eq!(problems.0[0].path, "apis[0].slug");
    assert!(
        problems.0[0].message.contains(&admin_made.id) && problems.0[0].message.contains("--prune"),
        "{problems}"
    );

    let pruned = store
        .apply_document(
            &doc2,
            ApplyOptions {
                prune: true,
                ..ApplyOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(pruned.apis.deleted, 1, "{pruned}");
    assert_eq!(pruned.developers.deleted, 0, "admins are never pruned");
    assert!(store.get_user(&admin.id).await.is_ok());
    assert_eq!(store.list_apis().await.unwrap().len(), 1);

    // Removing a key from the file and pruning takes it out of the gateway's view.
    let fewer = Document::parse(&changed.replace(
        "      - id: key_ada2\n        prefix: tg_live_EfGh\n        hash: \"2222222222222222222222222222222222222222222222222222222222222222\"\n",
        "",
    ))
    .unwrap();
    let report = store
        .apply_document(
            &fewer,
            ApplyOptions {
                prune: true,
                ..ApplyOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(report.keys.deleted, 1);
    assert!(store.load_gateway_config().await.unwrap().keys.is_empty());
}
on_both!(apply_updates_and_prunes, super::apply_updates_and_prunes);
