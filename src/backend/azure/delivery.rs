//! Delivery channels: how a new device certificate reaches a device certroll does not hold
//! (`delivery` in the plan, see [`crate::plan::DeliveryPlan`]).
//!
//! - `hook`: a command (argv, no shell) gets one JSON document on stdin naming the device, its
//!   hub, the vault certificate name and version, and the path of a PFX holding the certificate,
//!   its chain (root left out) and its key. The PFX is written 0600 in a private (0700) temporary
//!   folder and removed when the command ends, whatever it did; its password is empty (the file's
//!   permissions protect it, and a password beside it in the JSON would add nothing). The key
//!   itself is never in the JSON. A key that is not exportable is not put in a file: `pfx_path`
//!   is null and the device must fetch the version from the vault. Exit 0 within the timeout is
//!   a delivery; anything else fails it, with the command's last stderr line.
//! - `direct-method`: IoT Hub direct method `method` with payload `{"vault_url", "name",
//!   "version"}`: the device fetches that version from the vault itself. Its status 200 is a
//!   delivery; any other status, or IoT Hub's `DeviceNotFound`/`DeviceNotOnline`, fails it with the
//!   device's or the hub's answer.
//! - `none`: nothing leaves certroll; the certificate waits for the operator
//!   (`certroll export device:ID`).
//!
//! The environment of a hook is stripped of every secret the plan names (SAS keys, the token,
//! the client secret, the store key).

use crate::backend::types::DirectMethodCall;
use crate::plan::{AzureAuth, AzureConfig, HookConfig};
use serde::Serialize;
use zeroize::Zeroizing;

/// For tests only: `CERTROLL_FAULT_BEFORE_DELIVERY=N` aborts the process (like `kill -9`) right
/// after the N-th unit with deliveries owed committed, before any of them runs, so a kill
/// between a unit's commit and its deliveries can be tested.
pub const FAULT_BEFORE_DELIVERY_ENV: &str = "CERTROLL_FAULT_BEFORE_DELIVERY";

/// The fault switch of [`FAULT_BEFORE_DELIVERY_ENV`] (tests only).
pub fn fault_before_delivery() {
    static UNITS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let Some(limit) = std::env::var(FAULT_BEFORE_DELIVERY_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return;
    };
    if UNITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == limit {
        eprintln!(
            "certroll: {FAULT_BEFORE_DELIVERY_ENV}={limit}: aborting after a commit, before its deliveries (fault injection)"
        );
        std::process::abort();
    }
}

/// Seconds IoT Hub waits for a device's answer to a delivery or reprovision method.
pub const METHOD_RESPONSE_TIMEOUT_SECS: u32 = 30;

/// One certificate to hand to one device.
#[derive(Debug, Clone)]
pub struct Parcel {
    /// The device (= registration id).
    pub device_id: String,
    /// The hub the device is assigned to (or will be, per the plan).
    pub hub: String,
    /// The vault: `https://NAME.vault.azure.net`.
    pub vault_url: String,
    /// The vault certificate name (`dev-ID`).
    pub name: String,
    /// The version to install.
    pub version: String,
    /// The SHA-1 thumbprint of the certificate (upper-case hex), for the device to check.
    pub thumbprint: String,
}

/// What a hook reads on stdin.
#[derive(Serialize)]
struct HookInput<'a> {
    event: &'static str,
    device_id: &'a str,
    registration_id: &'a str,
    hub: &'a str,
    vault: VaultRef<'a>,
    thumbprint: &'a str,
    /// The PFX with the certificate, chain and key; null when the key is not exportable.
    pfx_path: Option<String>,
    /// Always empty: the file is 0600 in a 0700 folder.
    pfx_password: &'static str,
}

#[derive(Serialize)]
struct VaultRef<'a> {
    url: &'a str,
    name: &'a str,
    version: &'a str,
}

