ALTER TABLE order_view ADD COLUMN payments jsonb NOT NULL DEFAULT '[]';
