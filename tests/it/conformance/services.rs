//! The enrollment service and hub registry behaviours, written once and run on the local store
//! (`local.rs`) and on DPS, ARM and IoT Hub as `certroll serve` answers them (`azure.rs`).

use super::{Made, now, self_signed};
use certroll::backend::types::*;
use certroll::backend::{BackendError, EnrollmentService, HubRegistry};

/// A certificate with this CN signed by `issuer` (its cert and PKCS#8 key), valid for a month.
pub fn signed_by(cn: &str, issuer: &Made, ca: bool) -> Made {
    let issuer_key = rcgen::KeyPair::try_from(issuer.key_pkcs8.as_slice()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_der(&issuer.cert_der.clone().into(), issuer_key).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let t = now();
    params.not_before = t - time::Duration::hours(1);
    params.not_after = t + time::Duration::days(30);
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    let cert = params.signed_by(&key, &issuer).unwrap();
    Made {
        cert_der: cert.der().to_vec(),
        key_pkcs8: key.serialize_der(),
    }
}

pub fn enrollment(id: &str, primary: &Made, reprovision: &str, hub: &str) -> IndividualEnrollment {
    IndividualEnrollment {
        registration_id: id.into(),
        primary: Some(primary.cert_der.clone()),
        secondary: None,
        status: Status::Enabled,
        reprovision: reprovision.into(),
        hub: hub.into(),
        foreign: Vec::new(),
        take_back: false,
    }
}

fn request(id: &str, chain: &[&Made]) -> RegistrationRequest {
    RegistrationRequest {
        registration_id: id.into(),
        chain: chain.iter().map(|m| m.cert_der.clone()).collect(),
    }
}

/// Every enrollment-service behaviour, in order, on a fresh service whose hub `hub` exists.
pub fn enrollment_suite(s: &mut dyn EnrollmentService, hub: &str) {
    let t = now();
    assert!(s.individual("conf-absent").unwrap().is_none());
    assert!(s.group("conf-absent").unwrap().is_none());
    assert!(s.registration("conf-absent").unwrap().is_none());
    assert!(s.ca("conf-absent").unwrap().is_none());

    // Individual enrollments: a batch, read back as written.
    let (a, a2, b) = (
        self_signed("conf-dev-a", 30, false),
        self_signed("conf-dev-a", 60, false),
        self_signed("conf-dev-b", 30, false),
    );
    let ea = enrollment("conf-dev-a", &a, "migrate", hub);
    let eb = enrollment("conf-dev-b", &b, "reset", hub);
    s.put_individuals(&[ea.clone(), eb.clone()], t).unwrap();
    let got = s.individual("conf-dev-a").unwrap().expect("written");
    assert_eq!(got.primary, ea.primary);
    assert_eq!(got.secondary, None);
    assert_eq!(
        (got.status, got.reprovision.as_str(), got.hub.as_str()),
        (Status::Enabled, "migrate", hub)
    );
    assert_eq!(s.individual("conf-dev-b").unwrap().unwrap().reprovision, "reset");

    // An update replaces what certroll manages.
    let mut ea2 = ea.clone();
    ea2.secondary = Some(a2.cert_der.clone());
    ea2.status = Status::Disabled;
    s.put_individuals(&[ea2.clone()], t).unwrap();
    let got = s.individual("conf-dev-a").unwrap().unwrap();
    assert_eq!(
        (got.primary, got.secondary, got.status),
        (ea2.primary.clone(), ea2.secondary.clone(), Status::Disabled)
    );

    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let many = s
        .individual_many(&ids(&["conf-dev-b", "conf-absent", "conf-dev-a"]))
        .unwrap();
    let many: Vec<Option<String>> = many.into_iter().map(|e| e.map(|e| e.registration_id)).collect();
    assert_eq!(
        many,
        vec![Some("conf-dev-b".into()), None, Some("conf-dev-a".into())]
    );
    let listed: Vec<String> = s
        .individuals()
        .unwrap()
        .into_iter()
        .map(|e| e.registration_id)
        .collect();
    assert_eq!(listed, ids(&["conf-dev-a", "conf-dev-b"]));

    // CA certificates: uploaded unverified, verified by proof of possession.
    let ca = self_signed("conf-ca", 3650, true);
    s.upload_ca("conf-ca", &ca.cert_der, t).unwrap();
    let got = s.ca("conf-ca").unwrap().expect("uploaded");
    assert!(!got.verified);
    assert_eq!(got.cert_der, ca.cert_der);
    assert!(
        got.thumbprint
            .eq_ignore_ascii_case(&certroll::pki::sha1_thumbprint(&ca.cert_der))
    );
    let code = s.verification_code("conf-ca", t).unwrap();
    let impostor = self_signed("conf-impostor", 30, true);
    assert!(
        s.verify_ca("conf-ca", &signed_by(&code, &impostor, false).cert_der, t)
            .is_err(),
        "a verification certificate not signed by the CA's key is refused"
    );
    let code = s.verification_code("conf-ca", t).unwrap();
    s.verify_ca("conf-ca", &signed_by(&code, &ca, false).cert_der, t)
        .unwrap();
    assert!(s.ca("conf-ca").unwrap().unwrap().verified);
    assert!(s.cas().unwrap().iter().any(|c| c.name == "conf-ca" && c.verified));

    // Groups: one with a signing certificate (an intermediate under the verified CA, as DPS
    // requires), one pointing at the verified CA.
    let signer = signed_by("conf-signer", &ca, true);
    let g1 = EnrollmentGroup {
        name: "conf-grp-sign".into(),
        primary: Some(Slot {
            cert_der: signer.cert_der.clone(),
            ca_reference: None,
        }),
        secondary: None,
        status: Status::Enabled,
        reprovision: "never".into(),
        hub: hub.into(),
        foreign: Vec::new(),
        take_back: false,
    };
    s.put_group(&g1, t).unwrap();
    let got = s.group("conf-grp-sign").unwrap().expect("written");
    assert_eq!(got.primary, g1.primary);
    assert_eq!((got.reprovision.as_str(), got.hub.as_str()), ("never", hub));
    let mut g1b = g1.clone();
    g1b.secondary = Some(Slot {
        cert_der: ca.cert_der.clone(),
        ca_reference: None,
    });
    s.put_group(&g1b, t).unwrap();
    assert_eq!(
        s.group("conf-grp-sign").unwrap().unwrap().secondary,
        g1b.secondary
    );
    let g2 = EnrollmentGroup {
        name: "conf-grp-ref".into(),
        primary: Some(Slot {
            cert_der: ca.cert_der.clone(),
            ca_reference: Some("conf-ca".into()),
        }),
        ..g1.clone()
    };
    s.put_group(&g2, t).unwrap();
    let got = s.group("conf-grp-ref").unwrap().unwrap();
    assert_eq!(got.primary, g2.primary);
    let names: Vec<String> = s.groups().unwrap().into_iter().map(|g| g.name).collect();
    assert_eq!(names, ids(&["conf-grp-ref", "conf-grp-sign"]));

    // A group whose signing certificate is not verified and chains to no verified CA accepts
    // nobody, as in DPS (issue 10 item 10).
    let stray = self_signed("conf-stray-signer", 3650, true);
    s.put_group(
        &EnrollmentGroup {
            name: "conf-grp-stray".into(),
            primary: Some(Slot {
                cert_der: stray.cert_der.clone(),
                ca_reference: None,
            }),
            ..g1.clone()
        },
        t,
    )
    .unwrap();

    // What a registration would decide, from what the service holds.
    let grouped = signed_by("conf-dev-g", &signer, false);
    let strayed = signed_by("conf-dev-s", &stray, false);
    let unknown = self_signed("conf-dev-u", 30, false);
    let preview = s
        .preview_register(
            &[
                request("conf-dev-b", &[&b]),
                request("conf-dev-a", &[&a]),
                request("conf-dev-g", &[&grouped]),
                request("conf-dev-u", &[&unknown]),
                request("conf-dev-s", &[&strayed]),
            ],
            t,
        )
        .unwrap();
    assert_eq!(
        preview[0],
        Ok(Assignment {
            hub: hub.into(),
            reprovision: "reset".into()
        })
    );
    assert!(
        preview[1].is_err(),
        "a disabled enrollment refuses: {:?}",
        preview[1]
    );
    assert_eq!(
        preview[2],
        Ok(Assignment {
            hub: hub.into(),
            reprovision: "never".into()
        })
    );
    assert!(
        preview[3].is_err(),
        "no enrollment accepts an unknown certificate"
    );
    assert!(
        preview[4]
            .as_ref()
            .is_err_and(|why| why.contains("conf-grp-stray") && why.contains("not verified")),
        "a group whose signing certificate reaches no verified CA accepts nobody: {:?}",
        preview[4]
    );

    // Deleting a CA certificate; a second delete changes nothing.
    s.delete_ca("conf-ca").unwrap();
    assert!(s.ca("conf-ca").unwrap().is_none());
    s.delete_ca("conf-ca").unwrap();
}

/// Every hub-registry behaviour, on a registry where `ids` have self-signed identities in `hub`
/// whose primary thumbprints are `thumbprints` (and no device is connected).
pub fn hub_suite(h: &mut dyn HubRegistry, hub: &str, ids: [&str; 2], thumbprints: [&str; 2]) {
    let t = now();
    let first = h.identity(hub, ids[0]).unwrap().expect("created by the caller");
    assert_eq!(first.status, Status::Enabled);
    assert_eq!(first.auth_type, "selfSigned");
    assert!(
        first
            .primary_thumbprint
            .as_deref()
            .unwrap()
            .eq_ignore_ascii_case(thumbprints[0])
    );
    assert!(h.identity(hub, "conf-absent").unwrap().is_none());

    // One update, then a batch.
    let new_tp = certroll::pki::sha1_thumbprint(&self_signed("conf-next", 30, false).cert_der);
    let mut updated = first.clone();
    updated.secondary_thumbprint = Some(new_tp.clone());
    h.update_identity(&updated, t).unwrap();
    let got = h.identity(hub, ids[0]).unwrap().unwrap();
    assert!(
        got.secondary_thumbprint
            .as_deref()
            .unwrap()
            .eq_ignore_ascii_case(&new_tp)
    );
    assert!(
        got.primary_thumbprint
            .as_deref()
            .unwrap()
            .eq_ignore_ascii_case(thumbprints[0])
    );

    let mut batch = Vec::new();
    for id in ids {
        let mut i = h.identity(hub, id).unwrap().unwrap();
        i.status = Status::Disabled;
        batch.push(i);
    }
    h.update_identities(&batch, t).unwrap();
    let wanted: Vec<(String, String)> = [ids[1], "conf-absent", ids[0]]
        .iter()
        .map(|id| (hub.to_string(), id.to_string()))
        .collect();
    let many = h.identity_many(&wanted).unwrap();
    assert_eq!(many[0].as_ref().unwrap().status, Status::Disabled);
    assert!(many[1].is_none());
    assert_eq!(many[2].as_ref().unwrap().status, Status::Disabled);
    assert!(
        many[2].as_ref().unwrap().secondary_thumbprint.is_some(),
        "the batch kept the earlier update"
    );

    let mut absent = first.clone();
    absent.device_id = "conf-absent".into();
    assert!(matches!(
        h.update_identity(&absent, t),
        Err(BackendError::NotFound(_))
    ));

    // Direct methods: IoT Hub's own codes for an unknown and for an unconnected device.
    let call = DirectMethodCall {
        method_name: "reprovision".into(),
        payload: serde_json::json!({"reason": "conformance"}),
        response_timeout_secs: 30,
    };
    for (id, expected) in [("conf-absent", "DeviceNotFound"), (ids[0], "DeviceNotOnline")] {
        match h.invoke_method(hub, id, &call, t) {
            Err(BackendError::Remote {
                status: Some(404),
                code,
                ..
            }) => assert_eq!(code, expected, "{id}"),
            other => panic!("{id}: expected {expected}, got {other:?}"),
        }
    }

    // Delete; a second delete changes nothing.
    h.delete_identity(hub, ids[1]).unwrap();
    assert!(h.identity(hub, ids[1]).unwrap().is_none());
    h.delete_identity(hub, ids[1]).unwrap();
    assert!(h.identity(hub, ids[0]).unwrap().is_some());
}
