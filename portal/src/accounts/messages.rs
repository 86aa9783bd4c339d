//! The text of every e-mail the portal sends, as askama views (`templates/mail/`).

use askama::Template;

use super::mailer::Mail;

#[derive(Template)]
#[template(path = "mail/verify_email.txt")]
struct VerifyEmail<'a> {
    brand: &'a str,
    link: &'a str,
    hours: u64,
}

#[derive(Template)]
#[template(path = "mail/already_registered.txt")]
struct AlreadyRegistered<'a> {
    brand: &'a str,
    login_link: &'a str,
    reset_link: &'a str,
}

#[derive(Template)]
#[template(path = "mail/reset_password.txt")]
struct ResetPassword<'a> {
    brand: &'a str,
    link: &'a str,
    minutes: u64,
}

#[derive(Template)]
#[template(path = "mail/password_changed.txt")]
struct PasswordChanged<'a> {
    brand: &'a str,
    reset_link: &'a str,
}

#[derive(Template)]
#[template(path = "mail/confirm_new_email.txt")]
struct ConfirmNewEmail<'a> {
    brand: &'a str,
    link: &'a str,
    hours: u64,
}

#[derive(Template)]
#[template(path = "mail/email_change_requested.txt")]
struct EmailChangeRequested<'a> {
    brand: &'a str,
    reset_link: &'a str,
}

#[derive(Template)]
#[template(path = "mail/email_in_use.txt")]
struct EmailInUse<'a> {
    brand: &'a str,
    reset_link: &'a str,
}

fn mail(subject: String, body: Result<String, askama::Error>) -> Mail {
    Mail {
        subject,
        // The templates have no fallible parts; an error here is a bug worth
        // seeing in the message rather than a lost message.
        body: body.unwrap_or_else(|e| format!("(message could not be rendered: {e})")),
    }
}

/// "Confirm your e-mail address" after sign-up.
pub fn verify_email(brand: &str, link: &str, hours: u64) -> Mail {
    mail(
        format!("Confirm your e-mail address for {brand}"),
        VerifyEmail { brand, link, hours }.render(),
    )
}

/// Sent instead of an error when someone signs up with a registered address.
pub fn already_registered(brand: &str, login_link: &str, reset_link: &str) -> Mail {
    mail(
        format!("You already have a {brand} account"),
        AlreadyRegistered {
            brand,
            login_link,
            reset_link,
        }
        .render(),
    )
}

/// The password reset link.
pub fn reset_password(brand: &str, link: &str, minutes: u64) -> Mail {
    mail(
        format!("Reset your {brand} password"),
        ResetPassword {
            brand,
            link,
            minutes,
        }
        .render(),
    )
}

/// Notice after a password change or reset.
pub fn password_changed(brand: &str, reset_link: &str) -> Mail {
    mail(
        format!("Your {brand} password was changed"),
        PasswordChanged { brand, reset_link }.render(),
    )
}

/// The link that confirms a new address, sent to that address.
pub fn confirm_new_email(brand: &str, link: &str, hours: u64) -> Mail {
    mail(
        format!("Confirm your new e-mail address for {brand}"),
        ConfirmNewEmail { brand, link, hours }.render(),
    )
}

/// Notice to the old address when a change is requested.
pub fn email_change_requested(brand: &str, reset_link: &str) -> Mail {
    mail(
        format!("Your {brand} e-mail address is being changed"),
        EmailChangeRequested { brand, reset_link }.render(),
    )
}

/// Sent to an address that is already registered when another account asks for it.
pub fn email_in_use(brand: &str, reset_link: &str) -> Mail {
    mail(
        format!("This address already has a {brand} account"),
        EmailInUse { brand, reset_link }.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_the_links_unescaped() {
        let m = verify_email("Acme & Co", "http://p.test/verify-email/ab&cd", 24);
        assert_eq!(m.subject, "Confirm your e-mail address for Acme & Co");
        assert!(
            m.body.contains("\nhttp://p.test/verify-email/ab&cd\n"),
            "{}",
            m.body
        );
        assert!(m.body.contains("Welcome to Acme & Co."), "{}", m.body);
        let m = already_registered("Acme", "http://p/login", "http://p/forgot-password");
        assert!(m.body.contains("http://p/login") && m.body.contains("http://p/forgot-password"));
    }
}
