-- certroll store: one CRL per CA version. A revoked certificate is listed on the CRL of the CA
-- version that signed it (older entries, without a version, are listed on every version's), and
-- the CRL number counts CRLs issued, so no two CRLs of a CA share a number.
ALTER TABLE crl_entries ADD COLUMN issuer_version TEXT;
