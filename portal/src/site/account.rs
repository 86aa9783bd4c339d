//! Account pages: sign up, verify, log in and out, forgotten password,
//! account settings. Handlers parse the form, call [`crate::accounts`] and
//! render; a refused input shows the form again (422) with the message next
//! to its field.

use std::time::Instant;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use tollgate_core::store::Account;

use super::Site;
use super::csrf;
use super::error::SiteError;
use super::session_store::USER_ID;
use super::sign_in::{self, ProviderButton};
use super::views::{Layout, MessagePage, render, see_other};
use super::visitor::{ClientIp, PageForm, Visitor};
use crate::accounts::{AccountError, EmailChange, FieldError, LogIn, password};

/// Messages by form field, for re-rendered forms.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    fn one(e: FieldError) -> Self {
        Self(vec![e])
    }

    /// The message for `field`, or an empty string.
    pub fn of(&self, field: &str) -> &str {
        self.0
            .iter()
            .find(|e| e.field == field)
            .map_or("", |e| e.message.as_str())
    }

    /// True when there is no message.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Splits an account error into the form's field errors or a page error.
fn field_errors(e: AccountError) -> Result<FieldErrors, SiteError> {
    match e {
        AccountError::Field(f) => Ok(FieldErrors::one(f)),
        AccountError::Internal(detail) => Err(SiteError::Internal(detail)),
    }
}

fn password_hint() -> String {
    format!(
        "At least {} characters. A few random words work well.",
        password::MIN_LENGTH
    )
}

/// Session key: the account this browser just signed up (never set for a
/// taken address), logged in when the same browser opens the mailed link.
const SIGNED_UP: &str = "signed_up";

/// `?notice=…` on pages that follow a form; only known values show text.
#[derive(Debug, Deserialize, Default)]
pub struct NoticeQuery {
    #[serde(default)]
    notice: String,
}

fn notice_text(notice: &str) -> &'static str {
    match notice {
        "password-reset" => "Your password is changed. Log in with the new one.",
        "logged-out" => "You are logged out.",
        "password-changed" => "Your password is changed. Your other sessions were logged out.",
        "email-sent" => "We sent a link to the new address. Your address changes when you open it.",
        "verification-sent" => "We sent you a new confirmation link.",
        _ => "",
    }
}

// ---- sign up -------------------------------------------------------------

#[derive(Template)]
#[template(path = "signup.html")]
pub struct SignUpPage {
    layout: Layout,
    csrf: String,
    providers: Vec<ProviderButton>,
    email: String,
    password_hint: String,
    errors: FieldErrors,
}

#[derive(Debug, Deserialize)]
pub struct SignUpForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// 200 for a fresh form, 422 for one shown again with its errors.
fn form_status(errors: &FieldErrors) -> StatusCode {
    if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    }
}

async fn sign_up_page(
    site: &Site,
    visitor: &Visitor,
    email: String,
    errors: FieldErrors,
) -> Result<Response, SiteError> {
    Ok(render(
        form_status(&errors),
        &SignUpPage {
            layout: visitor.layout(site, Some("Sign up")).await?,
            csrf: visitor.csrf().await?,
            providers: site.sign_in.buttons(),
            email,
            password_hint: password_hint(),
            errors,
        },
    ))
}

/// `GET /signup`
pub async fn sign_up_form(
    State(site): State<Site>,
    visitor: Visitor,
) -> Result<Response, SiteError> {
    if visitor.account.is_some() {
        return Ok(see_other("/account"));
    }
    sign_up_page(&site, &visitor, String::new(), FieldErrors::default()).await
}

/// `POST /signup`
pub async fn sign_up(
    State(site): State<Site>,
    visitor: Visitor,
    PageForm(form): PageForm<SignUpForm>,
) -> Result<Response, SiteError> {
    match site.accounts.sign_up(&form.email, &form.password).await {
        Ok(new_account) => {
            if let Some(user_id) = new_account {
                // Opening the mailed link in this browser will log it in.
                visitor.session.insert(SIGNED_UP, user_id).await?;
            }
            Ok(see_other("/signup/check-email"))
        }
        Err(e) => sign_up_page(&site, &visitor, form.email, field_errors(e)?).await,
    }
}

/// `GET /signup/check-email`
pub async fn check_email(State(site): State<Site>) -> Response {
    render(
        StatusCode::OK,
        &MessagePage::new(
            &site.brand,
            "success",
            "Check your inbox",
            &[
                "We sent a message to the address you gave. Open the link in it to confirm your address, then log in.",
                "Nothing there after a few minutes? Look in your spam folder, or sign up again to get a new message.",
            ],
        )
        .link("/login", "Go to log in"),
    )
}