/// The direct method that tells a device which version to fetch.
pub fn method_call(method: &str, parcel: &Parcel) -> DirectMethodCall {
    DirectMethodCall {
        method_name: method.to_string(),
        payload: serde_json::json!({
            "vault_url": parcel.vault_url,
            "name": parcel.name,
            "version": parcel.version,
            "thumbprint": parcel.thumbprint,
        }),
        response_timeout_secs: METHOD_RESPONSE_TIMEOUT_SECS,
    }
}

/// The direct method that makes a device register again with what it holds.
pub fn reprovision_call(method: &str) -> DirectMethodCall {
    DirectMethodCall {
        method_name: method.to_string(),
        payload: serde_json::Value::Null,
        response_timeout_secs: METHOD_RESPONSE_TIMEOUT_SECS,
    }
}

/// The environment variables a hook must not see: every secret the plan names.
pub fn secret_vars(config: &AzureConfig) -> Vec<String> {
    let mut vars = vec![
        "CERTROLL_STORE_KEY".to_string(),
        "CERTROLL_SMTP_PASSWORD".to_string(),
    ];
    match &config.auth {
        AzureAuth::TokenEnv { var } => vars.push(var.clone()),
        AzureAuth::ClientSecret { secret_env, .. } => vars.push(secret_env.clone()),
        _ => {}
    }
    if let Some(dps) = &config.dps {
        vars.push(dps.sas_key_env.clone());
    }
    vars.extend(config.hubs.values().map(|h| h.sas_key_env.clone()));
    vars
}

