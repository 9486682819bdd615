-- Vendor stock and orders (SPEC §6); reservations live beside the stock they hold.
CREATE TABLE vendor_stock (
	vendor      text   NOT NULL,
	sku         text   NOT NULL,
	quantity    bigint NOT NULL CHECK (quantity >= 0),  -- the vendor's last word
	reserved    bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
	name        text,
	price_cents bigint,
	extra       jsonb,                                  -- other item fields, passed through
	fetched_at  timestamptz,
	updated_at  timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (sku, vendor)
);

CREATE TABLE orders (
	id              bigserial   PRIMARY KEY,
	sku             text        NOT NULL,
	quantity        bigint      NOT NULL CHECK (quantity > 0),
	vendor          text        NOT NULL,
	status          text        NOT NULL DEFAULT 'pending'
	                CHECK (status IN ('pending', 'success', 'failed')),
	idempotency_key text        UNIQUE,
	attempts        integer     NOT NULL DEFAULT 0,
	reason          text,
	-- A success the vendor's stock figures may not show yet: still held in
	-- vendor_stock.reserved until a snapshot fetched after fulfilled_at settles it.
	fulfilled_at    timestamptz,
	settled         boolean     NOT NULL DEFAULT false,
	created_at      timestamptz NOT NULL DEFAULT now(),
	updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_pending ON orders (updated_at) WHERE status = 'pending';
CREATE INDEX orders_unsettled ON orders (vendor, fulfilled_at)
	WHERE status = 'success' AND NOT settled;

-- What order-place would still sell: per vendor, quantity less what is held.
CREATE VIEW available_stock AS
	SELECT sku, sum(greatest(quantity - reserved, 0))::bigint AS available
	FROM vendor_stock
	GROUP BY sku;
