-- A stable handle per method, as GetCandy's payment types have ("card", "offline").
ALTER TABLE payment_methods ADD COLUMN handle text;