/// The folder of this user's PFX folders, `$TMPDIR/certroll-delivery-UID` (0700), with the
/// folders a killed certroll left behind removed ([`sweep_parcels`]) on this process's first
/// delivery: later ones only make sure the folder is still this user's.
fn parcels_root() -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let root = std::env::temp_dir().join(format!("certroll-delivery-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // Another user's folder (or a link) by that name is not trusted with a key.
    let meta = std::fs::symlink_metadata(&root)?;
    if !meta.is_dir() || meta.uid() != uid {
        return Err(std::io::Error::other(format!(
            "{} is not a folder of this user",
            root.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))?;
    }
    // A dead PID's folder stays dead: what a run left is gone after its first look, and a
    // fleet's deliveries need not list the folder each (they run `delivery_concurrency` at once).
    static SWEPT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if SWEPT.get().is_none() {
        sweep_parcels(&root)?;
        let _ = SWEPT.set(());
    }
    Ok(root)
}

/// Removes the PFX folders in `root` whose process is gone and whose hook has ended: each is
/// named after the process that made it (`PID-random`), and one whose process is gone holds a
/// device's key nobody will remove otherwise (trial az8 F6: `kill -9` during hooks left PFX files
/// for good). A hook still running after its certroll was killed keeps its folder ([`in_use`]).
fn sweep_parcels(root: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root)?.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok());
        if pid.is_some_and(|p| p > 0 && !process_alive(p)) && !in_use(&entry.path()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// The file in each PFX folder whose lock says the folder is in use: locked by the certroll
/// that made the folder and held, through [`crate::notify::hook::run_holding`], by its hook.
const IN_USE: &str = ".in-use";

/// Whether a hook may still read the PFX in `folder`: its [`IN_USE`] lock is held. A hook
/// outlives a killed certroll (nothing kills it) and may read its PFX late; only a lock it holds
/// says so, whatever its process tree. A folder without the file (made before it, or by a run
/// killed before its hook started) is not in use.
fn in_use(folder: &std::path::Path) -> bool {
    match std::fs::File::open(folder.join(IN_USE)) {
        Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// Whether process `pid` exists (signal 0: checks, sends nothing; EPERM means it exists under
/// another user).
fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Runs a delivery hook for `parcel`. `pfx` is the PFX (empty password) when the key may leave
/// the vault. The PFX's folder is removed before this returns.
pub fn run_hook(
    cfg: &HookConfig,
    parcel: &Parcel,
    pfx: Option<&Zeroizing<Vec<u8>>>,
    secret_vars: &[String],
) -> Result<(), String> {
    let root = parcels_root().map_err(|e| format!("cannot make a private folder for the PFX: {e}"))?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("{}-", std::process::id()))
        .tempdir_in(&root)
        .map_err(|e| format!("cannot make a private folder for the PFX: {e}"))?;
    {
        // Owner only, before the PFX goes in (the folder is empty until then).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make the PFX folder private: {e}"))?;
    }
    // Locked before the PFX goes in: from here until the hook and all it started have ended, the
    // folder is in use, also when this process is killed (`sweep_parcels`).
    let in_use = std::fs::File::create(dir.path().join(IN_USE))
        .and_then(|f| f.lock().map(|()| f))
        .map_err(|e| format!("cannot lock the PFX folder: {e}"))?;
    let pfx_path = match pfx {
        Some(bytes) => {
            let path = dir.path().join(format!("{}.pfx", parcel.device_id));
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = crate::fsutil::create_private(&path)?;
                f.write_all(bytes)?;
                f.sync_all()
            };
            write().map_err(|e| format!("cannot write the PFX for `{}`: {e}", parcel.device_id))?;
            Some(path.to_string_lossy().into_owned())
        }
        None => None,
    };
    let input = HookInput {
        event: "certroll.delivery",
        device_id: &parcel.device_id,
        registration_id: &parcel.device_id,
        hub: &parcel.hub,
        vault: VaultRef {
            url: &parcel.vault_url,
            name: &parcel.name,
            version: &parcel.version,
        },
        thumbprint: &parcel.thumbprint,
        pfx_path,
        pfx_password: "",
    };
    let json = serde_json::to_vec(&input).map_err(|e| e.to_string())?;
    let out = crate::notify::hook::run_holding(cfg, json, secret_vars, Some(&in_use));
    // The folder and the PFX go now, whatever the hook did (and again on drop if this fails).
    let removed = dir.close();
    out?;
    removed.map_err(|e| format!("cannot remove the delivery folder: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PID of a process that has ended (and been reaped): a killed certroll's, as a PFX
    /// folder left behind names it.
    fn dead_pid() -> u32 {
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        let pid = dead.id();
        dead.wait().unwrap();
        pid
    }

    #[test]
    fn a_pfx_folder_a_killed_run_left_is_removed_by_the_next_and_a_live_ones_is_kept() {
        let dead_pid = dead_pid();
        let root = parcels_root().unwrap();
        let left = root.join(format!("{dead_pid}-leftover"));
        std::fs::create_dir_all(&left).unwrap();
        std::fs::write(left.join("gw-1.pfx"), b"key").unwrap();
        let live = root.join(format!("{}-live", std::process::id()));
        std::fs::create_dir_all(&live).unwrap();
        // This process swept already (the first delivery of a test here): the next process's
        // first delivery is a fresh sweep.
        sweep_parcels(&root).unwrap();
        assert_eq!(parcels_root().unwrap(), root);
        assert!(!left.exists(), "the dead run's PFX folder is gone");
        assert!(live.exists(), "a running process's folder stays");
        std::fs::remove_dir_all(&live).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    /// A hook that outlives its certroll (killed) may still read its PFX: the next run's sweep
    /// keeps the folder while the hook, or anything it started, runs, and removes it after.
    /// Before, the sweep went by the certroll's PID alone, and another run's first delivery
    /// removed the PFX from under a slow hook (`azure_settle`'s killed run, failing at random).
    #[test]
    fn a_folder_whose_hook_outlives_its_killed_run_is_kept_until_the_hook_ends() {
        let dead_pid = dead_pid();
        let root = parcels_root().unwrap();
        let folder = root.join(format!("{dead_pid}-hook-still-running"));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("gw-1.pfx"), b"key").unwrap();
        let lock = std::fs::File::create(folder.join(IN_USE)).unwrap();
        lock.lock().unwrap();
        // The hook leaves a process behind that holds what it was given for 3 s, as a hook
        // killed with its certroll goes on.
        let cfg = HookConfig {
            command: vec!["sh".into(), "-c".into(), "sleep 3 >/dev/null 2>&1 &".into()],
            timeout_secs: 20,
        };
        crate::notify::hook::run_holding(&cfg, b"{}".to_vec(), &[], Some(&lock)).unwrap();
        // The certroll that made the folder is gone.
        drop(lock);
        sweep_parcels(&root).unwrap();
        assert!(
            folder.join("gw-1.pfx").exists(),
            "kept while the hook's process runs"
        );
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while folder.exists() {
            assert!(
                std::time::Instant::now() < until,
                "the folder stayed after the hook's process ended"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
            sweep_parcels(&root).unwrap();
        }
    }

    fn parcel() -> Parcel {
        Parcel {
            device_id: "gw-1".into(),
            hub: "hub".into(),
            vault_url: "https://v.vault.azure.net".into(),
            name: "dev-gw-1".into(),
            version: "abc".into(),
            thumbprint: "AB".into(),
        }
    }

    /// The hook gets the JSON, the PFX is 0600 in a 0700 folder while it runs, and both are
    /// gone afterwards; the secrets the plan names are not in its environment.
    #[test]
    fn a_hook_gets_json_and_a_private_pfx_that_is_removed_after() {
        let out = tempfile::tempdir().unwrap();
        let seen = out.path().join("seen");
        let script = format!(
            "cat > {seen}.json; p=$(sed 's/.*\"pfx_path\":\"\\([^\"]*\\)\".*/\\1/' {seen}.json); \
             stat -c %a \"$p\" > {seen}.mode; stat -c %a \"$(dirname \"$p\")\" > {seen}.dirmode; \
             echo \"$p\" > {seen}.path; echo \"${{AZS_SECRET:-absent}}\" > {seen}.env",
            seen = seen.display()
        );
        let cfg = HookConfig {
            command: vec!["sh".into(), "-c".into(), script],
            timeout_secs: 20,
        };
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("AZS_SECRET", "s3cret") };
        let pfx = Zeroizing::new(b"not really a pfx".to_vec());
        run_hook(&cfg, &parcel(), Some(&pfx), &["AZS_SECRET".into()]).unwrap();
        let read = |ext: &str| std::fs::read_to_string(seen.with_extension(ext)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&read("json")).unwrap();
        assert_eq!(json["device_id"], "gw-1");
        assert_eq!(json["vault"]["version"], "abc");
        assert!(
            !read("json").contains("not really"),
            "the key material is never in the JSON"
        );
        assert_eq!(read("mode").trim(), "600");
        assert_eq!(read("dirmode").trim(), "700");
        assert_eq!(read("env").trim(), "absent");
        let path = std::path::PathBuf::from(read("path").trim());
        assert!(
            !path.exists() && !path.parent().unwrap().exists(),
            "removed after"
        );
    }

    #[test]
    fn a_failing_hook_fails_the_delivery_with_its_message_and_still_removes_the_pfx() {
        let out = tempfile::tempdir().unwrap();
        let seen = out.path().join("path");
        let script = format!(
            "sed 's/.*\"pfx_path\":\"\\([^\"]*\\)\".*/\\1/' > {}; echo 'device unreachable' >&2; exit 3",
            seen.display()
        );
        let cfg = HookConfig {
            command: vec!["sh".into(), "-c".into(), script],
            timeout_secs: 20,
        };
        let pfx = Zeroizing::new(b"x".to_vec());
        let err = run_hook(&cfg, &parcel(), Some(&pfx), &[]).unwrap_err();
        assert!(err.contains("device unreachable"), "{err}");
        let path = std::fs::read_to_string(&seen).unwrap();
        assert!(!std::path::Path::new(path.trim()).exists());
    }
}
