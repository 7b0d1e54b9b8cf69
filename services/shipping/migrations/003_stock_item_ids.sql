-- Solidus shows a variant's stock items with their own ids.
ALTER TABLE stock_items ADD COLUMN id serial UNIQUE;
