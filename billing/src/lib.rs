//! Money and price types that plans use.
//!
//! Amounts are integers in the currency's minor unit (cents for USD) so that no
//! rounding ever happens on the way from a plan to an invoice. Stripe integration
//! comes later and builds on these types.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a currency, amount or interval was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// The currency code is not three ASCII letters.
    #[error("currency must be a three-letter ISO 4217 code such as USD or EUR, got {0:?}")]
    Currency(String),
    /// The amount is negative.
    #[error("amount must be zero or positive, got {0}")]
    NegativeAmount(i64),
    /// The billing interval is not one we bill on.
    #[error("billing interval must be one of month, year, got {0:?}")]
    Interval(String),
}

/// An ISO 4217 currency code, upper case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    /// US dollars, the default currency of a new plan.
    pub fn usd() -> Self {
        Self("USD".to_owned())
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        &self.0
    }

    /// How many minor units make one major unit (100 for USD, 1 for JPY).
    pub fn minor_units_per_major(&self) -> i64 {
        // ISO 4217 currencies without a minor unit that Stripe supports.
        const ZERO_DECIMAL: &[&str] = &[
            "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND",
            "VUV", "XAF", "XOF", "XPF",
        ];
        if ZERO_DECIMAL.contains(&self.0.as_str()) {
            1
        } else {
            100
        }
    }
}

impl FromStr for Currency {
    type Err = PriceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Self(s.to_ascii_uppercase()))
        } else {
            Err(PriceError::Currency(s.to_owned()))
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = PriceError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> Self {
        c.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount of money in a currency's minor unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    /// Amount in minor units (cents for USD).
    pub amount_minor: i64,
    /// The currency of the amount.
    pub currency: Currency,
}

impl Money {
    /// Builds an amount, refusing negative values.
    pub fn new(amount_minor: i64, currency: Currency) -> Result<Self, PriceError> {
        if amount_minor < 0 {
            return Err(PriceError::NegativeAmount(amount_minor));
        }
        Ok(Self {
            amount_minor,
            currency,
        })
    }

    /// True when nothing is charged.
    pub fn is_free(&self) -> bool {
        self.amount_minor == 0
    }
}

impl fmt::Display for Money {
    /// Formats as `12.50 USD` (or `1200 JPY` for zero-decimal currencies).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = self.currency.minor_units_per_major();
        if per == 1 {
            write!(f, "{} {}", self.amount_minor, self.currency)
        } else {
            write!(
                f,
                "{}.{:02} {}",
                self.amount_minor / per,
                self.amount_minor % per,
                self.currency
            )
        }
    }
}

/// How often a plan's fixed price is charged and its included calls renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BillingInterval {
    /// Every calendar month (the default).
    #[default]
    Month,
    /// Every year.
    Year,
}

impl BillingInterval {
    /// The lowercase name stored in the database and used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Month => "month",
            Self::Year => "year",
        }
    }
}

impl FromStr for BillingInterval {
    type Err = PriceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "month" => Ok(Self::Month),
            "year" => Ok(Self::Year),
            other => Err(PriceError::Interval(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_is_normalised_and_checked() {
        assert_eq!("eur".parse::<Currency>().unwrap().code(), "EUR");
        assert!("EURO".parse::<Currency>().is_err());
        assert!("U$D".parse::<Currency>().is_err());
    }

    #[test]
    fn money_formats_in_major_units() {
        let m = Money::new(1250, Currency::usd()).unwrap();
        assert_eq!(m.to_string(), "12.50 USD");
        let y = Money::new(1200, "JPY".parse().unwrap()).unwrap();
        assert_eq!(y.to_string(), "1200 JPY");
        assert!(Money::new(-1, Currency::usd()).is_err());
        assert!(!m.is_free());
    }

    #[test]
    fn interval_round_trips() {
        assert_eq!(
            "year".parse::<BillingInterval>().unwrap(),
            BillingInterval::Year
        );
        assert_eq!(BillingInterval::Month.as_str(), "month");
        assert!("weekly".parse::<BillingInterval>().is_err());
        let json = serde_json::to_string(&BillingInterval::Year).unwrap();
        assert_eq!(json, "\"year\"");
    }
}
