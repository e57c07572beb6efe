//! How a new device certificate reaches a device the services do not let certroll hold: the
//! `delivery`, `method` and `hook` settings of `[backend]` (the plan-wide default), of each
//! `[groups.NAME]` and of each `[enrollments.NAME]`, and `[backend] reprovision_method` and
//! `delivery_concurrency`.
//!
//! The local backend simulates its devices and installs certificates on them directly, so it
//! reads none of this; a plan keeps its settings when it switches between `local` (rehearsal)
//! and `azure`. `backend::azure::delivery` carries the channels out.

use super::HookConfig;
use std::collections::BTreeMap;

/// The direct method a device is asked to fetch a certificate with when the plan names none.
pub const DEFAULT_DELIVERY_METHOD: &str = "certroll-deliver";
/// The direct method that makes a device register again when the plan names none (the name
/// `certroll serve`'s simulated devices answer).
pub const DEFAULT_REPROVISION_METHOD: &str = "reprovision";
/// Deliveries (hooks, direct methods) run at once when the plan does not say: enough to keep a
/// fleet's hooks from waiting on each other, few enough for a small host and a device fleet's
/// own back end.
pub const DEFAULT_DELIVERY_CONCURRENCY: usize = 8;
/// Most deliveries a plan may run at once (`[backend] delivery_concurrency`).
pub const MAX_DELIVERY_CONCURRENCY: i64 = 256;

/// One delivery channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// `delivery = "direct-method"`: an IoT Hub direct method `method` tells the device which
    /// vault certificate name and version to fetch.
    DirectMethod {
        /// The method name the device answers.
        method: String,
    },
    /// `delivery = "hook"`: a command gets JSON on stdin naming the device and a PFX file.
    Hook(HookConfig),
    /// `delivery = "none"`: the certificate waits for the operator (`certroll export`).
    None,
}

impl Delivery {
    /// The plan's spelling.
    pub fn kind(&self) -> &'static str {
        match self {
            Delivery::DirectMethod { .. } => "direct-method",
            Delivery::Hook(_) => "hook",
            Delivery::None => "none",
        }
    }
}

/// Every delivery setting of the plan, resolved: each group and enrollment that names its own
/// channel, and the default for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryPlan {
    /// `[backend] delivery` (default `none`: nothing leaves certroll unasked).
    pub default: Delivery,
    /// Groups that name their own channel.
    pub groups: BTreeMap<String, Delivery>,
    /// Individual enrollments that name their own channel.
    pub enrollments: BTreeMap<String, Delivery>,
    /// The direct method `reprovision` (and a delivery) invokes to make a device register again.
    pub reprovision_method: String,
    /// `[backend] delivery_concurrency`: how many hooks run, and how many direct methods (a
    /// delivery's or a request to register again) are awaited, at once (1 to
    /// [`MAX_DELIVERY_CONCURRENCY`]; default [`DEFAULT_DELIVERY_CONCURRENCY`]).
    pub concurrency: usize,
}

impl Default for DeliveryPlan {
    fn default() -> Self {
        DeliveryPlan {
            default: Delivery::None,
            groups: BTreeMap::new(),
            enrollments: BTreeMap::new(),
            reprovision_method: DEFAULT_REPROVISION_METHOD.into(),
            concurrency: DEFAULT_DELIVERY_CONCURRENCY,
        }
    }
}

impl DeliveryPlan {
    /// The channel of a device of `group` or of individual enrollment `enrollment`.
    pub fn channel(&self, group: Option<&str>, enrollment: Option<&str>) -> &Delivery {
        group
            .and_then(|g| self.groups.get(g))
            .or_else(|| enrollment.and_then(|e| self.enrollments.get(e)))
            .unwrap_or(&self.default)
    }
}
