//! Sending the portal's e-mail: over SMTP when `smtp_host` is set, otherwise
//! into `outbox/` in the data dir, one `.eml` file per message, so a machine
//! without a mail server (the demo, a laptop) still shows every message.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tollgate_core::config::{SmtpSettings, SmtpTls};

/// One message ready to address: subject and plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// Why a message could not be built or sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// An address or header was refused by the message builder.
    #[error("cannot build the message: {0}")]
    Build(String),
    /// The SMTP server refused or could not be reached.
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// The outbox folder could not be written.
    #[error("cannot write to the outbox {0}: {1}")]
    Outbox(PathBuf, std::io::Error),
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(PathBuf),
}

/// Sends the portal's messages from one sender.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let via = match &self.transport {
            Transport::Smtp(_) => "smtp".to_owned(),
            Transport::Outbox(dir) => format!("outbox {}", dir.display()),
        };
        f.debug_struct("Mailer")
            .field("via", &via)
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl Mailer {
    /// A mailer over SMTP, or into `outbox` when `smtp` is `None`. `from` is
    /// an address or `Name <address>`.
    pub fn new(
        smtp: Option<&SmtpSettings>,
        from: &str,
        outbox: PathBuf,
    ) -> Result<Self, MailError> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| MailError::Build(format!("sender {from:?}: {e}")))?;
        let transport = match smtp {
            None => Transport::Outbox(outbox),
            Some(s) => {
                let mut builder = match s.tls {
                    SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host)?,
                    SmtpTls::StartTls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)?
                    }
                    SmtpTls::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
                    }
                }
                .port(s.port)
                .timeout(Some(Duration::from_secs(15)));
                if let Some((user, password)) = &s.credentials {
                    builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
                }
                Transport::Smtp(builder.build())
            }
        };
        Ok(Self { transport, from })
    }

    /// Builds the message for `to`.
    pub fn message(&self, to: &str, mail: &Mail) -> Result<Message, MailError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| MailError::Build(format!("recipient {to:?}: {e}")))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(mail.body.clone())
            .map_err(|e| MailError::Build(e.to_string()))
    }

    /// Sends one message and waits for the server (or the disk).
    pub async fn send(&self, to: &str, mail: &Mail) -> Result<(), MailError> {
        let message = self.message(to, mail)?;
        match &self.transport {
            Transport::Smtp(smtp) => {
                smtp.send(message).await?;
                tracing::info!(to, subject = %mail.subject, "mail sent");
            }
            Transport::Outbox(dir) => {
                let path = write_outbox(dir, &message.formatted())
                    .await
                    .map_err(|e| MailError::Outbox(dir.clone(), e))?;
                tracing::info!(
                    to,
                    subject = %mail.subject,
                    path = %path.display(),
                    "no SMTP server configured: mail written to the outbox"
                );
            }
        }
        Ok(())
    }

    /// Sends in the background: the answer to the person never waits for (or
    /// reveals anything by the timing of) the mail server. Failures are logged.
    pub fn dispatch(self: &Arc<Self>, to: &str, mail: Mail) {
        let this = self.clone();
        let to = to.to_owned();
        tokio::spawn(async move {
            if let Err(e) = this.send(&to, &mail).await {
                tracing::error!(error = %e, to, subject = %mail.subject, "cannot send mail");
            }
        });
    }
}

/// Writes a message under a unique name, whole or not at all (written aside,
/// then renamed), so readers never see half a message.
async fn write_outbox(dir: &std::path::Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    tokio::fs::create_dir_all(dir).await?;
    let name = format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        uuid::Uuid::new_v4().simple()
    );
    let partial = dir.join(format!(".{name}.partial"));
    let path = dir.join(format!("{name}.eml"));
    tokio::fs::write(&partial, bytes).await?;
    tokio::fs::rename(&partial, &path).await?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_sender_recipient_subject_and_body() {
        let dir = tempfile::tempdir().unwrap();
        let mailer =
            Mailer::new(None, "Acme APIs <no-reply@acme.test>", dir.path().into()).unwrap();
        let msg = mailer
            .message(
                "ada@example.com",
                &Mail {
                    subject: "Confirm your e-mail".into(),
                    body: "Open http://portal.test/verify-email/abc\n".into(),
                },
            )
            .unwrap();
        let text = String::from_utf8(msg.formatted()).unwrap();
        assert!(
            text.contains("From: \"Acme APIs\" <no-reply@acme.test>\r\n"),
            "{text}"
        );
        assert!(text.contains("To: ada@example.com\r\n"), "{text}");
        assert!(text.contains("Subject: Confirm your e-mail\r\n"), "{text}");
        assert!(
            text.contains("Content-Type: text/plain; charset=utf-8\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Open http://portal.test/verify-email/abc\r\n"),
            "{text}"
        );
        assert!(
            mailer
                .message(
                    "not an address",
                    &Mail {
                        subject: "x".into(),
                        body: "y".into()
                    }
                )
                .is_err()
        );
        assert!(Mailer::new(None, "nobody", dir.path().into()).is_err());
    }

    #[tokio::test]
    async fn without_smtp_messages_land_in_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        let mailer = Mailer::new(None, "no-reply@acme.test", outbox.clone()).unwrap();
        let mail = Mail {
            subject: "Hello".into(),
            body: "Body".into(),
        };
        mailer.send("a@example.com", &mail).await.unwrap();
        mailer.send("b@example.com", &mail).await.unwrap();
        let mut files: Vec<_> = std::fs::read_dir(&outbox)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 2);
        assert!(
            files
                .iter()
                .all(|p| p.extension().is_some_and(|e| e == "eml"))
        );
        let first = std::fs::read_to_string(&files[0]).unwrap();
        assert!(first.contains("Subject: Hello"));
    }
}
