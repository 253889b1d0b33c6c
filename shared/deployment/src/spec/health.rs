//! A deployment's health checks and what is done about what they find:
//!
//! ```yaml
//! health_interval: 60s      # how often every machine and container is checked (default 60s)
//! repair: restart           # restart (default) | reprovision | report
//! max_unhealthy: "34%"      # a count (1) or a percent of the nodes (default "100%")
//! ```
//!
//! - `restart`: an exited container is started again, a missing one created again (a
//!   `deploy` job of the current generation, as a create runs).
//! - `reprovision`: as `restart`, and a machine gone at the provider is removed and
//!   created again (`provision_machine`, then `deploy`).
//! - `report`: the health is recorded (and is an event), nothing is touched.
//!
//! When more nodes are unhealthy than `max_unhealthy` allows, nothing is repaired and
//! the deployment becomes `degraded` (many failing at once is more likely a network
//! split or a provider outage than dead machines; Cluster API's MachineHealthCheck
//! short-circuits the same way). Percents are of the node count, rounded down.
//!
//! The fields are kept as written (strings, or a number for `max_unhealthy`) so that a
//! bad value is refused here, naming its field, rather than as a parse error.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{MAX_NODES, Spec, SpecError, invalid};

/// How often a deployment is checked when its spec does not say.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest and longest `health_interval` accepted.
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_secs(1);
pub const MAX_HEALTH_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// What a health check does about an unhealthy node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepairPolicy {
    /// Start an exited container again, create a missing one.
    #[default]
    Restart,
    /// As `Restart`, and remove and create again a machine gone at the provider.
    Reprovision,
    /// Record only.
    Report,
}

impl RepairPolicy {
    pub const ALL: [RepairPolicy; 3] = [
        RepairPolicy::Restart,
        RepairPolicy::Reprovision,
        RepairPolicy::Report,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RepairPolicy::Restart => "restart",
            RepairPolicy::Reprovision => "reprovision",
            RepairPolicy::Report => "report",
        }
    }

    pub fn parse(text: &str) -> Option<RepairPolicy> {
        RepairPolicy::ALL
            .into_iter()
            .find(|policy| policy.as_str() == text)
    }
}

impl fmt::Display for RepairPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `max_unhealthy` as written: a count, or text (`"34%"`, or a count as text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MaxUnhealthyValue {
    Count(i64),
    Text(String),
}

/// How many unhealthy nodes may be repaired at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxUnhealthy {
    Count(i64),
    Percent(i64),
}

impl Default for MaxUnhealthy {
    fn default() -> Self {
        MaxUnhealthy::Percent(100)
    }
}

impl MaxUnhealthy {
    /// Parses `3`, `"3"` or `"34%"`; the reason when it is none of them.
    pub fn parse(value: &MaxUnhealthyValue) -> Result<MaxUnhealthy, String> {
        let parsed = match value {
            MaxUnhealthyValue::Count(count) => MaxUnhealthy::Count(*count),
            MaxUnhealthyValue::Text(text) => {
                let text = text.trim();
                let number = |digits: &str| {
                    digits.parse::<i64>().map_err(|_| {
                        format!("{text:?} is not a count (like 1) or a percent (like \"34%\")")
                    })
                };
                match text.strip_suffix('%') {
                    Some(percent) => MaxUnhealthy::Percent(number(percent.trim())?),
                    None => MaxUnhealthy::Count(number(text)?),
                }
            }
        };
        match parsed {
            MaxUnhealthy::Count(count) if !(0..=MAX_NODES).contains(&count) => Err(format!(
                "a count must be between 0 and {MAX_NODES}, got {count}"
            )),
            MaxUnhealthy::Percent(percent) if !(0..=100).contains(&percent) => Err(format!(
                "a percent must be between 0% and 100%, got {percent}%"
            )),
            ok => Ok(ok),
        }
    }

    /// How many of `nodes` may be unhealthy and still be repaired: a percent rounds down.
    pub fn allowed(self, nodes: i64) -> i64 {
        match self {
            MaxUnhealthy::Count(count) => count,
            MaxUnhealthy::Percent(percent) => nodes * percent / 100,
        }
    }
}

impl fmt::Display for MaxUnhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxUnhealthy::Count(count) => write!(f, "{count}"),
            MaxUnhealthy::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

impl std::str::FromStr for MaxUnhealthy {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        MaxUnhealthy::parse(&MaxUnhealthyValue::Text(text.to_owned()))
    }
}

/// A spec's health settings, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    pub interval: Duration,
    pub repair: RepairPolicy,
    pub max_unhealthy: MaxUnhealthy,
}

impl Spec {
    /// The spec's health settings (defaults where it says nothing); each bad value is
    /// an error naming its field.
    pub fn health(&self) -> Result<HealthPolicy, SpecError> {
        let interval = match &self.health_interval {
            None => DEFAULT_HEALTH_INTERVAL,
            Some(text) => {
                let interval = lc_shared::config::parse_duration(text)
                    .map_err(|reason| invalid("health_interval", format!("{text:?}: {reason}")))?;
                if interval < MIN_HEALTH_INTERVAL || interval > MAX_HEALTH_INTERVAL {
                    return Err(invalid(
                        "health_interval",
                        format!("must be between 1s and 24h, got {text:?}"),
                    ));
                }
                interval
            }
        };
        let repair = match &self.repair {
            None => RepairPolicy::default(),
            Some(text) => RepairPolicy::parse(text).ok_or_else(|| {
                invalid(
                    "repair",
                    format!("unknown policy {text:?}: use restart, reprovision or report"),
                )
            })?,
        };
        let max_unhealthy = match &self.max_unhealthy {
            None => MaxUnhealthy::default(),
            Some(value) => {
                MaxUnhealthy::parse(value).map_err(|reason| invalid("max_unhealthy", reason))?
            }
        };
        Ok(HealthPolicy {
            interval,
            repair,
            max_unhealthy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_unhealthy_counts_and_percents() {
        let parse = |value: MaxUnhealthyValue| MaxUnhealthy::parse(&value);
        assert_eq!(
            parse(MaxUnhealthyValue::Count(1)),
            Ok(MaxUnhealthy::Count(1))
        );
        assert_eq!(
            parse(MaxUnhealthyValue::Text("34%".into())),
            Ok(MaxUnhealthy::Percent(34))
        );
        assert_eq!(
            parse(MaxUnhealthyValue::Text(" 2 ".into())),
            Ok(MaxUnhealthy::Count(2))
        );
        assert!(parse(MaxUnhealthyValue::Count(-1)).is_err());
        assert!(parse(MaxUnhealthyValue::Text("150%".into())).is_err());
        assert!(parse(MaxUnhealthyValue::Text("many".into())).is_err());
        assert!(parse(MaxUnhealthyValue::Text("-5%".into())).is_err());
        // Percents of the nodes round down (as Cluster API's maxUnhealthy does).
        assert_eq!(MaxUnhealthy::Percent(34).allowed(3), 1);
        assert_eq!(MaxUnhealthy::Percent(100).allowed(3), 3);
        assert_eq!(MaxUnhealthy::Percent(33).allowed(3), 0);
        assert_eq!(MaxUnhealthy::Count(1).allowed(3), 1);
        assert_eq!(MaxUnhealthy::Percent(34).to_string(), "34%");
    }

    #[test]
    fn policies_round_trip() {
        for policy in RepairPolicy::ALL {
            assert_eq!(RepairPolicy::parse(policy.as_str()), Some(policy));
        }
        assert_eq!(RepairPolicy::parse("rebuild"), None);
    }
}