fn link_does_not_work(site: &Site, what: &str, again: (&str, &str)) -> Response {
    render(
        StatusCode::GONE,
        &MessagePage::new(
            &site.brand,
            "warning",
            "This link does not work",
            &[&format!(
                "The {what} link is used, expired or incomplete. Each link works once, for a limited time."
            )],
        )
        .link(again.0, again.1),
    )
}

/// `GET /verify-email/{token}`
pub async fn verify_email(
    State(site): State<Site>,
    visitor: Visitor,
    Path(token): Path<String>,
) -> Result<Response, SiteError> {
    if let Some(user_id) = site.accounts.verify_email(&token).await? {
        // The browser that signed up (it knows the password) and opened the
        // link (it reads the mail) is logged in at once; any other browser
        // is asked to log in.
        if visitor.account.is_none()
            && visitor
                .session
                .remove::<String>(SIGNED_UP)
                .await?
                .as_deref()
                == Some(&user_id)
        {
            visitor.session.cycle_id().await?;
            visitor.session.insert(USER_ID, &user_id).await?;
            csrf::renew(&visitor.session).await?;
            tracing::info!(user = %user_id, "address confirmed; logged in");
            return Ok(see_other("/apps?notice=welcome"));
        }
        Ok(render(
            StatusCode::OK,
            &MessagePage::new(
                &site.brand,
                "success",
                "Your e-mail address is confirmed",
                &["Thank you. You can log in now."],
            )
            .link("/login", "Log in"),
        ))
    } else {
        Ok(link_does_not_work(
            &site,
            "confirmation",
            ("/login", "Log in to get a new confirmation link"),
        ))
    }
}

// ---- log in and out ------------------------------------------------------

#[derive(Template)]
#[template(path = "login.html")]
pub struct LogInPage {
    layout: Layout,
    csrf: String,
    providers: Vec<ProviderButton>,
    email: String,
    notice: &'static str,
    error: String,
}

#[derive(Debug, Deserialize)]
pub struct LogInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

async fn log_in_page(
    site: &Site,
    visitor: &Visitor,
    status: StatusCode,
    email: String,
    notice: &'static str,
    error: String,
) -> Result<Response, SiteError> {
    Ok(render(
        status,
        &LogInPage {
            layout: visitor.layout(site, Some("Log in")).await?,
            csrf: visitor.csrf().await?,
            providers: site.sign_in.buttons(),
            email,
            notice,
            error,
        },
    ))
}

