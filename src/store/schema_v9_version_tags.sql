-- certroll store: tags live on versions, as Key Vault keeps them (issue 12). A certificate's
-- tags are its newest version's; `vault_certificates.tags` and `vault_deleted_certificates.tags`
-- are no longer read. Tags set on a certificate before this version move onto its newest
-- version where that version has none of its own, so nothing a user set disappears.
UPDATE vault_versions
SET tags = (SELECT c.tags FROM vault_certificates c WHERE c.name = vault_versions.name)
WHERE tags = '{}'
  AND seq = (SELECT MAX(v.seq) FROM vault_versions v WHERE v.name = vault_versions.name)
  AND (SELECT c.tags FROM vault_certificates c WHERE c.name = vault_versions.name) <> '{}';
UPDATE vault_deleted_versions
SET tags = (SELECT d.tags FROM vault_deleted_certificates d WHERE d.name = vault_deleted_versions.name)
WHERE tags = '{}'
  AND seq = (SELECT MAX(v.seq) FROM vault_deleted_versions v WHERE v.name = vault_deleted_versions.name)
  AND (SELECT d.tags FROM vault_deleted_certificates d WHERE d.name = vault_deleted_versions.name) <> '{}';
