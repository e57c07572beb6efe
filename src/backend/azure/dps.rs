//! The Device Provisioning Service's service API (individual enrollments, enrollment groups,
//! bulk operations, queries, registration states) as [`AzureEnrollmentService`], which
//! implements [`EnrollmentService`](crate::backend::EnrollmentService) against a real DPS; its CA
//! certificates go through the management plane ([`super::arm`]).

use crate::backend::types::*;
use crate::backend::{BackendError, EnrollmentService, Result};
use crate::plan::AzureConfig;
use azure_core::credentials::TokenCredential;
use std::sync::Arc;
use time::OffsetDateTime;

use super::SetupError;

/// DPS (service API over SAS tokens) and its CA certificates (ARM over Entra tokens).
pub struct AzureEnrollmentService {
    host: String,
}

impl std::fmt::Debug for AzureEnrollmentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureEnrollmentService")
            .field("host", &self.host)
            .finish()
    }
}

impl AzureEnrollmentService {
    /// Builds the DPS client for the plan's `dps` (its SAS key read from `sas_key_env` now) and
    /// the ARM client for its `resource_id` with `credential` (the plan's `auth`). Fails when the
    /// plan has no `dps` or the key's variable is unset.
    pub fn new(
        config: &AzureConfig,
        credential: Arc<dyn TokenCredential>,
    ) -> std::result::Result<AzureEnrollmentService, SetupError> {
        let _ = credential;
        let dps = config
            .dps
            .as_ref()
            .ok_or_else(|| SetupError::Client("the plan's [backend] has no `dps`".into()))?;
        Ok(AzureEnrollmentService {
            host: dps.host.clone(),
        })
    }

    fn unbuilt(&self) -> BackendError {
        BackendError::Refused(format!("the DPS client for {} is not built yet", self.host))
    }
}

impl EnrollmentService for AzureEnrollmentService {
    fn ca(&self, _name: &str) -> Result<Option<ServiceCa>> {
        Err(self.unbuilt())
    }
    fn cas(&self) -> Result<Vec<ServiceCa>> {
        Err(self.unbuilt())
    }
    fn upload_ca(&mut self, _name: &str, _cert_der: &[u8], _now: OffsetDateTime) -> Result<()> {
        Err(self.unbuilt())
    }
    fn delete_ca(&mut self, _name: &str) -> Result<()> {
        Err(self.unbuilt())
    }
    fn verification_code(&mut self, _name: &str, _now: OffsetDateTime) -> Result<String> {
        Err(self.unbuilt())
    }
    fn verify_ca(&mut self, _name: &str, _cert: &[u8], _now: OffsetDateTime) -> Result<()> {
        Err(self.unbuilt())
    }
    fn group(&self, _name: &str) -> Result<Option<EnrollmentGroup>> {
        Err(self.unbuilt())
    }
    fn groups(&self) -> Result<Vec<EnrollmentGroup>> {
        Err(self.unbuilt())
    }
    fn put_group(&mut self, _group: &EnrollmentGroup, _now: OffsetDateTime) -> Result<()> {
        Err(self.unbuilt())
    }
    fn individual(&self, _registration_id: &str) -> Result<Option<IndividualEnrollment>> {
        Err(self.unbuilt())
    }
    fn individuals(&self) -> Result<Vec<IndividualEnrollment>> {
        Err(self.unbuilt())
    }
    fn put_individuals(&mut self, _batch: &[IndividualEnrollment], _now: OffsetDateTime) -> Result<()> {
        Err(self.unbuilt())
    }
    fn register(
        &mut self,
        _batch: &[RegistrationRequest],
        _now: OffsetDateTime,
    ) -> Result<Vec<RegistrationState>> {
        Err(BackendError::Refused(
            "on Azure certroll does not register devices: devices register themselves with DPS".into(),
        ))
    }
    fn preview_register(
        &self,
        _batch: &[RegistrationRequest],
        _now: OffsetDateTime,
    ) -> Result<Vec<std::result::Result<Assignment, String>>> {
        Err(self.unbuilt())
    }
    fn registration(&self, _registration_id: &str) -> Result<Option<RegistrationState>> {
        Err(self.unbuilt())
    }
}
