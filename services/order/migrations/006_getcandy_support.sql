-- VAT added on top of prices, per currency (GetCandy's GBP channel: 20%, truncated).
CREATE TABLE tax_rates (
    currency  text         PRIMARY KEY,
    rate      numeric(6,4) NOT NULL CHECK (rate >= 0)
);
-- Order references YYYY-MM-NNNN, numbered per month.
CREATE TABLE monthly_references (
    month  text    PRIMARY KEY,  -- YYYY-MM
    last   integer NOT NULL
);
ALTER TABLE order_view
    ADD COLUMN contact_phone  text,
    ADD COLUMN reference      text;
