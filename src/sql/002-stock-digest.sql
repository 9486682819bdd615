-- stock-apply's digest of the figures a vendor last sent for a row (its sku,
-- quantity, name, price_cents and extra fields): a re-sync skips the items
-- whose digest did not change, before they reach the database. Any other
-- change to those columns forgets the digest (NULL), so the next sync
-- rewrites that row from the vendor's figures.
ALTER TABLE vendor_stock ADD COLUMN digest bigint;

CREATE FUNCTION vendor_stock_forget_digest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.digest := NULL;
	RETURN NEW;
END $$;

-- Fires only for an update of the figures that leaves the digest as it was,
-- so neither stock-apply's own updates nor changes of `reserved` pay for it.
CREATE TRIGGER vendor_stock_forget_digest
	BEFORE UPDATE OF quantity, name, price_cents, extra ON vendor_stock
	FOR EACH ROW WHEN (NEW.digest IS NOT DISTINCT FROM OLD.digest)
	EXECUTE FUNCTION vendor_stock_forget_digest();
