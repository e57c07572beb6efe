-- v17: the thumbprint indexes of individual enrollments hold the disabled ones only. Their one
-- reader asks which disabled enrollment holds a certificate (DPS refuses such a device even
-- through a group). Holding every enrollment, the indexes took a random page per rolled
-- certificate: a group commit of 400 rolled enrollments wrote most of the secondary index's
-- pages to the WAL, and at 100,000 enrollments nearly one page per enrollment. Partial, a roll
-- of enabled enrollments touches none of them, and the check for any disabled enrollment is a
-- look at an index that is usually empty instead of a scan of the table.
DROP INDEX IF EXISTS individual_by_primary;
DROP INDEX IF EXISTS individual_by_secondary;
CREATE INDEX IF NOT EXISTS individual_disabled_by_primary
    ON individual_enrollments(primary_thumbprint) WHERE status = 'disabled';
CREATE INDEX IF NOT EXISTS individual_disabled_by_secondary
    ON individual_enrollments(secondary_thumbprint) WHERE status = 'disabled';