/// `GET /login`
pub async fn log_in_form(
    State(site): State<Site>,
    visitor: Visitor,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, SiteError> {
    if visitor.account.is_some() {
        return Ok(see_other("/account"));
    }
    log_in_page(
        &site,
        &visitor,
        StatusCode::OK,
        String::new(),
        notice_text(&q.notice),
        String::new(),
    )
    .await
}

/// `POST /login`
pub async fn log_in(
    State(site): State<Site>,
    visitor: Visitor,
    ClientIp(ip): ClientIp,
    PageForm(form): PageForm<LogInForm>,
) -> Result<Response, SiteError> {
    let now = Instant::now();
    if let Err(wait) = site.throttle.check(&form.email, ip, now) {
        let minutes = wait.as_secs().div_ceil(60).max(1);
        let error = format!(
            "Too many failed attempts. For your safety, try again in {minutes} minute{}, or reset your password.",
            if minutes == 1 { "" } else { "s" }
        );
        let mut resp = log_in_page(
            &site,
            &visitor,
            StatusCode::TOO_MANY_REQUESTS,
            form.email,
            "",
            error,
        )
        .await?;
        if let Ok(v) = wait.as_secs().max(1).to_string().parse() {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        return Ok(resp);
    }
    match site.accounts.log_in(&form.email, &form.password).await? {
        LogIn::Success(account) => {
            site.throttle.succeeded(&form.email);
            // A new id for the signed-in session: an id planted before log-in
            // (session fixation) is worthless afterwards.
            visitor.session.cycle_id().await?;
            visitor.session.insert(USER_ID, &account.user.id).await?;
            csrf::renew(&visitor.session).await?;
            tracing::info!(user = %account.user.id, "logged in");
            Ok(see_other("/account"))
        }
        LogIn::WrongCredentials => {
            site.throttle.failed(&form.email, ip, now);
            log_in_page(
                &site,
                &visitor,
                StatusCode::UNPROCESSABLE_ENTITY,
                form.email,
                "",
                "That e-mail address and password do not match an account.".to_owned(),
            )
            .await
        }
        LogIn::Unverified => {
            log_in_page(
                &site,
                &visitor,
                StatusCode::UNPROCESSABLE_ENTITY,
                form.email,
                "",
                "Please confirm your e-mail address first: we sent you a new link.".to_owned(),
            )
            .await
        }
    }
}

/// `POST /logout`
pub async fn log_out(visitor: Visitor) -> Result<Response, SiteError> {
    visitor.session.flush().await?;
    Ok(see_other("/login?notice=logged-out"))
}

// ---- forgotten password --------------------------------------------------

#[derive(Template)]
#[template(path = "forgot_password.html")]
pub struct ForgotPasswordPage {
    layout: Layout,
    csrf: String,
    email: String,
    errors: FieldErrors,
}

#[derive(Debug, Deserialize)]
pub struct ForgotPasswordForm {
    #[serde(default)]
    email: String,
}

async fn forgot_password_page(
    site: &Site,
    visitor: &Visitor,
    email: String,
    errors: FieldErrors,
) -> Result<Response, SiteError> {
    Ok(render(
        form_status(&errors),
        &ForgotPasswordPage {
            layout: visitor.layout(site, Some("Reset your password")).await?,
            csrf: visitor.csrf().await?,
            email,
            errors,
        },
    ))
}

/// `GET /forgot-password`
pub async fn forgot_password_form(
    State(site): State<Site>,
    visitor: Visitor,
) -> Result<Response, SiteError> {
    forgot_password_page(&site, &visitor, String::new(), FieldErrors::default()).await
}

/// `POST /forgot-password`
pub async fn forgot_password(
    State(site): State<Site>,
    visitor: Visitor,
    PageForm(form): PageForm<ForgotPasswordForm>,
) -> Result<Response, SiteError> {
    match site.accounts.request_password_reset(&form.email).await {
        Ok(()) => Ok(see_other("/forgot-password/sent")),
        Err(e) => forgot_password_page(&site, &visitor, form.email, field_errors(e)?).await,
    }
}

/// `GET /forgot-password/sent`
pub async fn reset_sent(State(site): State<Site>) -> Response {
    render(
        StatusCode::OK,
        &MessagePage::new(
            &site.brand,
            "success",
            "Check your inbox",
            &[
                "If an account uses that address, we sent it a link to choose a new password. The link works once, for one hour.",
                "Nothing there after a few minutes? Look in your spam folder, or check the address and ask again.",
            ],
        )
        .link("/login", "Back to log in"),
    )
}

#[derive(Template)]
#[template(path = "reset_password.html")]
pub struct ResetPasswordPage {
    layout: Layout,
    csrf: String,
    token: String,
    password_hint: String,
    errors: FieldErrors,
}

#[derive(Debug, Deserialize)]
pub struct ResetPasswordForm {
    #[serde(default)]
    password: String,
}

async fn reset_password_page(
    site: &Site,
    visitor: &Visitor,
    token: String,
    errors: FieldErrors,
) -> Result<Response, SiteError> {
    Ok(render(
        form_status(&errors),
        &ResetPasswordPage {
            layout: visitor.layout(site, Some("Choose a new password")).await?,
            csrf: visitor.csrf().await?,
            token,
            password_hint: password_hint(),
            errors,
        },
    ))
}

const RESET_AGAIN: (&str, &str) = ("/forgot-password", "Ask for a new link");

/// `GET /reset-password/{token}`
pub async fn reset_password_form(
    State(site): State<Site>,
    visitor: Visitor,
    Path(token): Path<String>,
) -> Result<Response, SiteError> {
    if !site.accounts.reset_link_works(&token).await? {
        return Ok(link_does_not_work(&site, "password reset", RESET_AGAIN));
    }
    reset_password_page(&site, &visitor, token, FieldErrors::default()).await
}

/// `POST /reset-password/{token}`
pub async fn reset_password(
    State(site): State<Site>,
    visitor: Visitor,
    Path(token): Path<String>,
    PageForm(form): PageForm<ResetPasswordForm>,
) -> Result<Response, SiteError> {
    match site.accounts.reset_password(&token, &form.password).await {
        Ok(true) => {
            // Whoever was signed in here is signed out with every other session.
            visitor.session.flush().await?;
            Ok(see_other("/login?notice=password-reset"))
        }
        Ok(false) => Ok(link_does_not_work(&site, "password reset", RESET_AGAIN)),
        Err(e) => reset_password_page(&site, &visitor, token, field_errors(e)?).await,
    }
}

// ---- account settings ----------------------------------------------------

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    layout: Layout,
    csrf: String,
    email: String,
    verified: bool,
    has_password: bool,
    /// Linked sign-in providers: (name, address, last sign-in date).
    identities: Vec<(String, String, String)>,
    notice: &'static str,
    new_email: String,
    password_hint: String,
    errors: FieldErrors,
}

async fn account_page(
    site: &Site,
    visitor: &Visitor,
    account: &Account,
    notice: &'static str,
    new_email: String,
    errors: FieldErrors,
) -> Result<Response, SiteError> {
    Ok(render(
        form_status(&errors),
        &AccountPage {
            layout: visitor.layout(site, Some("Your account")).await?,
            csrf: visitor.csrf().await?,
            email: account.user.email.clone(),
            verified: account.email_verified_at.is_some(),
            has_password: account.password_hash.is_some(),
            identities: identities(site, &account.user.id).await?,
            notice,
            new_email,
            password_hint: password_hint(),
            errors,
        },
    ))
}

async fn identities(
    site: &Site,
    user_id: &str,
) -> Result<Vec<(String, String, String)>, SiteError> {
    let names = sign_in::provider_names(site);
    Ok(site
        .app
        .store
        .linked_identities(user_id)
        .await?
        .into_iter()
        .map(|i| {
            let name = names.get(&i.provider).cloned().unwrap_or(i.provider);
            (
                name,
                i.email,
                i.last_login_at.to_datetime().format("%Y-%m-%d").to_string(),
            )
        })
        .collect())
}

/// `GET /account`
pub async fn account(
    State(site): State<Site>,
    visitor: Visitor,
    Query(q): Query<NoticeQuery>,
) -> Result<Response, SiteError> {
    let Some(account) = &visitor.account else {
        return Ok(see_other("/login"));
    };
    account_page(
        &site,
        &visitor,
        account,
        notice_text(&q.notice),
        String::new(),
        FieldErrors::default(),
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct ChangePasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

/// `POST /account/password`
pub async fn change_password(
    State(site): State<Site>,
    visitor: Visitor,
    PageForm(form): PageForm<ChangePasswordForm>,
) -> Result<Response, SiteError> {
    let Some(account) = &visitor.account else {
        return Ok(see_other("/login"));
    };
    visitor.session.cycle_id().await?;
    let keep = visitor.session.id().map(|id| id.to_string());
    match site
        .accounts
        .change_password(
            account,
            &form.current_password,
            &form.new_password,
            keep.as_deref(),
        )
        .await
    {
        Ok(()) => Ok(see_other("/account?notice=password-changed")),
        Err(e) => {
            account_page(
                &site,
                &visitor,
                account,
                "",
                String::new(),
                field_errors(e)?,
            )
            .await
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ChangeEmailForm {
    #[serde(default)]
    new_email: String,
    #[serde(default)]
    email_password: String,
}

/// `POST /account/email`
pub async fn change_email(
    State(site): State<Site>,
    visitor: Visitor,
    PageForm(form): PageForm<ChangeEmailForm>,
) -> Result<Response, SiteError> {
    let Some(account) = &visitor.account else {
        return Ok(see_other("/login"));
    };
    match site
        .accounts
        .request_email_change(account, &form.email_password, &form.new_email)
        .await
    {
        Ok(()) => Ok(see_other("/account?notice=email-sent")),
        Err(e) => {
            account_page(
                &site,
                &visitor,
                account,
                "",
                form.new_email,
                field_errors(e)?,
            )
            .await
        }
    }
}

/// `GET /confirm-email/{token}`
pub async fn confirm_email(
    State(site): State<Site>,
    Path(token): Path<String>,
) -> Result<Response, SiteError> {
    Ok(match site.accounts.confirm_email_change(&token).await? {
        EmailChange::Changed => render(
            StatusCode::OK,
            &MessagePage::new(
                &site.brand,
                "success",
                "Your e-mail address is changed",
                &["From now on, log in with the new address."],
            )
            .link("/account", "Go to your account"),
        ),
        EmailChange::Taken => render(
            StatusCode::CONFLICT,
            &MessagePage::new(
                &site.brand,
                "warning",
                "This address is taken",
                &["Another account started using this address in the meantime, so your address was not changed."],
            )
            .link("/account", "Go to your account"),
        ),
        EmailChange::InvalidLink => {
            link_does_not_work(&site, "confirmation", ("/account", "Go to your account"))
        }
    })
}
